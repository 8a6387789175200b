"""Delta-state CRDTs (Almeida, Shoker, Baquero, "Delta State Replicated Data Types", 2016).

A CRDT state is a point of a join-semilattice: ``merge`` (join) is commutative, associative and
idempotent, so replicas that exchange states in any order, any number of times, converge. A
delta-state CRDT also has *delta mutators*: an operation yields a small state of the same type,
the delta, such that applying the operation equals joining the delta (``X.op() == X ⊔ δ``).
Shipping deltas instead of full states keeps replication traffic proportional to the change.

Style (one for every type): objects are mutable replicas. A mutator such as ``s.add(replica, x)``
changes ``s`` and returns the delta, itself an instance of the same type. ``s.merge(other)``
joins ``other`` (a full state or a delta, it makes no difference) into ``s`` in place and
returns ``s``; ``s.copy()`` is an independent replica. ``value()`` is what the application reads.
States compare equal when their lattice states are equal; they are mutable, so unhashable, and
not thread-safe (guard a replica shared between threads with a lock).

Serialisation: ``to_dict()`` gives a JSON-safe dict tagged ``{"type": "ORSet", "v": 1, ...}``;
``to_bytes()`` is its compact UTF-8 JSON. ``Type.from_dict`` / ``Type.from_bytes`` and the
module-level :func:`load` / :func:`loads` (dispatching on the tag) read them back, raising
``ConfigError`` on a wrong tag, an unknown version or malformed content. Pickling goes through
``to_bytes`` too, so pickles (e.g. Ray's) are versioned and validated.

Types: :class:`GCounter`, :class:`PNCounter` (the delta of an increment is that replica's entry);
:class:`GSet`, :class:`TwoPSet`; and the causal types :class:`ORSet`, :class:`MVRegister`,
:class:`ORMap`, :class:`AWLWWMap`, built as in the paper from a *dot store* plus a
:class:`CausalContext`. A dot ``(replica, n)`` names the n-th event of a replica. The causal
context is the set of dots a state has seen, kept as a version vector plus a "dot cloud" of
dots beyond the contiguous prefix (compacted into the vector as gaps fill). A dot seen by the
context but absent from the store was removed, so the types need no tombstones. Stores:
DotSet (a set of dots), DotFun (dot -> value), DotMap (key -> dot store). ORSet is
DotMap[element, DotSet], MVRegister DotFun[value], AWLWWMap DotMap[key, DotFun[(HLC, value)]],
ORMap DotMap[key, store of the nested type], the nested values sharing the map's context.
:class:`LWWRegister` orders writes by :class:`~herd.platform.clocks.HLCTimestamp`.

Causal delta-merging condition (Almeida et al. §4): a delta-interval Δ(i, a..b) (the join of the
deltas replica i produced between its states a and b) should be joined into a state X(j) only
when X(j) already includes X(i, a), the origin's state where the interval starts. Under that
condition every state a replica passes through is causally consistent (nothing is visible before
its causes: e.g. an element added after observing another add is never seen without it). Merging
out of order is still *convergent* here, because every causal context records exact dots (the
cloud): joining any set of deltas and states in any order, with duplicates, gives the join of all
of them. A replication layer must therefore guarantee, per origin, FIFO delivery of delta-
intervals without gaps (re-sending the interval since the receiver's last acknowledgement), and
fall back to shipping the full state when it cannot (lost history, new or long-absent peer).
Merging a full state is always safe.

Replica ids are non-empty strings, each used by exactly one replica (one lineage of states):
two writers sharing an id would mint the same dots and counter entries.

Values held by registers and maps are JSON values, kept in canonical JSON text (sorted keys,
no whitespace), so they round-trip exactly and compare deterministically; ``value()`` decodes
fresh copies. Tuples become lists and non-string object keys become strings, as in JSON. Set
elements and map keys are strings or integers.
"""

from __future__ import annotations

import functools
import json
import reprlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from herd.platform.clocks import HLCTimestamp, HybridLogicalClock
from herd.platform.errors import ConfigError

__all__ = ["CRDT", "CausalContext", "GCounter", "PNCounter", "GSet", "TwoPSet", "ORSet",
           "LWWRegister", "MVRegister", "ORMap", "AWLWWMap", "Dot", "Key", "load", "loads"]

SOURCE = "crdt"
VERSION = 1
MAX_NESTING = 16

Key = str | int
Dot = tuple[str, int]
Json = Any
S = TypeVar("S")
C = TypeVar("C", bound="CRDT")


# ------------------------------------------------------------------------------ validation

def _replica(replica: Any, field: str = "replica") -> str:
    if not isinstance(replica, str) or not replica:
        raise ConfigError("replica id must be a non-empty string", source=SOURCE, field=field,
                          value=replica)
    return replica


def _int(value: Any, field: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"must be an integer >= {minimum}", source=SOURCE, field=field,
                          value=value)
    return value


def _key(key: Any, field: str = "key") -> Key:
    if isinstance(key, bool) or not isinstance(key, (str, int)):
        raise ConfigError("set elements and map keys must be strings or integers",
                          source=SOURCE, field=field, value=key)
    return key


def _key_order(key: Key) -> tuple[bool, Key]:
    """Sort key for mixed str/int keys: integers first, then strings."""
    return isinstance(key, str), key


