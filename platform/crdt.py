"""State-based CRDTs (convergent replicated data types) for data replicated across regions.

Every type is a small value object: operations return a new object and never change the one
they are called on. ``merge(other)`` is commutative, associative and idempotent, so replicas that
exchange whole states in any order, any number of times, converge to the same state. ``value``
is what the application reads. ``to_dict()`` gives a JSON-safe dict tagged with the type's name;
``Type.from_dict(d)`` (or :func:`load` for any type) reads it back and raises ``ConfigError`` on
malformed input.

A replica id is a non-empty string and must be used by exactly one replica (one lineage of
states): two writers sharing an id break the uniqueness that counters and dots rely on.

Types:

* :class:`VectorClock` -- causality: ``compare`` gives ``"before" | "after" | "equal" |
  "concurrent"``.
* :class:`GCounter` / :class:`PNCounter` -- grow-only and increment/decrement counters.
* :class:`LWWRegister` -- last writer wins, ordered by :class:`Timestamp` (see below).
* :class:`ORSet` -- add-wins observed-remove set (the "ORSWOT" design of riak_dt: unique dots
  plus a version vector instead of tombstones).
* :class:`MVRegister` -- multi-value register: concurrent writes are all kept as siblings until a
  later write (which has seen them) replaces them.

LWW ordering: a :class:`Timestamp` is ``(wall_ms, counter, replica)`` compared in that order,
produced by a :class:`HybridClock` (a hybrid logical clock, Kulkarni et al. 2014). ``wall_ms``
follows physical time but never goes backwards, ``counter`` orders events within one
millisecond and after clock skew, and ``replica`` breaks the remaining ties, so every replica
picks the same winner. Should two writes ever carry the very same timestamp (a replica id reused),
the canonical JSON of the values decides, which keeps ``merge`` commutative.

Values held by registers are JSON values and are stored in their JSON form (a tuple becomes a
list, integer dict keys become strings), so a state equals itself after a ``to_dict`` round trip.
"""

from __future__ import annotations

import json
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeVar

from herd.platform.errors import ConfigError

Ordering = Literal["before", "after", "equal", "concurrent"]
Element = str | int
Dot = tuple[str, int]

SOURCE = "crdt"

C = TypeVar("C", bound="CRDT")


# ------------------------------------------------------------------------------ validation

def _replica(replica: Any, field: str = "replica") -> str:
    if not isinstance(replica, str) or not replica:
        raise ConfigError("replica id must be a non-empty string", source=SOURCE, field=field,
                          value=replica)
    return replica


def _count(value: Any, field: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"must be an integer >= {minimum}", source=SOURCE, field=field,
                          value=value)
    return value


def _counts(mapping: Any, field: str) -> dict[str, int]:
    """Validated replica -> count map with zero entries dropped (``{a: 0}`` equals ``{}``)."""
    if not isinstance(mapping, Mapping):
        raise ConfigError("must be a mapping of replica id to count", source=SOURCE,
                          field=field, value=mapping)
    checked = {_replica(r, f"{field}.{r}"): _count(n, f"{field}.{r}") for r, n in mapping.items()}
    return {r: n for r, n in checked.items() if n}


