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

Layout: this module holds the causal types and :func:`load` / :func:`loads`, and re-exports the
rest: ``crdt_base`` (validation, the :class:`CRDT` base class), ``crdt_simple`` (counters,
GSet, TwoPSet, LWWRegister), ``crdt_causal`` (CausalContext, dot stores) and
``crdt_causal_base`` (the base classes of the causal types).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from typing import Any

from herd.platform.clocks import HLCTimestamp, HybridLogicalClock
from herd.platform.crdt.base import (
    CRDT,
    SOURCE,
    Dot,
    Json,
    Key,
    canonical,
    check_key,
    parse_bytes,
    require,
    to_timestamp,
)
from herd.platform.crdt.causal import (
    _DOT_SET,
    _JSON,
    _LWW,
    CausalContext,
    _DotFunKind,
    _DotMapKind,
)
from herd.platform.crdt.causal_base import _Causal, _CausalMap, _Spec
from herd.platform.crdt.simple import GCounter, GSet, LWWRegister, PNCounter, TwoPSet
from herd.platform.errors import ConfigError

__all__ = ["CRDT", "CausalContext", "GCounter", "PNCounter", "GSet", "TwoPSet", "ORSet",
           "LWWRegister", "MVRegister", "ORMap", "AWLWWMap", "Dot", "Key", "load", "loads"]

MAX_NESTING = 16


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
        check_key(element, "element")
        dot = self._ctx.next_dot(replica)
        return self._commit(self._delta({element: frozenset([dot])},
                                        [dot, *self._store.get(element, ())]))

    def remove(self, element: Key) -> ORSet:
        """Remove ``element`` as observed here (an empty delta when it is absent)."""
        return self._commit(self._remove_delta([check_key(element, "element")]))


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
        text = canonical(value)
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
        check_key(key)
        text = canonical(value)
        timestamp = to_timestamp(at)
        dot = self._ctx.next_dot(replica)
        return self._commit(self._delta({key: {dot: (timestamp, text)}},
                                        [dot, *self._store.get(key, ())]))

    def remove(self, key: Key) -> AWLWWMap:
        """Remove ``key`` as observed here (an empty delta when it is absent)."""
        return self._commit(self._remove_delta([check_key(key)]))


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
        check_key(key)
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
        return self._commit(self._remove_delta([check_key(key)]))

    def _encode(self) -> dict[str, Any]:
        return {"value_type": self.value_type, **super()._encode()}

    @classmethod
    def _decode(cls, data: Mapping[str, Any]) -> ORMap:
        value_type = require(data, "value_type")
        if not isinstance(value_type, str):
            raise ConfigError("must be a string", source=SOURCE, field="value_type",
                              value=value_type)
        return cls._decode_spec(_spec(f"ORMap[{value_type}]"), data)


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
    return load(parse_bytes(raw))