def _canonical(value: Any, field: str = "value") -> str:
    """Canonical JSON text of ``value``; ConfigError when it is not a JSON value."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"must be a JSON value ({exc})", source=SOURCE, field=field,
                          value=value) from exc


def _list(data: Any, field: str, length: int | None = None) -> list[Any]:
    if not isinstance(data, list) or (length is not None and len(data) != length):
        shape = "a list" if length is None else f"a list of {length} items"
        raise ConfigError(f"must be {shape}", source=SOURCE, field=field, value=data)
    return data


def _mapping(data: Any, field: str) -> Mapping[Any, Any]:
    if not isinstance(data, Mapping):
        raise ConfigError("must be a mapping", source=SOURCE, field=field, value=data)
    return data


def _require(data: Mapping[str, Any], name: str) -> Any:
    if name not in data:
        raise ConfigError("missing field", source=SOURCE, field=name, value=None)
    return data[name]


def _counts(data: Any, field: str) -> dict[str, int]:
    """Validated replica -> count map with zero entries dropped (``{a: 0}`` equals ``{}``)."""
    checked = {_replica(r, f"{field}.{r}"): _int(n, f"{field}.{r}", 0)
               for r, n in _mapping(data, field).items()}
    return {r: n for r, n in checked.items() if n}


def _dot(data: Any, field: str) -> Dot:
    replica, counter = _list(list(data) if isinstance(data, tuple) else data, field, 2)
    return _replica(replica, field), _int(counter, field, 1)


def _timestamp(at: Any, field: str = "at") -> HLCTimestamp:
    """A timestamp given directly, or the next one of a hybrid logical clock."""
    if isinstance(at, HybridLogicalClock):
        return at.now()
    if not isinstance(at, HLCTimestamp):
        raise ConfigError("must be an HLCTimestamp or a HybridLogicalClock", source=SOURCE,
                          field=field, value=at)
    return at


def _json_bytes(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":"), allow_nan=False).encode()


# ------------------------------------------------------------------------------ base class

class CRDT(ABC):
    """A delta-state CRDT replica. Concrete subclasses register for :func:`load` by ``TYPE``."""

    TYPE: ClassVar[str]
    _types: ClassVar[dict[str, type[CRDT]]] = {}
    __slots__ = ("_journal",)
    __hash__ = None  # type: ignore[assignment]  # mutable replicas

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__name__.startswith("_"):
            cls.TYPE = cls.__name__
            CRDT._types[cls.TYPE] = cls

    @abstractmethod
    def value(self) -> Any:
        """What the application reads."""

    @abstractmethod
    def merge(self: C, other: C) -> C:
        """Join ``other`` (a full state or a delta) into this replica; returns ``self``."""

    @abstractmethod
    def copy(self: C) -> C:
        """An independent replica with the same state."""

    @abstractmethod
    def _encode(self) -> dict[str, Any]:
        """The JSON-safe state without the type tag and version."""

    @classmethod
    @abstractmethod
    def _decode(cls: type[C], data: Mapping[str, Any]) -> C:
        """Inverse of ``_encode``; validates."""

    @abstractmethod
    def _state(self) -> Any:
        """The lattice state, compared by ``==``."""

    def to_dict(self) -> dict[str, Any]:
        """``{"type": ..., "v": 1, ...}``, JSON-safe and deterministic."""
        return {"type": self.TYPE, "v": VERSION, **self._encode()}

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any]) -> C:
        """Inverse of :meth:`to_dict`; ConfigError on a wrong tag, version or content."""
        _mapping(data, "data")
        if data.get("type") != cls.TYPE:
            raise ConfigError(f"expected type {cls.TYPE!r}", source=SOURCE, field="type",
                              value=data.get("type"))
        version = _require(data, "v")
        if isinstance(version, bool) or version != VERSION:
            raise ConfigError(f"unsupported version (supported: {VERSION})", source=SOURCE,
                              field="v", value=version)
        return cls._decode(data)

    def to_bytes(self) -> bytes:
        """Compact UTF-8 JSON of :meth:`to_dict`."""
        return _json_bytes(self.to_dict())

    @classmethod
    def from_bytes(cls: type[C], raw: bytes) -> C:
        """Inverse of :meth:`to_bytes`."""
        return cls.from_dict(_parse_bytes(raw))

    def _commit(self: C, delta: C) -> C:
        """Apply a mutator's delta to this replica (``X ⊔ δ``), record it, and return it."""
        self.merge(delta)
        if self._journal is not None:
            self._journal.append(delta)
        return delta

    def _check_mergeable(self, other: Any) -> None:
        if type(other) is not type(self):
            raise ConfigError(f"cannot merge {type(self).__name__} with {type(other).__name__}",
                              source=SOURCE, field="other", value=type(other).__name__)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, CRDT)
        return self._state() == other._state()

    def __repr__(self) -> str:
        return f"{self.TYPE}({reprlib.repr(self.value())})"

    def __reduce__(self) -> tuple[Callable[[bytes], CRDT], tuple[bytes]]:
        return loads, (self.to_bytes(),)


def _parse_bytes(raw: Any) -> Any:
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise ConfigError("must be bytes", source=SOURCE, field="raw", value=type(raw).__name__)
    try:
        return json.loads(bytes(raw).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"not UTF-8 JSON ({exc})", source=SOURCE, field="raw",
                          value=bytes(raw[:64])) from exc


def load(data: Mapping[str, Any]) -> CRDT:
    """Any CRDT from its ``to_dict()`` form, dispatched on the ``type`` tag."""
    type_name = data.get("type") if isinstance(data, Mapping) else None
    cls = CRDT._types.get(type_name) if isinstance(type_name, str) else None
    if cls is None:
        raise ConfigError(f"unknown CRDT type (known: {sorted(CRDT._types)})", source=SOURCE,
                          field="type", value=type_name)
    return cls.from_dict(data)


def loads(raw: bytes) -> CRDT:
    """Any CRDT from its ``to_bytes()`` form."""
    return load(_parse_bytes(raw))


# ------------------------------------------------------------------------------ counters

