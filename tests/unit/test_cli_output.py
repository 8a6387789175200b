"""What a person reads from the CLI: the status tree without ``None``s and with stopped
supervisors' reasons, Ray's raw output kept in the log file, and benchmark tables without JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from herd.supervisors.apps.status import duration, render

REPO = Path(__file__).resolve().parents[2]


def _view() -> dict[str, Any]:
    dynamic_child = {"id": "counter-1", "status": "starting", "node_id": None, "region": None,
                     "epoch": 3, "incarnation": 1, "restarts": 0, "failovers": 0,
                     "uptime_s": None}
    static_child = {"id": "source", "status": "running", "type": "worker",
                    "restart": "permanent", "node_id": "ab" * 28, "region": "us-west",
                    "pid": 4242, "epoch": None, "uptime_s": None,
                    "children": [{"id": "enrich", "status": "undefined", "type": "worker",
                                  "restart": "transient", "node_id": None, "region": None,
                                  "pid": None, "epoch": None, "uptime_s": None}]}
    return {"apps": [{"app": "demo", "source": None, "started_at": 1.0, "uptime_s": 75.0,
                      "supervisors": [
                          {"name": "workers", "kind": "dynamic", "status": "running",
                           "reason": None, "children": [dynamic_child]},
                          {"name": "pipeline", "kind": "static", "status": "running",
                           "reason": None, "children": [static_child]},
                          {"name": "escalated", "kind": "dynamic", "status": "stopped",
                           "reason": "child 'c-1' exceeded max_restarts=3 in 5 s",
                           "children": []}]}],
            "nodes": [{"node_id": "cd" * 28, "region": None, "zone": None, "alive": True,
                       "head": True, "cpu": 1.0}]}


def test_status_tree_shows_no_none() -> None:
    lines = render(_view())
    text = "\n".join(lines)
    assert "None" not in text and "Nones" not in text
    assert "app demo  (up 1 min 15 s, from -)" in lines[0]
    assert "epoch=3" in text and "epoch=" not in text.split("source", 1)[1]
    assert all(line == line.rstrip() for line in lines)


def test_status_tree_shows_a_stopped_supervisor_with_its_reason() -> None:
    lines = render(_view())
    assert ("  dynamic supervisor escalated: stopped: child 'c-1' exceeded max_restarts=3 in 5 s"
            in lines)
    assert "  dynamic supervisor workers: running" in lines


@pytest.mark.parametrize("seconds, shown", [(None, "-"), (0.04, "0.0 s"), (8.25, "8.2 s"),
                                            (245, "4 min 5 s"), (7380, "2 h 3 min")])
def test_durations_read_as_time(seconds: float | None, shown: str) -> None:
    assert duration(seconds) == shown


def _run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **env}
    full_env.pop("PYTHONSAFEPATH", None)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO,
                          env=full_env, capture_output=True, text=True, timeout=120)


def test_raw_output_goes_to_the_log_and_herd_output_to_the_terminal(tmp_path: Path) -> None:
    log_path = tmp_path / "cli.log"
    result = _run(f"""
        import os, sys
        from herd.cli.common import echo, ray_output_to
        from herd.platform.logging import get_logger
        log = get_logger("herd.test")
        with ray_output_to(__import__("pathlib").Path("{log_path}")):
            os.write(1, b"raw stdout from C++\\n")
            os.write(2, b"raw stderr from C++\\n")
            print("a Python print from a driver thread")
            echo("herd says hello")
            echo("herd warns", err=True)
            log.info("quiet_event", n=1)
            log.warning("loud_event", n=2)
        echo("after the block")
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "herd says hello\nafter the block\n"
    assert "herd warns" in result.stderr and "loud_event" in result.stderr
    assert "quiet_event" not in result.stderr and "raw" not in result.stderr
    assert "{" not in result.stderr  # the console renderer, not JSON
    logged = log_path.read_text()
    assert "raw stdout from C++" in logged and "raw stderr from C++" in logged
    assert "a Python print from a driver thread" in logged
    events = [json.loads(line) for line in logged.splitlines() if line.startswith("{")]
    assert [e["event"] for e in events] == ["quiet_event", "loud_event"]


def test_bench_prints_tables_and_writes_json_only_to_out(tmp_path: Path) -> None:
    """Issue 11, case 8: a real (small) crdt benchmark through the bench command."""
    out = tmp_path / "bench.json"
    result = _run(f"""
        import functools
        from herd.cli.bench import BENCHMARKS, crdt
        from herd.cli.main import main
        BENCHMARKS["crdt"] = (functools.partial(crdt.run, elements=2000, repeats=1), "small")
        main(["bench", "crdt", "--out", "{out}"])
    """, HERD_LOG_DIR=str(tmp_path / "logs"))
    assert result.returncode == 0, result.stderr
    assert "== herd bench crdt ==" in result.stdout
    assert not [line for line in result.stdout.splitlines() if line.lstrip().startswith("{")]
    assert json.loads(out.read_text())["reports"][0]["name"] == "crdt"
