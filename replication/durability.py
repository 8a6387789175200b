"""Where a replica keeps its state so that an acknowledged write survives a SIGKILL.

A replica's durable data is a snapshot plus a log of journal records (see ``core.py``); each
group commit appends one log record holding every journal record produced since the last one,
so concurrent writes share one KV put or one ``fsync``. The log is folded into a new snapshot
every ``COMPACT_RECORDS`` appends.

* ``durability="kv"``: the GCS key-value store (``herd/replication/<store>/<region>/...``).
  Survives the replica's process and its node; lost only with the cluster (or with the head
  when GCS fault tolerance is off).
* ``durability="file"``: files under ``<file_dir>/<node id>/<store>/<region>/``, written with
  ``fsync``. Survives the replica's process; **not its node**: a replica restarted on another
  node (its region's other node) finds no file, starts empty and catches up from its peers, so
  a write acknowledged with ``consistency="local"`` that had not reached a peer is lost with
  the node. Use ``quorum`` or ``all`` (or ``durability="kv"``) for writes that must survive a
  node loss. The node id is part of the path so that nodes sharing a disk (local test
  clusters) behave like real ones.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from herd.platform import kv
from herd.platform.rpc import blocking

COMPACT_RECORDS = 500
Records = list[dict[str, Any]]


def _dumps(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


class Durability(ABC):
    """The durable snapshot and log of one replica."""

    def __init__(self) -> None:
        self.appended = 0

    @abstractmethod
    def load(self) -> tuple[dict[str, Any] | None, Records]:
        """The snapshot (None when there is none) and the records logged after it."""

    @abstractmethod
    async def _append(self, records: Records) -> None: ...

    @abstractmethod
    async def _compact(self, snapshot: dict[str, Any]) -> None: ...

    async def append(self, records: Records, snapshot: dict[str, Any] | None = None) -> None:
        """Make ``records`` durable; with ``snapshot`` (the state after them) compact when
        the log has grown long."""
        await self._append(records)
        self.appended += 1
        if snapshot is not None and self.appended >= COMPACT_RECORDS:
            await self._compact(snapshot)
            self.appended = 0

    @property
    def wants_snapshot(self) -> bool:
        return self.appended + 1 >= COMPACT_RECORDS


class KVDurability(Durability):
    """Snapshot and log records in the GCS KV store."""

    def __init__(self, store: str, region: str) -> None:
        super().__init__()
        self.prefix = f"herd/replication/{store}/{region}/"
        self.next_log = 0

    def load(self) -> tuple[dict[str, Any] | None, Records]:
        raw = kv.get(self.prefix + "snapshot")
        snapshot = None if raw is None else json.loads(raw)
        upto = -1 if snapshot is None else snapshot.pop("log_upto", -1)
        numbers = sorted(int(k.rsplit("/", 1)[1]) for k in kv.keys(self.prefix + "log/"))
        records: Records = []
        for n in numbers:
            if n > upto:
                data = kv.get(f"{self.prefix}log/{n:012d}")
                if data is not None:
                    records.extend(json.loads(data))
        self.next_log = (numbers[-1] + 1) if numbers else upto + 1
        return snapshot, records

    async def _append(self, records: Records) -> None:
        key = f"{self.prefix}log/{self.next_log:012d}"
        self.next_log += 1
        await kv.aput(key, _dumps(records))

    async def _compact(self, snapshot: dict[str, Any]) -> None:
        upto = self.next_log - 1
        await kv.aput(self.prefix + "snapshot", _dumps({**snapshot, "log_upto": upto}))
        for key in await kv.akeys(self.prefix + "log/"):
            if int(key.rsplit("/", 1)[1]) <= upto:
                await kv.adelete(key)

    def destroy(self) -> None:
        for key in kv.keys(self.prefix):
            kv.delete(key)


class FileDurability(Durability):
    """Snapshot file and an append-only log of JSON lines, each append ``fsync``-ed."""

    def __init__(self, directory: Path) -> None:
        super().__init__()
        self.directory = directory
        self.snapshot_path = directory / "snapshot.json"
        self.log_path = directory / "log.jsonl"

    def load(self) -> tuple[dict[str, Any] | None, Records]:
        self.directory.mkdir(parents=True, exist_ok=True)
        snapshot = None
        if self.snapshot_path.exists():
            snapshot = json.loads(self.snapshot_path.read_bytes())
        records: Records = []
        if self.log_path.exists():
            for line in self.log_path.read_bytes().splitlines():
                try:
                    records.extend(json.loads(line))
                except ValueError:  # a torn last line: that commit was never acknowledged
                    break
        return snapshot, records

    def _write_log(self, data: bytes) -> None:
        with open(self.log_path, "ab") as log_file:
            log_file.write(data + b"\n")
            log_file.flush()
            os.fsync(log_file.fileno())

    async def _append(self, records: Records) -> None:
        await blocking(self._write_log, _dumps(records))

    def _write_snapshot(self, data: bytes) -> None:
        tmp = self.snapshot_path.with_suffix(".tmp")
        with open(tmp, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.snapshot_path)
        with open(self.log_path, "wb") as log_file:
            os.fsync(log_file.fileno())

    async def _compact(self, snapshot: dict[str, Any]) -> None:
        await blocking(self._write_snapshot, _dumps(snapshot))