class GCounter(CRDT):
    """Grow-only counter: one monotonic count per replica, joined by maximum."""

    __slots__ = ("_counts",)

    def __init__(self) -> None:
        self._journal: list[CRDT] | None = None
        self._counts: dict[str, int] = {}

    def value(self) -> int:
        return sum(self._counts.values())

    def increment(self, replica: str, amount: int = 1) -> GCounter:
        """Add ``amount`` (>= 1) on behalf of ``replica``; the delta is that replica's entry."""
        _replica(replica)
        _int(amount, "amount", 1)
        return self._commit(_gcounter({replica: self._counts.get(replica, 0) + amount}))

    def merge(self, other: GCounter) -> GCounter:
        self._check_mergeable(other)
        _join_counts(self._counts, other._counts)
        return self

    def copy(self) -> GCounter:
        return _gcounter(self._counts)

    def _state(self) -> Any:
        return self._counts

    def _encode(self) -> dict[str, Any]:
        return {"counts": dict(sorted(self._counts.items()))}

    @classmethod
    def _decode(cls, data: Mapping[str, Any]) -> GCounter:
        return _gcounter(_counts(_require(data, "counts"), "counts"))


def _gcounter(counts: Mapping[str, int]) -> GCounter:
    state = GCounter()
    state._counts.update(counts)
    return state


def _join_counts(mine: dict[str, int], theirs: Mapping[str, int]) -> None:
    for replica, count in theirs.items():
        if count > mine.get(replica, 0):
            mine[replica] = count


class PNCounter(CRDT):
    """Counter with increments and decrements: two grow-only maps, ``value = sum P - sum N``."""

    __slots__ = ("_p", "_n")

    def __init__(self) -> None:
        self._journal: list[CRDT] | None = None
        self._p: dict[str, int] = {}
        self._n: dict[str, int] = {}

    def value(self) -> int:
        return sum(self._p.values()) - sum(self._n.values())

    def increment(self, replica: str, amount: int = 1) -> PNCounter:
        """Add ``amount`` (>= 1); the delta holds only this replica's P entry."""
        _replica(replica)
        _int(amount, "amount", 1)
        return self._commit(_pncounter({replica: self._p.get(replica, 0) + amount}, {}))

    def decrement(self, replica: str, amount: int = 1) -> PNCounter:
        """Subtract ``amount`` (>= 1); the delta holds only this replica's N entry."""
        _replica(replica)
        _int(amount, "amount", 1)
        return self._commit(_pncounter({}, {replica: self._n.get(replica, 0) + amount}))

    def merge(self, other: PNCounter) -> PNCounter:
        self._check_mergeable(other)
        _join_counts(self._p, other._p)
        _join_counts(self._n, other._n)
        return self

    def copy(self) -> PNCounter:
        return _pncounter(self._p, self._n)

    def _state(self) -> Any:
        return self._p, self._n

    def _encode(self) -> dict[str, Any]:
        return {"p": dict(sorted(self._p.items())), "n": dict(sorted(self._n.items()))}

    @classmethod
    def _decode(cls, data: Mapping[str, Any]) -> PNCounter:
        return _pncounter(_counts(_require(data, "p"), "p"), _counts(_require(data, "n"), "n"))


def _pncounter(p: Mapping[str, int], n: Mapping[str, int]) -> PNCounter:
    state = PNCounter()
    state._p.update(p)
    state._n.update(n)
    return state


# ------------------------------------------------------------------------------ G-set, 2P-set

def _decode_keys(data: Any, field: str) -> set[Key]:
    return {_key(k, f"{field}[{i}]") for i, k in enumerate(_list(data, field))}


class GSet(CRDT):
    """Grow-only set: elements are only ever added; join is union."""

    __slots__ = ("_elements",)

    def __init__(self) -> None:
        self._journal: list[CRDT] | None = None
        self._elements: set[Key] = set()

    def value(self) -> frozenset[Key]:
        return frozenset(self._elements)

    def contains(self, element: Key) -> bool:
        return element in self._elements

    def add(self, element: Key) -> GSet:
        """Add ``element``; the delta is the singleton set."""
        return self._commit(_gset({_key(element, "element")}))

    def merge(self, other: GSet) -> GSet:
        self._check_mergeable(other)
        self._elements |= other._elements
        return self

    def copy(self) -> GSet:
        return _gset(self._elements)

    def _state(self) -> Any:
        return self._elements

    def _encode(self) -> dict[str, Any]:
        return {"elements": sorted(self._elements, key=_key_order)}

    @classmethod
    def _decode(cls, data: Mapping[str, Any]) -> GSet:
        return _gset(_decode_keys(_require(data, "elements"), "elements"))


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
    """

    __slots__ = ("_added", "_removed")

    def __init__(self) -> None:
        self._journal: list[CRDT] | None = None
        self._added: set[Key] = set()
        self._removed: set[Key] = set()

    def value(self) -> frozenset[Key]:
        return frozenset(self._added - self._removed)

    def contains(self, element: Key) -> bool:
        return element in self._added and element not in self._removed

    def add(self, element: Key) -> TwoPSet:
        """Add ``element`` (no visible effect when it was removed before)."""
        return self._commit(_twopset({_key(element, "element")}, ()))

    def remove(self, element: Key) -> TwoPSet:
        """Tombstone ``element`` for good."""
        return self._commit(_twopset((), {_key(element, "element")}))

    def merge(self, other: TwoPSet) -> TwoPSet:
        self._check_mergeable(other)
        self._added |= other._added
        self._removed |= other._removed
        return self

    def copy(self) -> TwoPSet:
        return _twopset(self._added, self._removed)

    def _state(self) -> Any:
        return self._added, self._removed

    def _encode(self) -> dict[str, Any]:
        return {"added": sorted(self._added, key=_key_order),
                "removed": sorted(self._removed, key=_key_order)}

    @classmethod
    def _decode(cls, data: Mapping[str, Any]) -> TwoPSet:
        return _twopset(_decode_keys(_require(data, "added"), "added"),
                        _decode_keys(_require(data, "removed"), "removed"))


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
    delta of ``set`` is a register holding just that write. Feed received timestamps to the
    local :class:`~herd.platform.clocks.HybridLogicalClock` (``update``) so that later local
    writes order after what was seen.
    """

    __slots__ = ("_timestamp", "_text")

    def __init__(self) -> None:
        self._journal: list[CRDT] | None = None
        self._timestamp: HLCTimestamp | None = None
        self._text = "null"

    def value(self) -> Json:
        """The winning value (None before the first write)."""
        return json.loads(self._text)

    @property
    def timestamp(self) -> HLCTimestamp | None:
        """The winning write's timestamp (None before the first write)."""
        return self._timestamp

    def set(self, value: Json, at: HLCTimestamp | HybridLogicalClock) -> LWWRegister:
        """Write ``value`` at timestamp ``at`` (or at ``at.now()`` for a clock); an older write
        than the current one is a no-op on this replica, and its delta loses everywhere."""
        return self._commit(_lww(_timestamp(at), _canonical(value)))

    def merge(self, other: LWWRegister) -> LWWRegister:
        self._check_mergeable(other)
        if other._timestamp is not None and (
                self._timestamp is None
                or (other._timestamp, other._text) > (self._timestamp, self._text)):
            self._timestamp, self._text = other._timestamp, other._text
        return self

    def copy(self) -> LWWRegister:
        return _lww(self._timestamp, self._text)

    def _state(self) -> Any:
        return self._timestamp, self._text

    def _encode(self) -> dict[str, Any]:
        ts = self._timestamp
        return {"timestamp": None if ts is None else [ts.wall_ms, ts.logical, ts.replica],
                "value": self.value()}

    @classmethod
    def _decode(cls, data: Mapping[str, Any]) -> LWWRegister:
        raw_ts, value = _require(data, "timestamp"), _require(data, "value")
        if raw_ts is None:
            if value is not None:
                raise ConfigError("a value needs a timestamp", source=SOURCE,
                                  field="timestamp", value=None)
            return cls()
        return _lww(HLCTimestamp(*_list(raw_ts, "timestamp", 3)), _canonical(value))


