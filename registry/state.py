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

import bisect
import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from herd.registry.change import Change, merge
from herd.registry.meta import updated
from herd.registry.records import (
    AbsentOr,
    ClaimItem,
    Entry,
    Event,
    EventBatch,
    Expected,
    KeyMode,
    MetaMatch,
    OnHolderDeath,
    Registered,
    RegisterItem,
    Registration,
    Rejection,
    RemoveItem,
    Snapshot,
    Unregistered,
    Updated,
)

LOG_CAPACITY = 50_000
BATCH_LIMIT = 1_000


Planned = Change | Rejection
Planner = Callable[["RegistryState"], Planned]


@dataclass(frozen=True)
class _Staged:
    """What undoes a change staged while a group is planned."""

    counter: int
    change: Change
    replaced: tuple[Entry | None, ...]
    deleted: tuple[Entry, ...]


def meta_matches(meta: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """True when every top-level item of ``wanted`` is in ``meta`` with an equal value."""
    return all(k in meta and meta[k] == v for k, v in wanted.items())


#: Changes that are not fields of a registration (``meta_*``: applied to the meta).
_NOT_FIELDS = frozenset({"handle", "meta_update", "meta_increment"})


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
        self._ends: list[int] = []  # seq of the last event of each commit in the log
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
        if chunk:  # never split one commit (e.g. a batch) across two answers
            end = bisect.bisect_left(self._ends, chunk[-1].seq)
            if end < len(self._ends):
                chunk = self._log[start:self._ends[end] - self._floor]
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

    def plan_compare_and_set(self, key: str, expected: Expected, changes: dict[str, Any],
                             holder_id: str | None, node_id: str | None, op: str,
                             now: float) -> Change | Rejection:
        """Unique registries only. ``expected`` 0 creates the record (the key must be absent);
        an epoch: the record must exist with that epoch; a :class:`MetaMatch`: the record must
        exist with those meta values; an :class:`AbsentOr`: absent, or with that epoch.
        ``changes`` may hold ``handle`` (``holder_id``/``node_id`` describe it), ``meta`` and
        ``on_holder_death``."""
        entries = self._key_entries(key)
        current = entries[0] if entries else None
        if current is not None and current.op == op:
            return Change(self.counter, result=current.registration)
        actual = current.registration.epoch if current else None
        if isinstance(expected, MetaMatch):
            if current is None or not expected.holds_for(current.registration.meta):
                return Rejection("epoch_conflict", key, expected=expected, actual=actual)
        elif isinstance(expected, AbsentOr):
            if current is not None and actual != expected.epoch:
                return Rejection("epoch_conflict", key, expected=expected, actual=actual)
        elif (expected == 0 and current is not None) or (expected != 0 and actual != expected):
            return Rejection("epoch_conflict", key, expected=expected, actual=actual)
        epoch = self.counter + 1
        holder = {"handle": changes["handle"], "holder_id": holder_id,
                  "node_id": node_id} if "handle" in changes else {}
        fields = {k: v for k, v in changes.items() if k not in _NOT_FIELDS} | holder
        if "meta_update" in changes or "meta_increment" in changes:
            merged = updated(current.registration.meta if current else {},
                             changes.get("meta_update", {}), changes.get("meta_increment", {}))
            if isinstance(merged, str):
                return Rejection("meta_too_large", key, detail=merged)
            fields["meta"] = merged
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

    # ------------------------------------------------------------------------------ batches
    def plan_group(self, planners: Sequence[Planner],
                   unseen: Sequence[bool] = ()) -> tuple[Change, list[Planned]]:
        """Plan several writes as one change, each seeing the effect of those before it (the
        shard's writes that arrive together, or the items of a batch), and what each planned.
        The state is unchanged afterwards: the merged change is committed like any other.
        ``unseen[i]`` true: no later planner reads what planner ``i`` changes (a batch item
        whose key does not recur), so only the counter is carried past it (much cheaper)."""
        outcomes: list[Planned] = []
        staged: list[_Staged] = []
        counter = self.counter
        try:
            for i, planner in enumerate(planners):
                planned = planner(self)
                outcomes.append(planned)
                if isinstance(planned, Change) and not planned.empty:
                    if i < len(unseen) and unseen[i]:
                        self.counter = planned.counter
                    else:
                        staged.append(self._stage(planned))
        finally:
            for step in reversed(staged):
                self._unstage(step)
            self.counter = counter
        return merge(counter, [o for o in outcomes if isinstance(o, Change)]), outcomes

    def plan_register_many(self, items: Sequence[RegisterItem], now: float,
                           nodes: dict[str, Any] | None = None) -> Change:
        """``register`` of every item in order, as one change; its result holds, per item,
        the record or the :class:`Rejection` (a batch is not all-or-nothing). ``nodes``:
        holder id -> node, for items without ``node_id``."""
        placed = nodes or {}

        def planner(item: RegisterItem) -> Planner:
            node = item.node_id or placed.get(item.holder_id)
            return lambda s: s.plan_register(item.key, item.handle, item.holder_id, node,
                                             item.meta, item.on_holder_death, item.op, now)
        return self._batch([planner(i) for i in items], [i.key for i in items])

    def plan_compare_and_set_many(self, items: Sequence[ClaimItem], now: float,
                                  nodes: dict[str, Any] | None = None) -> Change:
        """``compare_and_set`` of every item in order, as one change; per-item results.
        ``nodes``: holder id -> node, for items with a holder but no ``node_id``."""
        placed = nodes or {}

        def planner(item: ClaimItem) -> Planner:
            node = item.node_id or (placed.get(item.holder_id) if item.holder_id else None)
            return lambda s: s.plan_compare_and_set(item.key, item.expected, item.changes,
                                                    item.holder_id, node, item.op, now)
        return self._batch([planner(i) for i in items], [i.key for i in items])

    def plan_remove_many(self, items: Sequence[RemoveItem]) -> Change:
        """``remove`` (whoever holds the key) of every item in order, as one change; per item
        the number of records removed or the :class:`Rejection`."""
        def planner(item: RemoveItem) -> Planner:
            return lambda s: s.plan_unregister(item.key, None, item.epoch)
        return self._batch([planner(i) for i in items], [i.key for i in items])

    def plan_holder_gone(self, holder_id: str, reason: str, limit: int | None = None) -> Change:
        """The holder exited or died: remove its records, or clear the holder of those
        registered with ``on_holder_death="clear"`` (``limit``: at most that many, the
        oldest)."""
        ids = sorted(self._by_holder.get(holder_id, ()))[:limit]
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
        if change.events:
            self._ends.append(change.events[-1].seq)
        if len(self._log) > 2 * self._capacity:
            drop = len(self._log) - self._capacity
            self._floor = self._log[drop - 1].seq
            del self._log[:drop]
            del self._ends[:bisect.bisect_left(self._ends, self._floor + 1)]

    # ---------------------------------------------------------------------------- internals
    def _key_entries(self, key: str) -> list[Entry]:
        return [self._entries[i] for i in self._by_key.get(key, {})]

    def _batch(self, planners: Sequence[Planner], keys: Sequence[str]) -> Change:
        """Plan a batch whose planner ``i`` reads and writes only key ``keys[i]``."""
        last = {key: i for i, key in enumerate(keys)}
        change, outcomes = self.plan_group(planners, [last[k] == i for i, k in enumerate(keys)])
        results = [o.result if isinstance(o, Change) else o for o in outcomes]
        return dataclasses.replace(change, result=results)

    def _stage(self, change: Change) -> _Staged:
        """Apply ``change`` to the indexes and the counter only (no log), undoably."""
        step = _Staged(self.counter, change,
                       tuple(self._entries.get(e.registration.entry_id) for e in change.puts),
                       tuple(self._entries[r.entry_id] for r in change.deletes
                             if r.entry_id in self._entries))
        for reg in change.deletes:
            self._unindex(reg.entry_id)
        for entry in change.puts:
            self._index(entry)
        self.counter = change.counter
        return step

    def _unstage(self, step: _Staged) -> None:
        for entry, previous in reversed(list(zip(step.change.puts, step.replaced, strict=True))):
            if previous is None:
                self._unindex(entry.registration.entry_id)
            else:
                self._index(previous)
        for old in step.deleted:
            self._index(old)
            key = old.registration.key  # a key's records stay in entry id (creation) order
            self._by_key[key] = dict(sorted(self._by_key[key].items()))
        self.counter = step.counter

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
