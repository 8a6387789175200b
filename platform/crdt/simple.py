"""The CRDTs without causal context: counters (:class:`GCounter`, :class:`PNCounter`), sets
(:class:`GSet`, :class:`TwoPSet`) and the last-writer-wins :class:`LWWRegister`."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from herd.platform.clocks import HLCTimestamp, HybridLogicalClock
from herd.platform.crdt.base import (
    CRDT,
    SOURCE,
    Json,
    Key,
    canonical,
    check_counts,
    check_int,
    check_key,
    check_list,
    join_counts,
    key_order,
    require,
)
from herd.platform.errors import ConfigError

__all__ = ["GCounter", "PNCounter", "GSet", "TwoPSet", "LWWRegister"]


# ------------------------------------------------------------------------------ counters

class GCounter(CRDT):
    """Grow-only counter: one monotonic count per replica, joined by maximum."""

    __slots__ = ("_counts",)

    def __init__(self, replica: str | None = None) -> None:
        self._bind(replica)
        self._counts: dict[str, int] = {}

    def value(self) -> int:
        return sum(self._counts.values())

    def increment(self, amount: int = 1) -> GCounter:
        """Add ``amount`` (>= 1) under this replica's id; the delta is that replica's entry."""
        replica = self._writer()
        check_int(amount, "amount", 1)
        return self._commit(_gcounter({replica: self._counts.get(replica, 0) + amount}))

    def merge(self, other: GCounter) -> GCounter:
        self._check_mergeable(other)
        join_counts(self._counts, other._counts)
        return self

    def _clone(self) -> GCounter:
        return _gcounter(self._counts)

    def _state(self) -> Any:
        return self._counts

    def _encode(self) -> dict[str, Any]:
        return {"counts": dict(sorted(self._counts.items()))}

    @classmethod
    def _decode(cls, data: Mapping[str, Any]) -> GCounter:
        return _gcounter(check_counts(require(data, "counts"), "counts"))


def _gcounter(counts: Mapping[str, int]) -> GCounter:
    state = GCounter()
    state._counts.update(counts)
    return state


class PNCounter(CRDT):
    """Counter with increments and decrements: two grow-only maps, ``value = sum P - sum N``."""

    __slots__ = ("_p", "_n")

    def __init__(self, replica: str | None = None) -> None:
        self._bind(replica)
        self._p: dict[str, int] = {}
        self._n: dict[str, int] = {}

    def value(self) -> int:
        return sum(self._p.values()) - sum(self._n.values())

    def increment(self, amount: int = 1) -> PNCounter:
        """Add ``amount`` (>= 1); the delta holds only this replica's P entry."""
        replica = self._writer()
        check_int(amount, "amount", 1)
        return self._commit(_pncounter({replica: self._p.get(replica, 0) + amount}, {}))

    def decrement(self, amount: int = 1) -> PNCounter:
        """Subtract ``amount`` (>= 1); the delta holds only this replica's N entry."""
        replica = self._writer()
        check_int(amount, "amount", 1)
        return self._commit(_pncounter({}, {replica: self._n.get(replica, 0) + amount}))

    def merge(self, other: PNCounter) -> PNCounter:
        self._check_mergeable(other)
        join_counts(self._p, other._p)
        join_counts(self._n, other._n)
        return self

    def _clone(self) -> PNCounter:
        return _pncounter(self._p, self._n)

    def _state(self) -> Any:
        return self._p, self._n

    def _encode(self) -> dict[str, Any]:
        return {"p": dict(sorted(self._p.items())), "n": dict(sorted(self._n.items()))}

    @classmethod
    def _decode(cls, data: Mapping[str, Any]) -> PNCounter:
        return _pncounter(check_counts(require(data, "p"), "p"),
                          check_counts(require(data, "n"), "n"))


def _pncounter(p: Mapping[str, int], n: Mapping[str, int]) -> PNCounter:
    state = PNCounter()
    state._p.update(p)
    state._n.update(n)
    return state


# ------------------------------------------------------------------------------ G-set, 2P-set

def _decode_keys(data: Any, field: str) -> set[Key]:
    return {check_key(k, f"{field}[{i}]") for i, k in enumerate(check_list(data, field))}


class GSet(CRDT):
    """Grow-only set: elements are only ever added; join is union. Its mutations mint nothing,
    so they need no replica id (one is accepted, like every type's)."""

    __slots__ = ("_elements",)

    def __init__(self, replica: str | None = None) -> None:
        self._bind(replica)
        self._elements: set[Key] = set()

    def value(self) -> frozenset[Key]:
        return frozenset(self._elements)

    def contains(self, element: Key) -> bool:
        return element in self._elements

    def add(self, element: Key) -> GSet:
        """Add ``element``; the delta is the singleton set."""
        return self._commit(_gset({check_key(element, "element")}))

    def merge(self, other: GSet) -> GSet:
        self._check_mergeable(other)
        self._elements |= other._elements
        return self

    def _clone(self) -> GSet:
        return _gset(self._elements)

    def _state(self) -> Any:
        return self._elements

    def _encode(self) -> dict[str, Any]:
        return {"elements": sorted(self._elements, key=key_order)}

    @classmethod
    def _decode(cls, data: Mapping[str, Any]) -> GSet:
        return _gset(_decode_keys(require(data, "elements"), "elements"))