def _lww(timestamp: HLCTimestamp | None, text: str) -> LWWRegister:
    state = LWWRegister()
    state._timestamp, state._text = timestamp, text
    return state


# ------------------------------------------------------------------------------ causal context

class CausalContext:
    """The set of dots a causal state has seen: a version vector plus a dot cloud.

    ``vv[r] = n`` stands for the dots ``(r, 1) .. (r, n)``; the cloud holds the dots beyond
    each contiguous prefix. The form is kept compact (cloud dots that extend a prefix move into
    it), which makes it canonical: equal dot sets have equal representations. Mutable.
    """

    __slots__ = ("_vv", "_cloud")

    def __init__(self, vv: Mapping[str, int] | None = None, cloud: Iterable[Any] = ()) -> None:
        self._vv = _counts(vv or {}, "context.vv")
        self._cloud = {_dot(d, "context.cloud") for d in cloud}
        self._compact()

    @classmethod
    def _of(cls, dots: Iterable[Dot]) -> CausalContext:
        """Exactly ``dots`` (trusted: minted here or already validated)."""
        ctx = cls.__new__(cls)
        ctx._vv, ctx._cloud = {}, set(dots)
        ctx._compact()
        return ctx

    def covers(self, dot: Dot) -> bool:
        """Whether this context has seen ``dot``."""
        return dot[1] <= self._vv.get(dot[0], 0) or dot in self._cloud

    def next_dot(self, replica: str) -> Dot:
        """A fresh dot of ``replica``: one past every dot of it seen here."""
        _replica(replica)
        top = self._vv.get(replica, 0)
        for r, n in self._cloud:
            if r == replica and n > top:
                top = n
        return replica, top + 1

    def dots(self) -> Iterator[Dot]:
        """Every dot seen, prefix ranges first, then the cloud."""
        for replica, top in self._vv.items():
            for n in range(1, top + 1):
                yield replica, n
        yield from self._cloud

    def dot_count(self) -> int:
        """How many dots have been seen (what enumerating :meth:`dots` would cost)."""
        return sum(self._vv.values()) + len(self._cloud)

    def merge(self, other: CausalContext) -> CausalContext:
        """Union with ``other`` in place; returns ``self``."""
        _join_counts(self._vv, other._vv)
        if other._cloud:
            self._cloud |= other._cloud
        self._compact()
        return self

    def copy(self) -> CausalContext:
        """An independent context with the same dots."""
        ctx = CausalContext.__new__(CausalContext)
        ctx._vv, ctx._cloud = dict(self._vv), set(self._cloud)
        return ctx

    def _compact(self) -> None:
        """Move cloud dots that extend a contiguous prefix into the vector; drop covered ones."""
        if not self._cloud:
            return
        kept = set()
        for replica, n in sorted(self._cloud):
            top = self._vv.get(replica, 0)
            if n == top + 1:
                self._vv[replica] = n
            elif n > top:
                kept.add((replica, n))
        self._cloud = kept

    def to_dict(self) -> dict[str, Any]:
        """``{"vv": {replica: n}, "cloud": [[replica, n], ...]}``, sorted."""
        return {"vv": dict(sorted(self._vv.items())),
                "cloud": [list(d) for d in sorted(self._cloud)]}

    @classmethod
    def from_dict(cls, data: Any) -> CausalContext:
        """Inverse of :meth:`to_dict`; validates."""
        data = _mapping(data, "context")
        return cls(_require(data, "vv"), _list(_require(data, "cloud"), "context.cloud"))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CausalContext):
            return NotImplemented
        return self._vv == other._vv and self._cloud == other._cloud

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"CausalContext(vv={dict(sorted(self._vv.items()))}, cloud={sorted(self._cloud)})"


