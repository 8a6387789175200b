"""The per-process lookup cache of one registry (pure Python, thread-safe, unit-testable).

A slot holds a key's records (present or absent) as of an event position of its shard; the
hot path reads ``slots[key].value`` -- one dict read, no lock, no remote call. A background
thread (``herd.registry.sync``) applies the registry's events in order; an event updates a slot
only if it is newer than the slot. A lookup answer is stored only when the thread is in sync
with that shard and the answer is at least as new as the last event applied, so no event about
the key can have been skipped. When the thread loses the stream (error, registry restart with
events lost) the shard's slots are dropped and lookups go to the registry until it is back in
sync. Hence a holder removed by the registry is never returned once the removal event has been
applied, and the staleness of a hit is the event push delay (one long-poll round trip, ~1 ms
measured; see ``herd bench registry``).
"""

from __future__ import annotations

import threading
from typing import Any

from herd.registry.records import EventBatch, KeyMode, Registration, Unregistered

MAX_SLOTS = 100_000


class Slot:
    """``value`` is what ``lookup`` returns: the holder's handle or ``None`` (unique), a tuple of
    the members' handles (duplicate)."""

    __slots__ = ("seq", "shard", "regs", "value")

    def __init__(self, seq: int, shard: int, regs: dict[int, Registration], mode: KeyMode) -> None:
        self.seq = seq
        self.shard = shard
        self.regs = regs
        self.value = _value(regs, mode)


def _value(regs: dict[int, Registration], mode: KeyMode) -> Any:
    if mode == "unique":
        return next((r.handle for r in regs.values()), None)
    return tuple(r.handle for r in regs.values() if r.handle is not None)


class LookupCache:
    def __init__(self, mode: KeyMode, shards: int, max_slots: int = MAX_SLOTS) -> None:
        self.mode = mode
        self.slots: dict[str, Slot] = {}
        self._applied: list[int | None] = [None] * shards  # None: not in sync with the shard
        self._max = max_slots
        self._lock = threading.Lock()

    def in_sync(self, shard: int) -> bool:
        return self._applied[shard] is not None

    def offer(self, key: str, shard: int, seq: int, regs: list[Registration]) -> None:
        """Store a lookup answer current at event position ``seq``, if that is safe."""
        with self._lock:
            applied = self._applied[shard]
            if applied is None or seq < applied:
                return
            if len(self.slots) >= self._max and key not in self.slots:
                del self.slots[next(iter(self.slots))]  # evict the oldest slot
            self.slots[key] = Slot(seq, shard, {r.entry_id: r for r in regs}, self.mode)

    def apply(self, shard: int, batch: EventBatch) -> None:
        with self._lock:
            if batch.reset:
                self._drop_shard(shard)
            for event in batch.events:
                slot = self.slots.get(event.key)
                if slot is None or event.seq <= slot.seq:
                    continue
                regs = dict(slot.regs)
                if isinstance(event, Unregistered):
                    regs.pop(event.registration.entry_id, None)
                else:
                    regs[event.registration.entry_id] = event.registration
                self.slots[event.key] = Slot(event.seq, shard, regs, self.mode)
            self._applied[shard] = batch.seq

    def suspend(self, shard: int) -> None:
        """The event stream of ``shard`` was lost: forget its slots until back in sync."""
        with self._lock:
            self._applied[shard] = None
            self._drop_shard(shard)

    def invalidate(self, key: str, holder_id: str) -> None:
        """Drop the key's slot if it names ``holder_id`` (a caller saw that holder dead)."""
        with self._lock:
            slot = self.slots.get(key)
            if slot is not None and any(r.holder_id == holder_id for r in slot.regs.values()):
                del self.slots[key]

    def _drop_shard(self, shard: int) -> None:
        for key in [k for k, s in self.slots.items() if s.shard == shard]:
            del self.slots[key]