def _canonical(value: Any, field: str = "value") -> str:
    """Canonical JSON text of ``value``; ConfigError when it is not a JSON value."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"must be a JSON value ({exc})", source=SOURCE, field=field,
                          value=value) from exc


def _json_value(value: Any, field: str = "value") -> Any:
    """``value`` in its JSON form (the form it has after a serialisation round trip)."""
    return json.loads(_canonical(value, field))


def _element(element: Any, field: str = "element") -> Element:
    if isinstance(element, bool) or not isinstance(element, (str, int)):
        raise ConfigError("set elements must be strings or integers", source=SOURCE,
                          field=field, value=element)
    return element


def _field(data: Mapping[str, Any], name: str, type_name: str) -> Any:
    if name not in data:
        raise ConfigError("missing field", source=type_name, field=name, value=None)
    return data[name]


# ------------------------------------------------------------------------------ base class

class CRDT(ABC):
    """A state-based CRDT. Subclasses register themselves for :func:`load` by ``TYPE``."""

    TYPE: ClassVar[str]
    _types: ClassVar[dict[str, type[CRDT]]] = {}
    __slots__ = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.TYPE = cls.__name__
        CRDT._types[cls.TYPE] = cls

    @abstractmethod
    def merge(self: C, other: C) -> C:
        """The least upper bound of both states."""

    @property
    @abstractmethod
    def value(self) -> Any:
        """What the application reads."""

    @abstractmethod
    def _state(self) -> dict[str, Any]:
        """JSON-safe state without the type tag."""

    @classmethod
    @abstractmethod
    def _from_state(cls: type[C], data: Mapping[str, Any]) -> C:
        """Inverse of ``_state``; validates."""

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.TYPE, **self._state()}

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any]) -> C:
        if not isinstance(data, Mapping):
            raise ConfigError("must be a mapping", source=cls.__name__, field="data", value=data)
        if data.get("type") != cls.TYPE:
            raise ConfigError(f"expected type {cls.TYPE!r}", source=cls.__name__, field="type",
                              value=data.get("type"))
        return cls._from_state(data)

    def _check_same_type(self, other: Any) -> None:
        if type(other) is not type(self):
            raise ConfigError(f"cannot merge {type(self).__name__} with {type(other).__name__}",
                              source=SOURCE, field="other", value=type(other).__name__)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CRDT) and type(other) is type(self) \
            and self._key() == other._key()

    def __hash__(self) -> int:
        return hash((self.TYPE, self._key()))

    def _key(self) -> str:
        return json.dumps(self._state(), sort_keys=True)

    def __repr__(self) -> str:
        return f"{self.TYPE}({self._state()!r})"


def load(data: Mapping[str, Any]) -> CRDT:
    """Any CRDT from its ``to_dict()`` form, dispatched on the ``type`` tag."""
    type_name = data.get("type") if isinstance(data, Mapping) else None
    cls = CRDT._types.get(type_name) if isinstance(type_name, str) else None
    if cls is None:
        raise ConfigError(f"unknown CRDT type (known: {sorted(CRDT._types)})", source=SOURCE,
                          field="type", value=type_name)
    return cls.from_dict(data)


# ------------------------------------------------------------------------------ vector clock

class VectorClock(CRDT):
    """Replica id -> number of events seen from it. Missing entries are zero."""

    __slots__ = ("_clock",)

    def __init__(self, clock: Mapping[str, int] | None = None) -> None:
        self._clock = _counts(clock or {}, "clock")

    def get(self, replica: str) -> int:
        return self._clock.get(replica, 0)

    @property
    def value(self) -> dict[str, int]:
        return dict(self._clock)

    def increment(self, replica: str) -> VectorClock:
        _replica(replica)
        return VectorClock({**self._clock, replica: self.get(replica) + 1})

    def merge(self, other: VectorClock) -> VectorClock:
        self._check_same_type(other)
        return VectorClock({r: max(self.get(r), other.get(r))
                            for r in self._clock.keys() | other._clock.keys()})

    def descends(self, other: VectorClock) -> bool:
        """True when this clock has seen every event ``other`` has (``self >= other``)."""
        return all(self.get(r) >= n for r, n in other._clock.items())

    def compare(self, other: VectorClock) -> Ordering:
        """``"before"`` when ``self`` happened before ``other``, ``"after"`` when after,
        ``"equal"``, or ``"concurrent"`` when neither has seen all the other's events."""
        self._check_same_type(other)
        ge, le = self.descends(other), other.descends(self)
        if ge and le:
            return "equal"
        if le:
            return "before"
        if ge:
            return "after"
        return "concurrent"

    def _state(self) -> dict[str, Any]:
        return {"clock": dict(sorted(self._clock.items()))}

    @classmethod
    def _from_state(cls, data: Mapping[str, Any]) -> VectorClock:
        return cls(_field(data, "clock", cls.__name__))