# ------------------------------------------------------------------------------ dot stores
#
# Dot stores are plain Python values: DotSet a frozenset of dots, DotFun a dict dot -> value,
# DotMap a dict key -> non-empty dot store. The empty container is bottom. Nested stores are
# never mutated in place, only replaced, so replicas and deltas may share them; only the
# top-level dict of a map-shaped CRDT is mutated, and it is never shared. ``join`` returns its
# first argument itself when the result equals it, which lets callers skip unchanged keys.

class _Kind(ABC, Generic[S]):
    """The operations on one shape of dot store."""

    empty: S

    @abstractmethod
    def join(self, a: S, ca: CausalContext, b: S, cb: CausalContext) -> S:
        """The join of the causal states ``(a, ca)`` and ``(b, cb)``, store part."""

    @abstractmethod
    def dots(self, store: S) -> Iterator[Dot]:
        """Every dot in ``store``."""

    @abstractmethod
    def encode(self, store: S) -> Any:
        """JSON-safe, deterministic form."""

    @abstractmethod
    def decode(self, data: Any, field: str) -> S:
        """Inverse of ``encode``; validates."""

    def copy(self, store: S) -> S:
        """A copy safe to hand to a new owner (immutable stores are shared)."""
        return store


class _DotSetKind(_Kind[frozenset[Dot]]):
    empty: frozenset[Dot] = frozenset()

    def join(self, a: frozenset[Dot], ca: CausalContext, b: frozenset[Dot],
             cb: CausalContext) -> frozenset[Dot]:
        if a is b:
            return a
        if not b:
            return _drop_covered_set(a, cb)
        if not a:
            return _drop_covered_set(b, ca)
        if a == b:
            return a
        seen_a, cloud_a, seen_b, cloud_b = ca._vv, ca._cloud, cb._vv, cb._cloud
        kept = [d for d in a if d in b or not (d[1] <= seen_b.get(d[0], 0) or d in cloud_b)]
        kept += [d for d in b if d not in a
                 and not (d[1] <= seen_a.get(d[0], 0) or d in cloud_a)]
        joined = frozenset(kept)
        return a if joined == a else joined

    def dots(self, store: frozenset[Dot]) -> Iterator[Dot]:
        return iter(store)

    def encode(self, store: frozenset[Dot]) -> Any:
        return [list(d) for d in sorted(store)]

    def decode(self, data: Any, field: str) -> frozenset[Dot]:
        return frozenset(_dot(d, f"{field}[{i}]") for i, d in enumerate(_list(data, field)))


def _drop_covered_set(store: frozenset[Dot], ctx: CausalContext) -> frozenset[Dot]:
    """``store`` without the dots ``ctx`` has seen (``store`` itself when none is)."""
    vv, cloud = ctx._vv, ctx._cloud
    for replica, n in store:  # the common case keeps every dot: check before building
        if n <= vv.get(replica, 0) or (replica, n) in cloud:
            return frozenset(d for d in store if not ctx.covers(d))
    return store


class _ValueCodec(ABC):
    """How a DotFun stores, encodes and decodes its values."""

    @abstractmethod
    def encode(self, value: Any) -> Any: ...

    @abstractmethod
    def decode(self, data: Any, field: str) -> Any: ...


class _JsonCodec(_ValueCodec):
    """Values are canonical JSON texts."""

    def encode(self, value: str) -> Any:
        return json.loads(value)

    def decode(self, data: Any, field: str) -> str:
        return _canonical(data, field)


class _LWWCodec(_ValueCodec):
    """Values are ``(HLCTimestamp, canonical JSON text)``; encoded ``[wall, logical, r, v]``."""

    def encode(self, value: tuple[HLCTimestamp, str]) -> Any:
        ts, text = value
        return [ts.wall_ms, ts.logical, ts.replica, json.loads(text)]

    def decode(self, data: Any, field: str) -> tuple[HLCTimestamp, str]:
        wall_ms, logical, replica, value = _list(data, field, 4)
        return HLCTimestamp(wall_ms, logical, replica), _canonical(value, field)


class _DotFunKind(_Kind[dict[Dot, Any]]):
    """dot -> value. The same dot always carries the same value (one write); should a reused
    replica id make them differ, the greater value is kept so the join stays commutative."""

    def __init__(self, codec: _ValueCodec) -> None:
        self.codec = codec
        self.empty: dict[Dot, Any] = {}

    def join(self, a: dict[Dot, Any], ca: CausalContext, b: dict[Dot, Any],
             cb: CausalContext) -> dict[Dot, Any]:
        if a is b:
            return a
        if not b:
            return _drop_covered_fun(a, cb)
        if not a:
            return _drop_covered_fun(b, ca)
        seen_a, cloud_a, seen_b, cloud_b = ca._vv, ca._cloud, cb._vv, cb._cloud
        joined = {}
        for d, v in a.items():
            w = b.get(d)
            if w is not None:
                joined[d] = v if v == w else max(v, w)
            elif not (d[1] <= seen_b.get(d[0], 0) or d in cloud_b):
                joined[d] = v
        for d, w in b.items():
            if d not in a and not (d[1] <= seen_a.get(d[0], 0) or d in cloud_a):
                joined[d] = w
        return a if joined == a else joined

    def dots(self, store: dict[Dot, Any]) -> Iterator[Dot]:
        return iter(store)

    def encode(self, store: dict[Dot, Any]) -> Any:
        return [[*d, self.codec.encode(v)] for d, v in sorted(store.items())]

    def decode(self, data: Any, field: str) -> dict[Dot, Any]:
        store: dict[Dot, Any] = {}
        for i, item in enumerate(_list(data, field)):
            replica, counter, value = _list(item, f"{field}[{i}]", 3)
            dot = _dot([replica, counter], f"{field}[{i}]")
            if dot in store:
                raise ConfigError("duplicate dot", source=SOURCE, field=f"{field}[{i}]",
                                  value=item)
            store[dot] = self.codec.decode(value, f"{field}[{i}]")
        return store


