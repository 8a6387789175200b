"""herd's log set-up inside a Ray worker: INFO as JSON in the worker's herd log file, WARNING and
above on stderr (what Ray forwards to drivers) as one plain console line each."""

from __future__ import annotations

import io
import json
import os
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from herd.platform import logging as herd_logging


@pytest.fixture
def in_ray_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """This process looks like a Ray worker whose session logs live in ``tmp_path``."""
    node = types.SimpleNamespace(get_logs_dir_path=lambda: str(tmp_path))
    fake = types.SimpleNamespace(WORKER_MODE=1, global_worker=types.SimpleNamespace(mode=1),
                                 _global_node=node)
    monkeypatch.setitem(sys.modules, "ray._private.worker", fake)
    monkeypatch.delenv("HERD_LOG_LEVEL", raising=False)
    monkeypatch.delenv("HERD_LOG_JSON", raising=False)
    yield tmp_path
    monkeypatch.undo()
    herd_logging.configure()


def test_worker_keeps_info_in_its_file_and_forwards_warnings(in_ray_worker: Path) -> None:
    stream = io.StringIO()
    herd_logging.configure(stream=stream)
    log = herd_logging.get_logger("herd.test")
    log.info("member_started", supervisor="s")
    log.warning("child_restart_failed", child_id="c-1")
    forwarded = stream.getvalue().splitlines()
    assert len(forwarded) == 1 and "child_restart_failed" in forwarded[0]
    assert "\x1b[" not in forwarded[0] and not forwarded[0].startswith("{")
    events = [json.loads(line) for line in
              (in_ray_worker / f"herd-worker-{os.getpid()}.log").read_text()
              .splitlines()]
    assert [e["event"] for e in events] == ["member_started", "child_restart_failed"]


def test_herd_log_level_and_json_change_what_is_forwarded(
        in_ray_worker: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERD_LOG_LEVEL", "INFO")
    monkeypatch.setenv("HERD_LOG_JSON", "1")
    stream = io.StringIO()
    herd_logging.configure(stream=stream)
    herd_logging.get_logger("herd.test").info("member_started")
    assert json.loads(stream.getvalue())["event"] == "member_started"


def test_a_driver_is_not_a_worker() -> None:
    assert herd_logging.ray_worker_log_file() is None