# ------------------------------------------------------------------------------ counters

class GCounter(CRDT):
    """Grow-only counter: one monotonic count per replica, merged by maximum."""

    __slots__ = ("_counts",)

    def __init__(self, counts: Mapping[str, int] | None = None) -> None:
        self._counts = _counts(counts or {}, "counts")

    @property
    def value(self) -> int:
        return sum(self._counts.values())

    @property
    def counts(self) -> dict[str, int]:
        return dict(self._counts)

    def increment(self, replica: str, amount: int = 1) -> GCounter:
        _replica(replica)
        _count(amount, "amount", minimum=1)
        return GCounter({**self._counts, replica: self._counts.get(replica, 0) + amount})

    def merge(self, other: GCounter) -> GCounter:
        self._check_same_type(other)
        return GCounter({r: max(self._counts.get(r, 0), other._counts.get(r, 0))
                         for r in self._counts.keys() | other._counts.keys()})

    def _state(self) -> dict[str, Any]:
        return {"counts": dict(sorted(self._counts.items()))}

    @classmethod
    def _from_state(cls, data: Mapping[str, Any]) -> GCounter:
        return cls(_field(data, "counts", cls.__name__))


class PNCounter(CRDT):
    """Counter with increments and decrements: two G-counters, ``value = P - N``."""

    __slots__ = ("_p", "_n")

    def __init__(self, p: GCounter | None = None, n: GCounter | None = None) -> None:
        self._p = p or GCounter()
        self._n = n or GCounter()

    @property
    def value(self) -> int:
        return self._p.value - self._n.value

    def increment(self, replica: str, amount: int = 1) -> PNCounter:
        return PNCounter(self._p.increment(replica, amount), self._n)

    def decrement(self, replica: str, amount: int = 1) -> PNCounter:
        return PNCounter(self._p, self._n.increment(replica, amount))

    def merge(self, other: PNCounter) -> PNCounter:
        self._check_same_type(other)
        return PNCounter(self._p.merge(other._p), self._n.merge(other._n))

    def _state(self) -> dict[str, Any]:
        return {"p": self._p._state()["counts"], "n": self._n._state()["counts"]}

    @classmethod
    def _from_state(cls, data: Mapping[str, Any]) -> PNCounter:
        return cls(GCounter(_field(data, "p", cls.__name__)),
                   GCounter(_field(data, "n", cls.__name__)))


# ------------------------------------------------------------------------------ LWW register

@dataclass(frozen=True, order=True)
class Timestamp:
    """A hybrid-logical-clock timestamp, totally ordered by ``(wall_ms, counter, replica)``."""

    wall_ms: int
    counter: int
    replica: str

    def __post_init__(self) -> None:
        _count(self.wall_ms, "timestamp.wall_ms")
        _count(self.counter, "timestamp.counter")
        _replica(self.replica, "timestamp.replica")

    def to_list(self) -> list[Any]:
        return [self.wall_ms, self.counter, self.replica]

    @classmethod
    def from_list(cls, data: Any) -> Timestamp:
        if not isinstance(data, (list, tuple)) or len(data) != 3:
            raise ConfigError("must be [wall_ms, counter, replica]", source=SOURCE,
                              field="timestamp", value=data)
        return cls(*data)


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class HybridClock:
    """A hybrid logical clock for one replica (mutable, thread-safe).

    ``now()`` stamps a local event or a send; ``observe(ts)`` folds in a timestamp received from
    another replica so that later local stamps order after it even when the sender's wall clock
    runs ahead. Stamps of one clock strictly increase even if physical time goes backwards.
    """

    def __init__(self, replica: str, now_ms: Callable[[], int] = _wall_ms) -> None:
        self.replica = _replica(replica)
        self._now_ms = now_ms
        self._lock = threading.Lock()
        self._wall = 0
        self._counter = 0

    def now(self) -> Timestamp:
        with self._lock:
            physical = self._now_ms()
            if physical > self._wall:
                self._wall, self._counter = physical, 0
            else:
                self._counter += 1
            return Timestamp(self._wall, self._counter, self.replica)

    def observe(self, received: Timestamp) -> Timestamp:
        with self._lock:
            physical = self._now_ms()
            wall = max(self._wall, received.wall_ms, physical)
            if wall == self._wall == received.wall_ms:
                counter = max(self._counter, received.counter) + 1
            elif wall == self._wall:
                counter = self._counter + 1
            elif wall == received.wall_ms:
                counter = received.counter + 1
            else:
                counter = 0
            self._wall, self._counter = wall, counter
            return Timestamp(wall, counter, self.replica)