def _drop_covered_fun(store: dict[Dot, Any], ctx: CausalContext) -> dict[Dot, Any]:
    """``store`` without the dots ``ctx`` has seen (``store`` itself when none is)."""
    vv, cloud = ctx._vv, ctx._cloud
    for replica, n in store:
        if n <= vv.get(replica, 0) or (replica, n) in cloud:
            return {d: v for d, v in store.items() if not ctx.covers(d)}
    return store


class _DotMapKind(_Kind[dict[Key, Any]]):
    """key -> non-empty dot store of ``value`` kind; the join is per key, dropping bottoms."""

    def __init__(self, value: _Kind[Any]) -> None:
        self.value = value
        self.empty: dict[Key, Any] = {}

    def join(self, a: dict[Key, Any], ca: CausalContext, b: dict[Key, Any],
             cb: CausalContext) -> dict[Key, Any]:
        value, empty = self.value, self.value.empty
        joined, changed = {}, False
        for key in a.keys() | b.keys():
            mine = a.get(key, empty)
            merged = value.join(mine, ca, b.get(key, empty), cb)
            if merged:
                joined[key] = merged
            changed = changed or merged is not mine
        return joined if changed else a

    def dots(self, store: dict[Key, Any]) -> Iterator[Dot]:
        for nested in store.values():
            yield from self.value.dots(nested)

    def encode(self, store: dict[Key, Any]) -> Any:
        return [[k, self.value.encode(store[k])] for k in sorted(store, key=_key_order)]

    def decode(self, data: Any, field: str) -> dict[Key, Any]:
        store: dict[Key, Any] = {}
        for i, item in enumerate(_list(data, field)):
            raw_key, raw_value = _list(item, f"{field}[{i}]", 2)
            key = _key(raw_key, f"{field}[{i}]")
            if key in store:
                raise ConfigError("duplicate key", source=SOURCE, field=f"{field}[{i}]",
                                  value=key)
            nested = self.value.decode(raw_value, f"{field}[{i}]")
            if nested:
                store[key] = nested
        return store

    def copy(self, store: dict[Key, Any]) -> dict[Key, Any]:
        return dict(store)


_DOT_SET = _DotSetKind()
_JSON = _JsonCodec()
_LWW = _LWWCodec()


@dataclass(frozen=True, eq=False)
class _Spec:
    """A causal type: its name (``"ORSet"``, ``"ORMap[MVRegister]"``), class, store kind and,
    for ORMap, the spec of its values."""

    name: str
    cls: type[_Causal]
    kind: _Kind[Any]
    value: _Spec | None = None


@functools.cache
def _spec(name: str) -> _Spec:
    if name == "ORSet":
        return _Spec(name, ORSet, _DotMapKind(_DOT_SET))
    if name == "MVRegister":
        return _Spec(name, MVRegister, _DotFunKind(_JSON))
    if name == "AWLWWMap":
        return _Spec(name, AWLWWMap, _DotMapKind(_DotFunKind(_LWW)))
    if name.startswith("ORMap[") and name.endswith("]") and name.count("[") <= MAX_NESTING:
        inner = _spec(name[len("ORMap["):-1])
        return _Spec(name, ORMap, _DotMapKind(inner.kind), inner)
    raise ConfigError("unknown ORMap value type: use ORSet, MVRegister, AWLWWMap or "
                      "ORMap[<value type>]", source=SOURCE, field="value_type", value=name)


# ------------------------------------------------------------------------------ causal types

class _Causal(CRDT):
    """A causal CRDT: a dot store plus the causal context of every dot it has seen.

    Invariant: every dot in the store is in the context. The join is the paper's:
    a dot survives when both sides have it, or when one side has it and the other has not
    seen it; a dot one side has seen but no longer holds was removed there.
    """

    __slots__ = ("_spec", "_store", "_ctx")

    def _init(self, spec: _Spec, store: Any, ctx: CausalContext) -> None:
        self._journal = None
        self._spec, self._store, self._ctx = spec, store, ctx

    @staticmethod
    def _wrap(spec: _Spec, store: Any, ctx: CausalContext) -> Any:
        """An instance of ``spec`` over ``store`` and ``ctx`` (taken over, not copied)."""
        state = spec.cls.__new__(spec.cls)
        state._init(spec, store, ctx)
        return state

    def _delta(self, store: Any, dots: Iterable[Dot]) -> Any:
        """A delta of this type: ``store`` with the exact causal context ``dots``."""
        return self._wrap(self._spec, store, CausalContext._of(dots))

    @classmethod
    @abstractmethod
    def _read(cls, spec: _Spec, store: Any) -> Any:
        """``value()`` of a store of this type (also used for values nested in an ORMap)."""

    def value(self) -> Any:
        return self._read(self._spec, self._store)

    def merge(self, other: Any) -> Any:
        self._check_mergeable(other)
        self._store = self._spec.kind.join(self._store, self._ctx, other._store, other._ctx)
        self._ctx.merge(other._ctx)
        return self

    def copy(self) -> Any:
        return self._wrap(self._spec, self._spec.kind.copy(self._store), self._ctx.copy())

    def _check_mergeable(self, other: Any) -> None:
        super()._check_mergeable(other)
        if other._spec.name != self._spec.name:
            raise ConfigError(f"cannot merge {self._spec.name} with {other._spec.name}",
                              source=SOURCE, field="other", value=other._spec.name)

    def _state(self) -> Any:
        return self._spec.name, self._store, self._ctx

    def _encode(self) -> dict[str, Any]:
        return {"context": self._ctx.to_dict(), "store": self._spec.kind.encode(self._store)}

    @classmethod
    def _decode(cls, data: Mapping[str, Any]) -> Any:
        return cls._decode_spec(_spec(cls.TYPE), data)

    @classmethod
    def _decode_spec(cls, spec: _Spec, data: Mapping[str, Any]) -> Any:
        ctx = CausalContext.from_dict(_require(data, "context"))
        store = spec.kind.decode(_require(data, "store"), "store")
        seen: set[Dot] = set()
        for dot in spec.kind.dots(store):
            if dot in seen or not ctx.covers(dot):
                raise ConfigError("dot repeated or not covered by the context", source=SOURCE,
                                  field="store", value=list(dot))
            seen.add(dot)
        return cls._wrap(spec, store, ctx)


