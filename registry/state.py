"""The registry of one shard as a pure state machine (no Ray, no I/O): unit-testable.

Every write is two steps with nothing in between: ``plan_*`` checks the request against the
current state and returns a :class:`Change` (or a :class:`Rejection`) without mutating anything;
the actor persists the change, then calls :meth:`RegistryState.commit`. Nothing is acknowledged
or visible before it is durable.

The shard keeps one counter. Every change of a record takes the next value: as the record's new
epoch (its fencing token) and as the sequence number of the event describing the change, so
event sequence numbers are contiguous and epochs never repeat, even for a key unregistered and
registered again. The counter is recovered after a restart from the persisted records and the
high-water mark written before any removal (see ``herd.registry.store``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from herd.registry.records import (
    Entry,
    Event,
    EventBatch,
    KeyMode,
    OnHolderDeath,
    Registered,
    Registration,
    Rejection,
    Snapshot,
    Unregistered,
    Updated,
)

LOG_CAPACITY = 10_000
BATCH_LIMIT = 1_000


@dataclass(frozen=True)
class Change:
    """A planned write: records to store, records to delete, the events it emits, the shard's
    counter after it, and what the operation returns. A retried operation that was already
    committed plans an empty change carrying the earlier result."""

    counter: int
    puts: tuple[Entry, ...] = ()
    deletes: tuple[Registration, ...] = ()
    events: tuple[Event, ...] = ()
    result: Any = None

    @property
    def empty(self) -> bool:
        return not self.puts and not self.deletes


def meta_matches(meta: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """True when every top-level item of ``wanted`` is in ``meta`` with an equal value."""
    return all(k in meta and meta[k] == v for k, v in wanted.items())


class RegistryState:
    """Records of one registry shard, their indexes, the counter and the recent event log."""

    def __init__(self, mode: KeyMode, shard: int = 0, counter: int = 0,
                 entries: Iterable[Entry] = (), log_capacity: int = LOG_CAPACITY) -> None:
        self.mode = mode
        self.shard = shard
        self.counter = counter
        self._entries: dict[int, Entry] = {}
        self._by_key: dict[str, dict[int, None]] = {}
        self._by_holder: dict[str, set[int]] = {}
        for entry in sorted(entries, key=lambda e: e.registration.entry_id):
            self._index(entry)
            self.counter = max(self.counter, entry.registration.epoch)
        self._log: list[Event] = []
        self._floor = self.counter  # events with seq <= floor are not in the log
        self._capacity = log_capacity

    # ------------------------------------------------------------------------------ queries
    def registrations(self, key: str) -> list[Registration]:
        ids = self._by_key.get(key, {})
        return [self._entries[i].registration for i in ids]

    def select(self, prefix: str = "", meta: dict[str, Any] | None = None) -> list[Registration]:
        found = [e.registration for e in self._entries.values()
                 if e.registration.key.startswith(prefix)
                 and (not meta or meta_matches(e.registration.meta, meta))]
        return sorted(found, key=lambda r: (r.key, r.entry_id))

    def keys_of(self, holder_id: str) -> list[str]:
        ids = self._by_holder.get(holder_id, ())
        return sorted({self._entries[i].registration.key for i in ids})

    def count(self) -> int:
        return len(self._entries)

    def has_holder(self, holder_id: str) -> bool:
        return holder_id in self._by_holder

    def holders(self) -> dict[str, Any]:
        """holder id -> actor handle, for every holder of a record."""
        return {holder: self._entries[next(iter(ids))].registration.handle
                for holder, ids in self._by_holder.items()}

    def snapshot(self, prefix: str = "") -> Snapshot:
        return Snapshot(seq=self.counter, registrations=tuple(self.select(prefix)))

    def events_since(self, since: int, prefix: str = "", limit: int = BATCH_LIMIT) -> EventBatch:
        """Events after position ``since`` whose key starts with ``prefix`` (at most ``limit``
        events are examined). ``reset`` when they are no longer (or never were) in the log."""
        if since < self._floor or since > self.counter:
            return EventBatch(seq=self.counter, reset=True)
        start = since - self._floor
        chunk = self._log[start:start + limit]
        seq = chunk[-1].seq if chunk else since
        return EventBatch(seq=seq, events=tuple(e for e in chunk if e.key.startswith(prefix)))

    # ----------------------------------------------------------------------------- planning
    def plan_register(self, key: str, handle: Any, holder_id: str, node_id: str | None,
                      meta: dict[str, Any], on_holder_death: OnHolderDeath, op: str,
                      now: float) -> Change | Rejection:
        entries = self._key_entries(key)
        for entry in entries:
            if entry.op == op:
                return Change(self.counter, result=entry.registration)
        if self.mode == "unique" and entries:
            return Rejection("already_registered", key, holder=entries[0].registration.handle)
        epoch = self.counter + 1
        reg = Registration(key=key, handle=handle, meta=meta, node_id=node_id, epoch=epoch,
                           registered_at=now, entry_id=epoch, holder_id=holder_id,
                           on_holder_death=on_holder_death)
        return Change(epoch, puts=(Entry(reg, op),), events=(Registered(epoch, self.shard, reg),),
                      result=reg)

    def plan_unregister(self, key: str, holder_id: str | None = None,
                        epoch: int | None = None) -> Change | Rejection:
        """Remove the key's records held by ``holder_id`` (every record when None); the
        change's result is the number removed."""
        current = self.registrations(key)
        if epoch is not None:
            actual = current[0].epoch if current else None
            if actual != epoch:
                return Rejection("epoch_conflict", key, expected=epoch, actual=actual)
        targets = [r for r in current if holder_id is None or r.holder_id == holder_id]
        return self._removal(targets, "unregistered")

    def plan_compare_and_set(self, key: str, expected: int, changes: dict[str, Any],
                             holder_id: str | None, node_id: str | None, op: str,
                             now: float) -> Change | Rejection:
        """Unique registries only. ``expected`` 0 creates the record (the key must be absent);
        otherwise the record must exist with that epoch. ``changes`` may hold ``handle``
        (``holder_id``/``node_id`` describe it), ``meta`` and ``on_holder_death``."""
        entries = self._key_entries(key)
        current = entries[0] if entries else None
        if current is not None and current.op == op:
            return Change(self.counter, result=current.registration)
        actual = current.registration.epoch if current else None
        if (expected == 0 and current is not None) or (expected != 0 and actual != expected):
            return Rejection("epoch_conflict", key, expected=expected, actual=actual)
        epoch = self.counter + 1
        holder = {"handle": changes["handle"], "holder_id": holder_id,
                  "node_id": node_id} if "handle" in changes else {}
        fields = {k: v for k, v in changes.items() if k != "handle"} | holder
        if current is None:
            base = Registration(key=key, handle=None, meta={}, node_id=None, epoch=epoch,
                                registered_at=now, entry_id=epoch, holder_id=None)
            reg = dataclasses.replace(base, **fields)
            event: Event = Registered(epoch, self.shard, reg)
        else:
            reg = dataclasses.replace(current.registration, epoch=epoch, **fields)
            event = Updated(epoch, self.shard, reg, current.registration, "compare_and_set")
        return Change(epoch, puts=(Entry(reg, op),), events=(event,), result=reg)

    def plan_update_meta(self, key: str, meta: dict[str, Any], holder_id: str | None,
                         op: str) -> Change | Rejection:
        """Replace the meta of the key's records (of ``holder_id``'s only, when given)."""
        targets = [e for e in self._key_entries(key)
                   if holder_id is None or e.registration.holder_id == holder_id]
        if not targets:
            return Rejection("not_registered", key,
                             detail="no registration of that holder" if holder_id else "")
        if all(e.op == op for e in targets):
            return Change(self.counter, result=[e.registration for e in targets])
        puts, events = [], []
        for i, entry in enumerate(targets, start=1):
            reg = dataclasses.replace(entry.registration, meta=meta, epoch=self.counter + i)
            puts.append(Entry(reg, op))
            events.append(Updated(reg.epoch, self.shard, reg, entry.registration, "update_meta"))
        return Change(self.counter + len(targets), puts=tuple(puts), events=tuple(events),
                      result=[e.registration for e in puts])

    def plan_holder_gone(self, holder_id: str, reason: str) -> Change:
        """The holder exited or died: remove its records, or clear the holder of those
        registered with ``on_holder_death="clear"``."""
        ids = sorted(self._by_holder.get(holder_id, ()))
        puts: list[Entry] = []
        deletes: list[Registration] = []
        events: list[Event] = []
        for seq, entry_id in enumerate(ids, start=self.counter + 1):
            old = self._entries[entry_id]
            reg = old.registration
            if reg.on_holder_death == "clear":
                new = dataclasses.replace(reg, handle=None, holder_id=None, node_id=None, epoch=seq)
                puts.append(Entry(new, old.op))
                events.append(Updated(seq, self.shard, new, reg, reason))
            else:
                deletes.append(reg)
                events.append(Unregistered(seq, self.shard, reg, reason))
        return Change(self.counter + len(ids), puts=tuple(puts), deletes=tuple(deletes),
                      events=tuple(events))

    # ------------------------------------------------------------------------------- commit
    def commit(self, change: Change) -> None:
        for reg in change.deletes:
            self._unindex(reg.entry_id)
        for entry in change.puts:
            self._index(entry)
        self.counter = change.counter
        self._log.extend(change.events)
        if len(self._log) > 2 * self._capacity:
            drop = len(self._log) - self._capacity
            self._floor = self._log[drop - 1].seq
            del self._log[:drop]

    # ---------------------------------------------------------------------------- internals
    def _key_entries(self, key: str) -> list[Entry]:
        return [self._entries[i] for i in self._by_key.get(key, {})]

    def _removal(self, regs: list[Registration], reason: str) -> Change:
        events = tuple(Unregistered(seq, self.shard, reg, reason)
                       for seq, reg in enumerate(regs, start=self.counter + 1))
        return Change(self.counter + len(regs), deletes=tuple(regs), events=events,
                      result=len(regs))

    def _index(self, entry: Entry) -> None:
        """Add or replace a record (a replaced record keeps its place among its key's)."""
        reg = entry.registration
        old = self._entries.get(reg.entry_id)
        if old is not None:
            self._unindex_holder(old.registration)
        self._entries[reg.entry_id] = entry
        self._by_key.setdefault(reg.key, {})[reg.entry_id] = None
        if reg.holder_id is not None:
            self._by_holder.setdefault(reg.holder_id, set()).add(reg.entry_id)

    def _unindex(self, entry_id: int) -> None:
        entry = self._entries.pop(entry_id, None)
        if entry is None:
            return
        reg = entry.registration
        ids = self._by_key[reg.key]
        del ids[entry_id]
        if not ids:
            del self._by_key[reg.key]
        self._unindex_holder(reg)

    def _unindex_holder(self, reg: Registration) -> None:
        if reg.holder_id is None:
            return
        holder_ids = self._by_holder[reg.holder_id]
        holder_ids.discard(reg.entry_id)
        if not holder_ids:
            del self._by_holder[reg.holder_id]