class LWWRegister(CRDT):
    """Last-writer-wins register: the write with the greatest :class:`Timestamp` wins."""

    __slots__ = ("_value", "_timestamp")

    def __init__(self, value: Any = None, timestamp: Timestamp | None = None) -> None:
        if timestamp is None and value is not None:
            raise ConfigError("a value needs a timestamp", source=SOURCE, field="timestamp",
                              value=None)
        if timestamp is not None and not isinstance(timestamp, Timestamp):
            raise ConfigError("must be a Timestamp", source=SOURCE, field="timestamp",
                              value=timestamp)
        self._value = _json_value(value)
        self._timestamp = timestamp

    @property
    def value(self) -> Any:
        return self._value

    @property
    def timestamp(self) -> Timestamp | None:
        return self._timestamp

    def assign(self, value: Any, timestamp: Timestamp) -> LWWRegister:
        """Write ``value`` at ``timestamp`` (e.g. ``clock.now()``); an older write loses."""
        return self.merge(LWWRegister(value, timestamp))

    def _rank(self) -> tuple[Timestamp, str]:
        assert self._timestamp is not None
        return self._timestamp, _canonical(self._value)

    def merge(self, other: LWWRegister) -> LWWRegister:
        self._check_same_type(other)
        if other._timestamp is None:
            return self
        if self._timestamp is None:
            return other
        return self if self._rank() >= other._rank() else other

    def _state(self) -> dict[str, Any]:
        return {"value": self._value,
                "timestamp": None if self._timestamp is None else self._timestamp.to_list()}

    @classmethod
    def _from_state(cls, data: Mapping[str, Any]) -> LWWRegister:
        raw = _field(data, "timestamp", cls.__name__)
        return cls(_field(data, "value", cls.__name__),
                   None if raw is None else Timestamp.from_list(raw))


# ------------------------------------------------------------------------------ OR-set