class _CausalMap(_Causal):
    """A causal CRDT whose store is a DotMap, joined in place key by key.

    Merging a small delta must cost O(delta), not O(state): the keys to revisit are those in
    the other store plus those holding a dot the other context has seen. When the other
    context is small they are found through a dot -> key index (built on first use, then kept
    up to date); otherwise every key is scanned.
    """

    __slots__ = ("_index",)

    def _init(self, spec: _Spec, store: Any, ctx: CausalContext) -> None:
        super()._init(spec, store, ctx)
        self._index: dict[Dot, Key] | None = None

    def __len__(self) -> int:
        return len(self._store)

    def contains(self, key: Key) -> bool:
        return key in self._store

    def __contains__(self, key: object) -> bool:
        return key in self._store

    def merge(self, other: Any) -> Any:
        self._check_mergeable(other)
        if other is self:
            return self
        value_kind = self._spec.kind.value
        mine, theirs, empty = self._store, other._store, value_kind.empty
        mine_ctx, their_ctx = self._ctx, other._ctx
        changes = []
        for key, nested in theirs.items():
            current = mine.get(key, empty)
            joined = value_kind.join(current, mine_ctx, nested, their_ctx)
            if joined is not current:
                changes.append((key, joined))
        for key in self._keys_seen_by(their_ctx, theirs):
            current = mine[key]
            joined = value_kind.join(current, mine_ctx, empty, their_ctx)
            if joined is not current:
                changes.append((key, joined))
        for key, joined in changes:
            self._put(key, joined)
        mine_ctx.merge(their_ctx)
        return self

    def _keys_seen_by(self, ctx: CausalContext, skip: Mapping[Key, Any]) -> Iterable[Key]:
        """Keys of this store, outside ``skip``, that may hold a dot ``ctx`` has seen."""
        if 4 * ctx.dot_count() < len(self._store):
            index = self._dot_index()
            return {key for dot in ctx.dots()
                    if (key := index.get(dot)) is not None and key not in skip}
        return [key for key in self._store if key not in skip]

    def _dot_index(self) -> dict[Dot, Key]:
        if self._index is None:
            dots = self._spec.kind.value.dots
            self._index = {dot: key for key, nested in self._store.items()
                           for dot in dots(nested)}
        return self._index

    def _put(self, key: Key, nested: Any) -> None:
        """Set ``key``'s store (bottom deletes the key), keeping the dot index current."""
        if self._index is not None:
            value_kind = self._spec.kind.value
            dots = value_kind.dots
            for dot in dots(self._store.get(key, value_kind.empty)):
                self._index.pop(dot, None)
            for dot in dots(nested):
                self._index[dot] = key
        if nested:
            self._store[key] = nested
        else:
            self._store.pop(key, None)

    def _remove_delta(self, keys: Iterable[Key]) -> Any:
        """The delta removing ``keys`` as observed here: no store, their dots as context."""
        dots = self._spec.kind.value.dots
        return self._delta({}, [d for k in keys if k in self._store for d in dots(self._store[k])])

    def clear(self) -> Any:
        """Remove every observed key/element; concurrent additions survive."""
        return self._commit(self._remove_delta(list(self._store)))


class ORSet(_CausalMap):
    """Add-wins observed-remove set without tombstones (the paper's AWORSet; riak_dt ORSWOT).

    ``add`` tags the element with a fresh dot and retires the dots it had here; ``remove``
    retires the element's observed dots (delta: no store, those dots as context). An add
    concurrent with a remove brings a dot the remover never saw, so it survives: add wins.
    """

    __slots__ = ()

    def __init__(self) -> None:
        self._init(_spec("ORSet"), {}, CausalContext())

    @classmethod
    def _read(cls, spec: _Spec, store: dict[Key, frozenset[Dot]]) -> frozenset[Key]:
        return frozenset(store)

    def value(self) -> frozenset[Key]:
        return frozenset(self._store)

    def add(self, replica: str, element: Key) -> ORSet:
        """Add ``element`` on behalf of ``replica``; the delta is ``({element: {dot}},
        {dot} ∪ element's old dots)``."""
        _key(element, "element")
        dot = self._ctx.next_dot(replica)
        return self._commit(self._delta({element: frozenset([dot])},
                                        [dot, *self._store.get(element, ())]))

    def remove(self, element: Key) -> ORSet:
        """Remove ``element`` as observed here (an empty delta when it is absent)."""
        return self._commit(self._remove_delta([_key(element, "element")]))


class MVRegister(_Causal):
    """Multi-value register: a DotFun of writes. ``set`` replaces every value this replica has
    seen; concurrent writes survive side by side until a write that has seen them all."""

    __slots__ = ()

    def __init__(self) -> None:
        self._init(_spec("MVRegister"), {}, CausalContext())

    @classmethod
    def _read(cls, spec: _Spec, store: dict[Dot, str]) -> list[Json]:
        return [json.loads(text) for text in sorted(set(store.values()))]

    def value(self) -> list[Json]:
        """The concurrent values, distinct, ordered by canonical JSON ([] before any write)."""
        return self._read(self._spec, self._store)

    def set(self, replica: str, value: Json) -> MVRegister:
        """Write ``value``; the delta is ``({dot: value}, {dot} ∪ the overwritten dots)``."""
        text = _canonical(value)
        dot = self._ctx.next_dot(replica)
        return self._commit(self._delta({dot: text}, [dot, *self._store]))


