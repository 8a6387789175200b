"""Process bookkeeping for nodes herd starts: every process of a ``ray start --block`` node lives
in the session of its leader (Ray's workers change their process group, not their session)."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path


def session_of(pid: int) -> int | None:
    """The session id of ``pid`` from /proc, or None when the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name is in parentheses and may hold spaces: parse after the last ')'.
    fields = stat[stat.rindex(")") + 2:].split()
    state, session = fields[0], int(fields[3])
    return None if state == "Z" else session


def is_running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie waiting to be reaped."""
    return session_of(pid) is not None


def session_pids(leader: int) -> list[int]:
    """Every live (non-zombie) process in the session led by ``leader``."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and session_of(int(entry)) == leader:
            pids.append(int(entry))
    return sorted(pids)


def signal_session(leader: int, sig: signal.Signals) -> list[int]:
    """Send ``sig`` to every process of the session; returns the pids signalled."""
    sent = []
    for pid in session_pids(leader):
        try:
            os.kill(pid, sig)
            sent.append(pid)
        except ProcessLookupError:
            pass
    return sent


def wait_session_gone(leader: int, timeout_s: float) -> list[int]:
    """Wait until no process of the session is left; returns the survivors at the deadline."""
    return _wait_sessions_gone([leader], timeout_s)


def terminate_sessions(leaders: list[int], timeout_s: float) -> list[int]:
    """SIGTERM each leader, in order, and wait until their sessions are gone; returns the
    survivors at the deadline."""
    for leader in leaders:
        with contextlib.suppress(ProcessLookupError):
            os.kill(leader, signal.SIGTERM)
    return _wait_sessions_gone(leaders, timeout_s)


def kill_session(leader: int, timeout_s: float = 10.0) -> list[int]:
    """SIGKILL every process of the session (repeating for late forks); returns survivors.

    Every process is stopped before any is killed: one killed first would otherwise be seen dead
    by its siblings (Ray's agents publish a "Raylet is terminated" report to every driver when
    they outlive their raylet by a moment), which a crash of the whole node never lets happen.
    """
    return kill_sessions([leader], timeout_s)


def kill_sessions(leaders: list[int], timeout_s: float = 10.0) -> list[int]:
    """``kill_session`` for several sessions at once: all are stopped before any is killed."""
    deadline = time.monotonic() + timeout_s
    while True:
        for leader in leaders:
            signal_session(leader, signal.SIGSTOP)
        for leader in leaders:
            signal_session(leader, signal.SIGKILL)
        left = _wait_sessions_gone(leaders, min(0.5, max(0.0, deadline - time.monotonic())))
        if not left or time.monotonic() >= deadline:
            return left


def _wait_sessions_gone(leaders: list[int], timeout_s: float) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while True:
        left = [pid for leader in leaders for pid in session_pids(leader)]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.05)
