"""The write-ahead log of a node's Raft members (one file, many groups, as :ra's shared WAL):
records of hard state, entries and snapshots, each framed with its length and CRC32, appended
and made durable with one ``fsync`` for everything written since the last one (group commit).
Opening the file recovers every group's state; a torn tail (a crash mid-write) is cut off.
When the file has grown well past the live state, it is rewritten (to a temporary file,
fsynced, renamed)."""

from __future__ import annotations

import os
import pickle
import struct
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from herd.consensus.raft.messages import Entry, HardState, Ready, Snapshot

__all__ = ["GroupState", "WriteAheadLog"]

FRAME = struct.Struct(">II")  # payload length, crc32
REWRITE_MIN_BYTES = 64 * 1024 * 1024


@dataclass
class GroupState:
    hard_state: HardState = field(default_factory=HardState)
    snapshot: Snapshot | None = None
    entries: list[Entry] = field(default_factory=list)

    def replay(self, kind: str, value: Any) -> None:
        if kind == "hard_state":
            self.hard_state = value
        elif kind == "snapshot":  # installed from a leader: replaces the whole log
            self.snapshot, self.entries = value, []
        elif kind == "compact":  # taken locally: the log after it stays
            self.snapshot = value
            self.entries = [e for e in self.entries if e.index > value.index]
        elif kind == "entries" and value:
            first = value[0].index
            if self.entries and first <= self.entries[-1].index:
                del self.entries[max(0, first - self.entries[0].index):]
            self.entries.extend(value)


class WriteAheadLog:
    def __init__(self, directory: str | Path, name: str = "raft.wal") -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / name
        self.groups: dict[str, GroupState] = {}
        self.pending: list[bytes] = []
        self.lock = threading.Lock()
        self.syncs = 0
        self.size = self._recover()
        self.file = open(self.path, "ab")  # noqa: SIM115 - held open for the log's life

    def _recover(self) -> int:
        if not self.path.exists():
            return 0
        data = self.path.read_bytes()
        offset = 0
        while offset + FRAME.size <= len(data):
            length, crc = FRAME.unpack_from(data, offset)
            payload = data[offset + FRAME.size:offset + FRAME.size + length]
            if len(payload) < length or zlib.crc32(payload) != crc:
                break
            group, kind, value = pickle.loads(payload)
            self.groups.setdefault(group, GroupState()).replay(kind, value)
            offset += FRAME.size + length
        if offset < len(data):
            with open(self.path, "r+b") as torn:
                torn.truncate(offset)
                os.fsync(torn.fileno())
        return offset

    def state(self, group: str) -> GroupState:
        return self.groups.setdefault(group, GroupState())

    def record(self, group: str, kind: str, value: Any) -> None:
        """Buffer one record (durable after the next ``sync``)."""
        self.state(group).replay(kind, value)
        payload = pickle.dumps((group, kind, value), protocol=pickle.HIGHEST_PROTOCOL)
        with self.lock:
            self.pending.append(FRAME.pack(len(payload), zlib.crc32(payload)) + payload)

    def record_ready(self, group: str, ready: Ready) -> bool:
        """Buffer what a ``Ready`` says to persist; True if anything was buffered."""
        wrote = False
        if ready.hard_state is not None:
            self.record(group, "hard_state", ready.hard_state)
            wrote = True
        if ready.snapshot is not None:
            self.record(group, "snapshot", ready.snapshot)
            wrote = True
        if ready.entries:
            self.record(group, "entries", list(ready.entries))
            wrote = True
        return wrote

    def sync(self) -> int:
        """Write and fsync everything buffered so far: one fsync for all of it. Returns how
        many records it made durable."""
        with self.lock:
            batch, self.pending = self.pending, []
        if not batch:
            return 0
        blob = b"".join(batch)
        self.file.write(blob)
        self.file.flush()
        os.fsync(self.file.fileno())
        self.size += len(blob)
        self.syncs += 1
        return len(batch)

    def needs_rewrite(self, live_bytes: int) -> bool:
        return self.size > max(REWRITE_MIN_BYTES, 4 * live_bytes)

    def rewrite(self) -> None:
        """Replace the file by one holding only each group's current state."""
        self.sync()
        temporary = self.path.with_suffix(".rewrite")
        with open(temporary, "wb") as out:
            for group, state in self.groups.items():
                for kind, value in (("compact", state.snapshot), ("hard_state", state.hard_state),
                                    ("entries", state.entries)):
                    if value is None:
                        continue
                    payload = pickle.dumps((group, kind, value), protocol=pickle.HIGHEST_PROTOCOL)
                    out.write(FRAME.pack(len(payload), zlib.crc32(payload)) + payload)
            out.flush()
            os.fsync(out.fileno())
        self.file.close()
        os.replace(temporary, self.path)
        directory = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        self.size = self.path.stat().st_size
        self.file = open(self.path, "ab")  # noqa: SIM115

    def close(self) -> None:
        self.sync()
        self.file.close()

    def abandon(self) -> None:
        """Close without syncing (what a crash leaves: only synced records are durable)."""
        with self.lock:
            self.pending = []
        self.file.close()

    def __enter__(self) -> WriteAheadLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
