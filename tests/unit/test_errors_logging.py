"""herd.platform.errors (one hierarchy) and herd.platform.logging (JSON lines with context)."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from herd.platform import errors
from herd.platform.errors import ConfigError, HerdError
from herd.registry import errors as registry_errors
from herd.supervisors import errors as supervisor_errors

REPO = Path(__file__).resolve().parents[2]


def _herd_exceptions() -> list[type[BaseException]]:
    return [obj for module in (errors, registry_errors, supervisor_errors)
            for _, obj in inspect.getmembers(module, inspect.isclass)
            if issubclass(obj, BaseException) and obj.__module__ == module.__name__]


def test_there_are_herd_exceptions() -> None:
    assert len(_herd_exceptions()) > 5


@pytest.mark.parametrize("exc", _herd_exceptions(), ids=lambda e: e.__name__)
def test_every_herd_exception_is_a_herd_error(exc: type[BaseException]) -> None:
    assert issubclass(exc, HerdError)


def test_config_error_names_source_field_value() -> None:
    err = ConfigError("must be positive", source="a.yaml", field="nodes[0].count", value=-1)
    assert str(err) == "a.yaml: nodes[0].count: must be positive"
    assert (err.source, err.field, err.value) == ("a.yaml", "nodes[0].count", -1)
    assert isinstance(err, ValueError)


def test_registry_errors_render_readably() -> None:
    assert "'k'" in str(registry_errors.NotRegistered("k"))
    assert str(supervisor_errors.ChildNotFound("no child 'c'")) == "no child 'c'"
    assert "expected 2, found 3" in str(registry_errors.EpochConflict("k", 2, 3))


def _run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **env}
    full_env.pop("PYTHONSAFEPATH", None)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=60)


def _json_lines(stderr: str) -> list[dict]:
    return [json.loads(line) for line in stderr.splitlines() if line.strip()]


def test_json_mode_emits_json_lines_with_bound_context() -> None:
    result = _run("""
        from herd.platform import logging as hlog
        hlog.configure(level="INFO", json=True)
        log = hlog.get_logger("herd.test", component="unit")
        with hlog.bound(node_id="n1", supervisor="workers", child_id="c1", epoch=7):
            log.info("child_started", attempt=2)
        log.debug("hidden")
        hlog.bind_context(node_id="n2")
        log.warning("after", x=1)
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    lines = _json_lines(result.stderr)
    assert len(lines) == 2, result.stderr
    first, second = lines
    assert first["event"] == "child_started" and first["level"] == "info"
    assert first["logger"] == "herd.test" and first["component"] == "unit"
    assert (first["node_id"], first["supervisor"], first["child_id"], first["epoch"]) == \
        ("n1", "workers", "c1", 7)
    assert first["attempt"] == 2 and "timestamp" in first
    assert second["event"] == "after" and second["level"] == "warning"
    assert second["node_id"] == "n2" and "supervisor" not in second and "child_id" not in second


def test_json_from_environment_and_exceptions() -> None:
    result = _run("""
        from herd.platform import logging as hlog
        log = hlog.get_logger("herd.env")
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            log.exception("failed")
        log.debug("shown")
    """, HERD_LOG_JSON="1", HERD_LOG_LEVEL="debug")
    assert result.returncode == 0, result.stderr
    lines = _json_lines(result.stderr)
    assert [line["event"] for line in lines] == ["failed", "shown"]
    assert "RuntimeError: boom" in lines[0]["exception"]


def test_bind_context_rejects_unknown_keys() -> None:
    from herd.platform import logging as hlog
    with pytest.raises(ValueError, match="unknown log context keys"):
        hlog.bind_context(colour="blue")


def test_loggers_made_at_import_follow_a_later_configure() -> None:
    """The CLI configures logging after every module made its logger: those loggers must use
    the new level and renderer (before, they kept printing INFO as JSON lines)."""
    result = _run("""
        import pickle
        from herd.platform import logging as hlog
        log = hlog.get_logger("herd.early").bind(part="x")
        hlog.configure(level="WARNING", json=False)
        log.info("hidden")
        log.warning("shown", n=1)
        pickle.loads(pickle.dumps(log)).warning("unpickled")
    """, HERD_LOG_LEVEL="DEBUG", HERD_LOG_JSON="1")
    assert result.returncode == 0, result.stderr
    assert "hidden" not in result.stderr
    assert "shown" in result.stderr and "part=x" in result.stderr and "unpickled" in result.stderr
    assert not [line for line in result.stderr.splitlines() if line.startswith("{")]


def test_two_sinks_file_gets_json_and_the_stream_only_warnings(tmp_path: Path) -> None:
    log_file = tmp_path / "herd.log"
    result = _run(f"""
        from pathlib import Path
        from herd.platform import logging as hlog
        hlog.configure(level="INFO", file=Path("{log_file}"), stderr_level="WARNING")
        log = hlog.get_logger("herd.cli")
        log.debug("dropped")
        log.info("file_only", n=1)
        log.error("both", n=2)
    """)
    assert result.returncode == 0, result.stderr
    assert "both" in result.stderr and "file_only" not in result.stderr
    assert not result.stderr.startswith("{")
    events = [json.loads(line)["event"] for line in log_file.read_text().splitlines()]
    assert events == ["file_only", "both"]
