"""The fencing ledger: an append-only file every chaos child writes to, outside the system under
test. Each child appends a ``start`` line when it starts and a ``write`` line with its current
fencing epoch (``herd.supervisors.fencing.check``) every few hundred milliseconds.

A file, not an actor: it survives every fault the nemesis injects (a ledger actor would die with
the head or sit behind a partition). All nodes of a ``LocalCluster`` share this machine's file
system and ``CLOCK_MONOTONIC``; one ``os.write`` on an ``O_APPEND`` descriptor lands as one line,
so lines appear in the order the writes happened.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LedgerLog", "Start", "Write", "append", "process_start_ticks", "read"]


@dataclass(frozen=True)
class Start:
    """Child ``tag`` started in process ``pid`` (``ticks``: the process's start time, which
    tells a live process from a later one that reused the pid) on ``node``."""

    tag: str
    pid: int
    ticks: int
    node: str
    at_ns: int


@dataclass(frozen=True)
class Write:
    """Process ``pid``, holder of ``tag`` with fencing epoch ``epoch``, made a side effect."""

    tag: str
    epoch: int
    pid: int
    at_ns: int


@dataclass
class LedgerLog:
    starts: list[Start]
    writes: list[Write]

    def pids_of(self, tag: str) -> list[tuple[int, int]]:
        """(pid, start ticks) of every incarnation of ``tag`` ever started."""
        return [(s.pid, s.ticks) for s in self.starts if s.tag == tag]

    @property
    def tags(self) -> list[str]:
        return sorted({s.tag for s in self.starts})


def process_start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (/proc), None if it is gone or a
    zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return None if fields[0] == "Z" else int(fields[19])


def append(path: str | Path, entry: dict[str, object]) -> None:
    """Append one entry as one line (one ``write`` call on an ``O_APPEND`` descriptor)."""
    line = json.dumps({**entry, "at_ns": time.monotonic_ns()}, separators=(",", ":")) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def read(path: str | Path) -> LedgerLog:
    """Every complete line of the ledger (a line cut short by a killed writer is skipped)."""
    log = LedgerLog([], [])
    target = Path(path)
    if not target.exists():
        return log
    for line in target.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        kind = entry.pop("kind", None)
        if kind == "start":
            log.starts.append(Start(**entry))
        elif kind == "write":
            log.writes.append(Write(**entry))
    return log
