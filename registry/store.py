"""Write-through persistence of one registry shard in the GCS KV store (``herd.platform.kv``).

A log-structured layout under ``registry/<name>/<shard>/``, so that a write -- one operation, a
batch of thousands, or every write that arrived while the previous one was being stored (group
commit, ``herd.registry.commit``) -- is one KV put:

* ``w/<n>`` (n zero-padded, growing): a write-ahead segment, one per change: the shard's counter
  after it, the records it puts (pickled :class:`Entry`, each actor handle a blob of its own:
  ``herd.registry.persisted``) and the entry ids it deletes.
* ``c/<k>``: a chunk, every record whose entry id is in ``[k * CHUNK, (k + 1) * CHUNK)``.
* ``m``: the manifest, ``(floor, counter)``: every segment ``<= floor`` is folded into the chunks.
* ``s/<id>``: the actor subscriptions.

Compaction (when enough segments accumulated) rewrites the chunks the segments touched, then the
manifest, then deletes the folded segments. Loading reads the chunks and replays the segments
after the manifest's floor in order; replay is idempotent per record (entry ids are never
reused), so a compaction interrupted at any point loses nothing. The counter recovered --
``max(manifest counter, every segment's counter, every stored epoch)`` -- is never below an
epoch or event number handed out.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from herd.platform import kv
from herd.platform.logging import get_logger
from herd.registry import persisted
from herd.registry.change import Change
from herd.registry.layout import shard_prefix
from herd.registry.records import Entry

CHUNK = 512
COMPACT_SEGMENTS = 64
COMPACT_RECORDS = 20_000

log = get_logger("herd.registry.store")


@dataclass(frozen=True)
class Subscription:
    """An actor subscribed to a shard's events: ``getattr(handle, method).remote(event)``."""

    sub_id: str
    handle: Any
    method: str
    prefix: str


@dataclass(frozen=True)
class Segment:
    counter: int
    puts: tuple[Entry, ...]
    deletes: tuple[int, ...]


class ShardStore:
    def __init__(self, name: str, shard: int) -> None:
        self._prefix = shard_prefix(name, shard)
        self._chunks: dict[int, dict[int, Entry]] = {}
        self._dirty: set[int] = set()
        self._segments: list[int] = []  # live segment numbers, in order
        self._next = 1
        self._floor = 0
        self._counter = 0
        self._unfolded = 0  # records written since the last compaction

    def load(self) -> tuple[list[Entry], int]:
        """Every stored record and the counter's high-water mark (blocking: actor start)."""
        self._floor, self._counter = kv.get_object(self._prefix + "m", (0, 0))
        for key in kv.keys(self._prefix + "c/"):
            chunk = _read(key)
            if chunk:
                self._chunks[int(key.rsplit("/", 1)[1])] = chunk
        numbers = sorted(int(k.rsplit("/", 1)[1]) for k in kv.keys(self._prefix + "w/"))
        self._segments = numbers
        for number in numbers:
            segment = _read(self._segment_key(number)) if number > self._floor else None
            if segment is not None:
                self._fold(segment)
        self._next = max([self._floor, *numbers]) + 1
        return [e for chunk in self._chunks.values() for e in chunk.values()], self._counter

    async def write(self, change: Change) -> None:
        """Store ``change`` as one segment (one KV put)."""
        segment = Segment(change.counter, change.puts, tuple(r.entry_id for r in change.deletes))
        number = self._next
        await kv.aput(self._segment_key(number), persisted.dumps(segment))
        self._next += 1
        self._segments.append(number)
        self._fold(segment)

    def compaction_due(self) -> bool:
        return (len(self._segments) >= COMPACT_SEGMENTS
                or (self._unfolded >= COMPACT_RECORDS and len(self._segments) > 1))

    async def compact(self) -> None:
        """Fold every segment written so far into the chunks (no write may run meanwhile)."""
        floor, folded = self._next - 1, list(self._segments)
        dirty, self._dirty = self._dirty, set()
        try:
            await asyncio.gather(*(self._write_chunk(k) for k in dirty))
            await kv.aput_object(self._prefix + "m", (floor, self._counter))
        except BaseException:
            self._dirty |= dirty
            raise
        self._floor, self._unfolded = floor, 0
        self._segments = [n for n in self._segments if n > floor]
        await asyncio.gather(*(kv.adelete(self._segment_key(n)) for n in folded))
        log.debug("registry_compacted", prefix=self._prefix, chunks=len(dirty),
                  segments=len(folded))

    # ------------------------------------------------------------------------ subscriptions
    def subscriptions(self) -> list[Subscription]:
        found = [_read(k) for k in kv.keys(self._prefix + "s/")]
        return [s for s in found
                if s is not None and not isinstance(s.handle, persisted.LostHandle)]

    def put_subscription(self, sub: Subscription) -> None:
        kv.put(f"{self._prefix}s/{sub.sub_id}", persisted.dumps(sub))

    def delete_subscription(self, sub_id: str) -> None:
        kv.delete(f"{self._prefix}s/{sub_id}")

    # ---------------------------------------------------------------------------- internals
    def _segment_key(self, number: int) -> str:
        return f"{self._prefix}w/{number:012d}"

    def _fold(self, segment: Segment) -> None:
        for entry in segment.puts:
            entry_id = entry.registration.entry_id
            self._chunks.setdefault(entry_id // CHUNK, {})[entry_id] = entry
            self._dirty.add(entry_id // CHUNK)
        for entry_id in segment.deletes:
            chunk = self._chunks.get(entry_id // CHUNK)
            if chunk is not None:
                chunk.pop(entry_id, None)
            self._dirty.add(entry_id // CHUNK)
        self._counter = max(self._counter, segment.counter)
        self._unfolded += len(segment.puts) + len(segment.deletes)

    async def _write_chunk(self, number: int) -> None:
        chunk = self._chunks.get(number)
        key = f"{self._prefix}c/{number}"
        if chunk:
            await kv.aput(key, persisted.dumps(dict(chunk)))
        else:
            self._chunks.pop(number, None)
            await kv.adelete(key)


def _read(key: str) -> Any:
    """A stored chunk, segment or subscription; handles Ray cannot restore load as
    :class:`~herd.registry.persisted.LostHandle`."""
    raw = kv.get(key)
    return None if raw is None else persisted.loads(raw)