class ORSet(CRDT):
    """Add-wins observed-remove set.

    Each add tags the element with a unique dot ``(replica, n)``; a remove drops the dots it has
    observed. The version vector ``clock`` records every dot a state has seen, so on merge a dot
    missing from one side was removed there if that side's clock covers it, and is new otherwise.
    An add concurrent with a remove of the same element therefore survives (add wins).
    """

    __slots__ = ("_entries", "_clock")

    def __init__(self, entries: Mapping[Element, Iterable[Dot]] | None = None,
                 clock: VectorClock | None = None) -> None:
        self._clock = clock or VectorClock()
        self._entries: dict[Element, frozenset[Dot]] = {}
        for element, dots in (entries or {}).items():
            checked = frozenset((_replica(r, "dot.replica"), _count(n, "dot.counter", 1))
                                for r, n in dots)
            if not checked:
                continue
            uncovered = [d for d in checked if self._clock.get(d[0]) < d[1]]
            if uncovered:
                raise ConfigError("dot not covered by the clock", source=SOURCE, field="entries",
                                  value=uncovered)
            self._entries[_element(element)] = checked

    @property
    def value(self) -> frozenset[Element]:
        return frozenset(self._entries)

    @property
    def clock(self) -> VectorClock:
        return self._clock

    def __contains__(self, element: object) -> bool:
        return element in self._entries

    def add(self, replica: str, element: Element) -> ORSet:
        _element(element)
        clock = self._clock.increment(replica)
        return ORSet({**self._entries, element: [(replica, clock.get(replica))]}, clock)

    def remove(self, element: Element) -> ORSet:
        """Remove the element as observed here (a no-op when it is absent)."""
        _element(element)
        return ORSet({e: d for e, d in self._entries.items() if e != element}, self._clock)

    def merge(self, other: ORSet) -> ORSet:
        self._check_same_type(other)
        merged: dict[Element, set[Dot]] = {}
        for element in self._entries.keys() | other._entries.keys():
            mine = self._entries.get(element, frozenset())
            theirs = other._entries.get(element, frozenset())
            dots = (mine & theirs) \
                | {d for d in mine - theirs if other._clock.get(d[0]) < d[1]} \
                | {d for d in theirs - mine if self._clock.get(d[0]) < d[1]}
            if dots:
                merged[element] = dots
        return ORSet(merged, self._clock.merge(other._clock))

    def _state(self) -> dict[str, Any]:
        entries = sorted(self._entries.items(), key=lambda kv: _canonical(kv[0]))
        return {"clock": self._clock._state()["clock"],
                "entries": [[e, [list(d) for d in sorted(dots)]] for e, dots in entries]}

    @classmethod
    def _from_state(cls, data: Mapping[str, Any]) -> ORSet:
        raw = _field(data, "entries", cls.__name__)
        if not isinstance(raw, list) or not all(
                isinstance(item, list) and len(item) == 2 and isinstance(item[1], list)
                and all(isinstance(d, list) and len(d) == 2 for d in item[1]) for item in raw):
            raise ConfigError("must be a list of [element, [[replica, n], ...]]",
                              source=cls.__name__, field="entries", value=raw)
        return cls({e: [tuple(d) for d in dots] for e, dots in raw},  # type: ignore[misc]
                   VectorClock(_field(data, "clock", cls.__name__)))


# ------------------------------------------------------------------------------ MV register

class MVRegister(CRDT):
    """Multi-value register: keeps every write not causally overwritten by another.

    Each sibling is ``(value, clock)``. ``assign`` writes with a clock that descends from all
    siblings, replacing them; merge keeps the siblings of both sides that no other sibling's clock
    dominates. ``value`` lists the concurrent values (one after a quiet period).
    """

    __slots__ = ("_siblings",)

    def __init__(self, siblings: Iterable[tuple[Any, VectorClock]] = ()) -> None:
        unique: dict[tuple[str, str], tuple[Any, VectorClock]] = {}
        for value, clock in siblings:
            if not isinstance(clock, VectorClock):
                raise ConfigError("must be a VectorClock", source=SOURCE, field="clock",
                                  value=clock)
            unique[(_canonical(value), clock._key())] = (_json_value(value), clock)
        kept = [s for s in unique.values()
                if not any(s[1].compare(o[1]) == "before" for o in unique.values())]
        self._siblings = tuple(sorted(kept, key=lambda s: (_canonical(s[0]), s[1]._key())))

    @property
    def value(self) -> list[Any]:
        return [value for value, _ in self._siblings]

    @property
    def clock(self) -> VectorClock:
        """The merge of the siblings' clocks: everything this state has seen."""
        merged = VectorClock()
        for _, clock in self._siblings:
            merged = merged.merge(clock)
        return merged

    def assign(self, replica: str, value: Any) -> MVRegister:
        return MVRegister([(value, self.clock.increment(replica))])

    def merge(self, other: MVRegister) -> MVRegister:
        self._check_same_type(other)
        return MVRegister(self._siblings + other._siblings)

    def _state(self) -> dict[str, Any]:
        return {"siblings": [[value, clock._state()["clock"]] for value, clock in self._siblings]}

    @classmethod
    def _from_state(cls, data: Mapping[str, Any]) -> MVRegister:
        raw = _field(data, "siblings", cls.__name__)
        if not isinstance(raw, list) or not all(
                isinstance(item, list) and len(item) == 2 for item in raw):
            raise ConfigError("must be a list of [value, clock]", source=cls.__name__,
                              field="siblings", value=raw)
        return cls([(value, VectorClock(clock)) for value, clock in raw])
