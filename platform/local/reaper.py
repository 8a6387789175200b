"""Leak guard for clusters owned by a process (tests, benchmarks, the demo).

``python -m herd.platform.local.reaper OWNER_PID STATE_FILE`` runs in its own session beside a
LocalCluster. It exits once the cluster is stopped (state file gone or every node gone); if the
owner dies first (SIGKILL, a crashed test run), it kills every session listed in the state file,
so no Ray process outlives the process that started it.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

from herd.platform.local import processes

POLL_S = 0.5


def _alive(pid: int) -> bool:
    return processes.session_of(pid) is not None


def _leaders(state_file: Path) -> tuple[list[int], str | None]:
    try:
        state = json.loads(state_file.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return [], None
    return [n["leader_pid"] for n in state["nodes"] if n["leader_pid"]], state.get("ray_tmp")


def watch(owner: int, state_file: Path) -> None:
    while True:
        leaders, ray_tmp = _leaders(state_file)
        if not state_file.exists() or not any(processes.session_pids(p) for p in leaders):
            return
        if not _alive(owner):
            for leader in leaders:
                processes.kill_session(leader)
            if ray_tmp:
                shutil.rmtree(ray_tmp, ignore_errors=True)
            shutil.rmtree(state_file.parent, ignore_errors=True)
            return
        time.sleep(POLL_S)


if __name__ == "__main__":
    watch(int(sys.argv[1]), Path(sys.argv[2]))
    os._exit(0)