class AWLWWMap(_CausalMap):
    """Add-wins map of JSON values resolved last-writer-wins by HLC timestamp.

    Each key holds a DotFun of writes ``dot -> (timestamp, value)``. ``put`` replaces the
    writes it has seen with one new write (like an MVRegister); writes to a key that are
    concurrent (none saw the other) are all kept, and reads pick the greatest ``(timestamp,
    canonical value)``. With a :class:`~herd.platform.clocks.HybridLogicalClock` that is
    ``update``-d on receipt, a write after another always has the greater timestamp, so this is
    plain last-writer-wins; a causally later write still wins if it carries an older explicit
    timestamp (causality first). ``remove`` retires the observed writes; a ``put`` concurrent
    with a ``remove`` survives (add wins) with its own value only.
    """

    __slots__ = ()

    def __init__(self) -> None:
        self._init(_spec("AWLWWMap"), {}, CausalContext())

    @classmethod
    def _read(cls, spec: _Spec, store: dict[Key, dict[Dot, tuple[HLCTimestamp, str]]]
              ) -> dict[Key, Json]:
        return {key: _lww_winner(writes) for key, writes in store.items()}

    def get(self, key: Key, default: Json = None) -> Json:
        writes = self._store.get(key)
        return default if writes is None else _lww_winner(writes)

    def put(self, replica: str, key: Key, value: Json,
            at: HLCTimestamp | HybridLogicalClock) -> AWLWWMap:
        """Write ``key = value`` at timestamp ``at`` (or ``at.now()``) on behalf of
        ``replica``; the delta holds the new write and retires the writes seen for ``key``."""
        _key(key)
        text = _canonical(value)
        timestamp = _timestamp(at)
        dot = self._ctx.next_dot(replica)
        return self._commit(self._delta({key: {dot: (timestamp, text)}},
                                        [dot, *self._store.get(key, ())]))

    def remove(self, key: Key) -> AWLWWMap:
        """Remove ``key`` as observed here (an empty delta when it is absent)."""
        return self._commit(self._remove_delta([_key(key)]))


def _lww_winner(writes: dict[Dot, tuple[HLCTimestamp, str]]) -> Json:
    return json.loads(max(writes.values())[1])


class ORMap(_CausalMap):
    """Observed-remove map whose values are causal CRDTs sharing the map's causal context.

    ``ORMap(value_type)`` holds values of one type: ``ORSet``, ``MVRegister``, ``AWLWWMap`` or a
    nested map given by name, e.g. ``ORMap("ORMap[ORSet]")``. A key is present while its value
    holds a dot, so a value emptied by its own operations (an ORSet whose elements were all
    removed) makes the key disappear. ``remove(key)`` retires every dot the key's value holds
    here, resetting it; an update concurrent with the remove brings dots the remover never saw,
    so the key survives holding just the concurrent update's effects (update wins). Counters
    are not embeddable: they carry no dots, so a remove could not reset them.
    """

    __slots__ = ()

    def __init__(self, value_type: type[_Causal] | str) -> None:
        name = value_type if isinstance(value_type, str) else getattr(value_type, "TYPE", None)
        if not isinstance(name, str) or name == "ORMap":
            raise ConfigError("value_type must be ORSet, MVRegister, AWLWWMap or a nested map "
                              "name like 'ORMap[ORSet]'", source=SOURCE, field="value_type",
                              value=value_type)
        self._init(_spec(f"ORMap[{name}]"), {}, CausalContext())

    @property
    def value_type(self) -> str:
        """The name of the value type, e.g. ``"ORSet"`` or ``"ORMap[MVRegister]"``."""
        assert self._spec.value is not None
        return self._spec.value.name

    @classmethod
    def _read(cls, spec: _Spec, store: dict[Key, Any]) -> dict[Key, Any]:
        inner = spec.value
        assert inner is not None
        return {key: inner.cls._read(inner, nested) for key, nested in store.items()}

    def get(self, key: Key) -> Any:
        """A detached copy of ``key``'s value (a CRDT of the value type), or None if absent."""
        inner = self._spec.value
        assert inner is not None
        nested = self._store.get(key)
        if nested is None:
            return None
        return self._wrap(inner, inner.kind.copy(nested), self._ctx.copy())

    def update(self, key: Key, fn: Callable[[Any], object]) -> ORMap:
        """Apply ``fn`` to ``key``'s value (created empty when absent) and return the map delta.

        ``fn`` receives a replica of the value type and calls its mutators (any number, e.g.
        ``lambda s: s.add("a", "x")``); their deltas are collected and joined into the map's
        delta ``({key: joined store}, joined context)``. ``fn``'s return value is ignored.
        """
        _key(key)
        inner = self._spec.value
        assert inner is not None
        view = self._wrap(inner, inner.kind.copy(self._store.get(key, inner.kind.empty)),
                          self._ctx.copy())
        view._journal = []
        fn(view)
        joined = self._wrap(inner, inner.kind.copy(inner.kind.empty), CausalContext())
        for delta in view._journal:
            joined.merge(delta)
        store = {key: joined._store} if joined._store else {}
        return self._commit(self._wrap(self._spec, store, joined._ctx))

    def remove(self, key: Key) -> ORMap:
        """Remove ``key`` and reset its value as observed here (empty delta when absent)."""
        return self._commit(self._remove_delta([_key(key)]))

    def _encode(self) -> dict[str, Any]:
        return {"value_type": self.value_type, **super()._encode()}

    @classmethod
    def _decode(cls, data: Mapping[str, Any]) -> ORMap:
        value_type = _require(data, "value_type")
        if not isinstance(value_type, str):
            raise ConfigError("must be a string", source=SOURCE, field="value_type",
                              value=value_type)
        return cls._decode_spec(_spec(f"ORMap[{value_type}]"), data)