def _gset(elements: Iterable[Key]) -> GSet:
    state = GSet()
    state._elements.update(elements)
    return state


class TwoPSet(CRDT):
    """Two-phase set: a grow-only set of adds and one of removes (tombstones).

    An element is present when added and not removed; once removed it can never come back.
    ``remove`` tombstones the element even when this replica has not seen it added (the add may
    be in flight from another replica): the remove wins over every add of that element, past or
    future, which is the 2P-Set contract. Use :class:`ORSet` when elements must be re-addable.
    Like GSet it needs no replica id.
    """

    __slots__ = ("_added", "_removed")

    def __init__(self, replica: str | None = None) -> None:
        self._bind(replica)
        self._added: set[Key] = set()
        self._removed: set[Key] = set()

    def value(self) -> frozenset[Key]:
        return frozenset(self._added - self._removed)

    def contains(self, element: Key) -> bool:
        return element in self._added and element not in self._removed

    def add(self, element: Key) -> TwoPSet:
        """Add ``element`` (no visible effect when it was removed before)."""
        return self._commit(_twopset({check_key(element, "element")}, ()))

    def remove(self, element: Key) -> TwoPSet:
        """Tombstone ``element`` for good."""
        return self._commit(_twopset((), {check_key(element, "element")}))

    def merge(self, other: TwoPSet) -> TwoPSet:
        self._check_mergeable(other)
        self._added |= other._added
        self._removed |= other._removed
        return self

    def _clone(self) -> TwoPSet:
        return _twopset(self._added, self._removed)

    def _state(self) -> Any:
        return self._added, self._removed

    def _encode(self) -> dict[str, Any]:
        return {"added": sorted(self._added, key=key_order),
                "removed": sorted(self._removed, key=key_order)}

    @classmethod
    def _decode(cls, data: Mapping[str, Any]) -> TwoPSet:
        return _twopset(_decode_keys(require(data, "added"), "added"),
                        _decode_keys(require(data, "removed"), "removed"))


def _twopset(added: Iterable[Key], removed: Iterable[Key]) -> TwoPSet:
    state = TwoPSet()
    state._added.update(added)
    state._removed.update(removed)
    return state


# ------------------------------------------------------------------------------ LWW register

class LWWRegister(CRDT):
    """Last-writer-wins register: the write with the greatest HLC timestamp wins.

    ``HLCTimestamp`` is totally ordered by ``(wall_ms, logical, replica)``, so writes of
    different replicas never tie. Two writes with the very same timestamp (a replica id reused)
    are ordered by the canonical JSON of their values, which keeps ``merge`` commutative. The
    delta of ``set`` is a register holding just that write.

    ``set(value)`` stamps the write with the replica's
    :class:`~herd.platform.clocks.HybridLogicalClock` (``clock=``, or one made for the replica
    id), after feeding it the current winner's timestamp, so a local write always orders after
    the writes this replica has seen. ``set(value, at)`` takes an explicit timestamp or clock.
    """

    __slots__ = ("_timestamp", "_text")

    def __init__(self, replica: str | None = None, *,
                 clock: HybridLogicalClock | None = None) -> None:
        self._bind(replica, clock)
        self._timestamp: HLCTimestamp | None = None
        self._text = "null"

    def value(self) -> Json:
        """The winning value (None before the first write)."""
        return json.loads(self._text)

    @property
    def timestamp(self) -> HLCTimestamp | None:
        """The winning write's timestamp (None before the first write)."""
        return self._timestamp

    def set(self, value: Json,
            at: HLCTimestamp | HybridLogicalClock | None = None) -> LWWRegister:
        """Write ``value``, stamped by this replica's clock (``at=None``), by the clock ``at``
        or at the timestamp ``at``. A write older than the current one (explicit timestamps
        only) is a no-op on this replica, and its delta loses everywhere. ClockSkewError when
        the current winner is further ahead of local time than the clock accepts."""
        text = canonical(value)
        return self._commit(_lww(self._stamp(at, self._timestamp), text))

    def merge(self, other: LWWRegister) -> LWWRegister:
        self._check_mergeable(other)
        if other._timestamp is not None and (
                self._timestamp is None
                or (other._timestamp, other._text) > (self._timestamp, self._text)):
            self._timestamp, self._text = other._timestamp, other._text
        return self

    def _clone(self) -> LWWRegister:
        return _lww(self._timestamp, self._text)

    def _state(self) -> Any:
        return self._timestamp, self._text

    def _encode(self) -> dict[str, Any]:
        ts = self._timestamp
        return {"timestamp": None if ts is None else [ts.wall_ms, ts.logical, ts.replica],
                "value": self.value()}

    @classmethod
    def _decode(cls, data: Mapping[str, Any]) -> LWWRegister:
        raw_ts, value = require(data, "timestamp"), require(data, "value")
        if raw_ts is None:
            if value is not None:
                raise ConfigError("a value needs a timestamp", source=SOURCE,
                                  field="timestamp", value=None)
            return cls()
        return _lww(HLCTimestamp(*check_list(raw_ts, "timestamp", 3)), canonical(value))


def _lww(timestamp: HLCTimestamp | None, text: str) -> LWWRegister:
    state = LWWRegister()
    state._timestamp, state._text = timestamp, text
    return state
