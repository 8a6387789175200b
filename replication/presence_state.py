"""The state of one presence tracker: a delta-state CRDT in the manner of Phoenix.Tracker.State
(pure: no Ray, no clock of its own).

Every entry ``(topic, key, pid) -> meta`` belongs to the replica (node) where its process lives;
only that replica adds or removes it. A replica's part of the state is versioned by a
per-replica clock ``(incarnation, version)``: ``version`` counts its own changes, and a restarted
replica starts a new, larger ``incarnation``, which makes every entry of the older one stale
(dropped the moment a peer hears of the newer one). The join of two states keeps, per replica,
the part with the larger clock, so merges commute, associate and are idempotent.

Replication is by deltas: a replica sends a peer the changes after the clock the peer last
acknowledged (``payload_for``), or its whole part when the peer's clock is from another
incarnation or older than the change log reaches. A replica whose node was declared dead is
dropped and ignored from then on (Ray never gives a dead node id back). Every change is answered
with a :class:`Diff`: the joins and leaves it caused, per topic, as Phoenix.Presence reports them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from herd.platform.errors import HerdError

Ref = tuple[str, str, str]  # (topic, key, pid)
Clock = tuple[int, int]  # (incarnation, version)
NO_VERSION = -1

__all__ = ["Clock", "Diff", "NotTracked", "PresenceError", "PresenceState", "Ref",
           "ReplicaPart"]


class PresenceError(HerdError):
    """Base class of presence errors."""


class NotTracked(PresenceError, LookupError):
    """``update`` of a (process, topic, key) that is not tracked."""


@dataclass
class Diff:
    """Net joins and leaves per topic since the last diff taken:
    ``{topic: {"joins": {key: [meta]}, "leaves": {key: [meta]}}}``. A process appears at most
    once in each; one in both changed its meta (apply leaves before joins)."""

    topics: dict[str, dict[str, dict[str, list[Any]]]] = field(default_factory=dict)

    def add(self, kind: str, ref: Ref, meta: Any) -> None:
        topic, key, _ = ref
        per_topic = self.topics.setdefault(topic, {"joins": {}, "leaves": {}})
        per_topic[kind].setdefault(key, []).append(meta)

    def __bool__(self) -> bool:
        return bool(self.topics)


@dataclass
class ReplicaPart:
    incarnation: int
    version: int = NO_VERSION
    entries: dict[Ref, Any] = field(default_factory=dict)

    @property
    def clock(self) -> Clock:
        return (self.incarnation, self.version)


_MISSING = object()


def _ref(value: Any) -> Ref:
    topic, key, pid = value
    return (str(topic), str(key), str(pid))


class PresenceState:
    """Tracker state of ``replica`` (its node id) in ``incarnation``; ``log_size`` bounds the
    change log that deltas are cut from."""

    def __init__(self, replica: str, incarnation: int, log_size: int = 10_000) -> None:
        self.replica = replica
        self.own = ReplicaPart(incarnation, 0)
        self.parts: dict[str, ReplicaPart] = {}
        self.down: set[str] = set()
        self.log: deque[tuple[int, tuple[Any, ...]]] = deque(maxlen=log_size)
        self._touched: dict[tuple[int, Ref], tuple[ReplicaPart, Any]] = {}

    # ------------------------------------------------------------------ changes
    def _set(self, part: ReplicaPart, ref: Ref, meta: Any) -> None:
        """Set (or with ``_MISSING`` remove) an entry, remembering its value before the first
        change since the last ``take_diff``."""
        old = part.entries.get(ref, _MISSING)
        self._touched.setdefault((id(part), ref), (part, old))
        if meta is _MISSING:
            part.entries.pop(ref, None)
        else:
            part.entries[ref] = meta

    def take_diff(self) -> Diff:
        """The net joins and leaves since the last call."""
        diff = Diff()
        for (part, old), (_, ref) in zip(self._touched.values(), self._touched, strict=True):
            new = part.entries.get(ref, _MISSING)  # a dropped part was emptied first
            if old == new:
                continue
            if old is not _MISSING:
                diff.add("leaves", ref, old)
            if new is not _MISSING:
                diff.add("joins", ref, new)
        self._touched.clear()
        return diff

    def _change(self, op: tuple[Any, ...]) -> None:
        self.own.version += 1
        self.log.append((self.own.version, op))
        self._set(self.own, op[1], op[2] if op[0] == "join" else _MISSING)

    def track(self, pid: str, topic: str, key: str, meta: Any) -> None:
        """Track ``pid`` under ``key`` in ``topic``; tracking it again replaces its meta."""
        self._change(("join", (topic, key, pid), meta))

    def update(self, pid: str, topic: str, key: str, meta: Any) -> None:
        if (topic, key, pid) not in self.own.entries:
            raise NotTracked(f"{pid} is not tracked as {key!r} in {topic!r}")
        self.track(pid, topic, key, meta)

    def untrack(self, pid: str, topic: str | None = None, key: str | None = None) -> int:
        """Remove ``pid``'s entries (of ``topic``, of ``key``, or all of them); how many."""
        refs = [r for r in self.own.entries
                if r[2] == pid and topic in (None, r[0]) and key in (None, r[1])]
        for ref in refs:
            self._change(("leave", ref))
        return len(refs)

    def local_pids(self) -> set[str]:
        return {ref[2] for ref in self.own.entries}

    # ------------------------------------------------------------------ replication
    def clock(self) -> dict[str, Clock]:
        """Per-replica clocks of every part this state holds (its own included)."""
        return {self.replica: self.own.clock,
                **{replica: part.clock for replica, part in self.parts.items()}}

    def payload_for(self, known: Clock | None) -> dict[str, Any]:
        """What to send a peer whose clock of this replica is ``known``: nothing new (a
        heartbeat), the changes after it, or the whole own part."""
        payload: dict[str, Any] = {"replica": self.replica, "clock": self.own.clock}
        if known == self.own.clock:
            return payload
        if (known is not None and known[0] == self.own.incarnation
                and known[1] < self.own.version
                and self.log and self.log[0][0] <= known[1] + 1):
            payload["after"] = known[1]
            payload["ops"] = [op for version, op in self.log if version > known[1]]
        else:
            payload["full"] = list(self.own.entries.items())
        return payload

    def apply(self, payload: dict[str, Any]) -> Clock | None:
        """Merge a peer's payload; returns this state's clock of the sender now (what to
        acknowledge; None when the sender is down)."""
        sender: str = payload["replica"]
        incarnation, version = payload["clock"]
        if sender == self.replica or sender in self.down:
            return None
        part = self.parts.get(sender)
        if part is not None and incarnation < part.incarnation:
            return part.clock  # an older incarnation's message: stale
        if part is None or incarnation > part.incarnation:
            if part is not None:
                self._clear(part)  # the replica restarted: its old entries are stale
            part = self.parts[sender] = ReplicaPart(incarnation)
        if "full" in payload:
            entries = {_ref(ref): meta for ref, meta in payload["full"]}
            for ref in [r for r in part.entries if r not in entries]:
                self._set(part, ref, _MISSING)
            for ref, meta in entries.items():
                self._set(part, ref, meta)
            part.version = version
        elif "ops" in payload and part.version == payload["after"]:
            for op in payload["ops"]:
                self._set(part, _ref(op[1]), op[2] if op[0] == "join" else _MISSING)
            part.version = version
        return part.clock

    def _clear(self, part: ReplicaPart) -> None:
        for ref in list(part.entries):
            self._set(part, ref, _MISSING)

    def drop_replica(self, replica: str) -> None:
        """The replica's node is down: its entries leave, and it is ignored from now on."""
        if replica == self.replica:
            return
        self.down.add(replica)
        part = self.parts.pop(replica, None)
        if part is not None:
            self._clear(part)

    # ------------------------------------------------------------------ reads
    def entries(self) -> Iterable[tuple[Ref, Any]]:
        yield from self.own.entries.items()
        for part in self.parts.values():
            yield from part.entries.items()

    def list(self, topic: str) -> dict[str, list[Any]]:
        """``key -> metas`` of ``topic``, one meta per tracked process, ordered by pid."""
        found: dict[str, list[tuple[str, Any]]] = {}
        for (entry_topic, key, pid), meta in self.entries():
            if entry_topic == topic:
                found.setdefault(key, []).append((pid, meta))
        return {key: [meta for _, meta in sorted(metas, key=lambda m: m[0])]
                for key, metas in sorted(found.items())}

    def digest(self) -> set[tuple[Ref, str]]:
        """Every entry with its meta's repr: equal digests mean equal views."""
        return {(ref, repr(meta)) for ref, meta in self.entries()}

