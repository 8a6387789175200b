"""The causal CRDTs: :class:`ORSet`, :class:`MVRegister`, :class:`AWLWWMap` and :class:`ORMap`,
each a dot store plus a causal context (see the package docstring)."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from typing import Any

from herd.platform.clocks import HLCTimestamp, HybridLogicalClock
from herd.platform.crdt.base import SOURCE, Dot, Json, Key, canonical, check_key, require
from herd.platform.crdt.causal import (
    DOT_SET,
    JSON_VALUES,
    LWW_VALUES,
    CausalContext,
    DotFunKind,
    DotMapKind,
)
from herd.platform.crdt.causal_base import Causal, CausalMap, CausalSpec
from herd.platform.errors import ConfigError

__all__ = ["ORSet", "MVRegister", "AWLWWMap", "ORMap"]

MAX_NESTING = 16


@functools.cache
def spec_of(name: str) -> CausalSpec:
    """The spec of a causal type by name: ``"ORSet"``, ``"MVRegister"``, ``"AWLWWMap"`` or a
    map of one of them, ``"ORMap[ORSet]"``, nested up to :data:`MAX_NESTING` deep."""
    if name == "ORSet":
        return CausalSpec(name, ORSet, DotMapKind(DOT_SET))
    if name == "MVRegister":
        return CausalSpec(name, MVRegister, DotFunKind(JSON_VALUES))
    if name == "AWLWWMap":
        return CausalSpec(name, AWLWWMap, DotMapKind(DotFunKind(LWW_VALUES)))
    if name.startswith("ORMap[") and name.endswith("]") and name.count("[") <= MAX_NESTING:
        inner = spec_of(name[len("ORMap["):-1])
        return CausalSpec(name, ORMap, DotMapKind(inner.kind), inner)
    raise ConfigError("unknown ORMap value type: use ORSet, MVRegister, AWLWWMap or "
                      "ORMap[<value type>]", source=SOURCE, field="value_type", value=name)


class ORSet(CausalMap):
    """Add-wins observed-remove set without tombstones (the paper's AWORSet; riak_dt ORSWOT).

    ``add`` tags the element with a fresh dot of this replica and retires the dots it had here;
    ``remove`` retires the element's observed dots (delta: no store, those dots as context). An
    add concurrent with a remove brings a dot the remover never saw, so it survives: add wins.
    """

    __slots__ = ()

    def __init__(self, replica: str | None = None) -> None:
        self._init(spec_of("ORSet"), {}, CausalContext())
        self._bind(replica)

    @classmethod
    def _wire_spec(cls, data: Mapping[str, Any]) -> CausalSpec:
        return spec_of("ORSet")

    @classmethod
    def _read(cls, spec: CausalSpec, store: dict[Key, frozenset[Dot]]) -> frozenset[Key]:
        return frozenset(store)

    def value(self) -> frozenset[Key]:
        return frozenset(self._store)

    def add(self, element: Key) -> ORSet:
        """Add ``element``; the delta is ``({element: {dot}}, {dot} ∪ element's old dots)``."""
        check_key(element, "element")
        dot = self._ctx.next_dot(self._writer())
        return self._commit(self._delta({element: frozenset([dot])},
                                        [dot, *self._store.get(element, ())]))

    def remove(self, element: Key) -> ORSet:
        """Remove ``element`` as observed here (an empty delta when it is absent)."""
        return self._commit(self._remove_delta([check_key(element, "element")]))


class MVRegister(Causal):
    """Multi-value register: a DotFun of writes. ``set`` replaces every value this replica has
    seen; concurrent writes survive side by side until a write that has seen them all."""

    __slots__ = ()

    def __init__(self, replica: str | None = None) -> None:
        self._init(spec_of("MVRegister"), {}, CausalContext())
        self._bind(replica)

    @classmethod
    def _wire_spec(cls, data: Mapping[str, Any]) -> CausalSpec:
        return spec_of("MVRegister")

    @classmethod
    def _read(cls, spec: CausalSpec, store: dict[Dot, str]) -> list[Json]:
        return [json.loads(text) for text in sorted(set(store.values()))]

    def value(self) -> list[Json]:
        """The concurrent values, distinct, ordered by canonical JSON ([] before any write)."""
        return self._read(self._spec, self._store)

    def set(self, value: Json) -> MVRegister:
        """Write ``value``; the delta is ``({dot: value}, {dot} ∪ the overwritten dots)``."""
        text = canonical(value)
        dot = self._ctx.next_dot(self._writer())
        return self._commit(self._delta({dot: text}, [dot, *self._store]))


class AWLWWMap(CausalMap):
    """Add-wins map of JSON values resolved last-writer-wins by HLC timestamp.

    Each key holds a DotFun of writes ``dot -> (timestamp, value)``. ``put`` replaces the
    writes it has seen with one new write (like an MVRegister); writes to a key that are
    concurrent (none saw the other) are all kept, and reads pick the greatest ``(timestamp,
    canonical value)``. ``put`` stamps a write with the replica's
    :class:`~herd.platform.clocks.HybridLogicalClock` after feeding it the newest write it
    replaces, so a write after another has the greater timestamp: plain last-writer-wins. A
    causally later write still wins if it carries an older explicit timestamp (causality
    first). ``remove`` retires the observed writes; a ``put`` concurrent with a ``remove``
    survives (add wins) with its own value only.
    """

    __slots__ = ()

    def __init__(self, replica: str | None = None, *,
                 clock: HybridLogicalClock | None = None) -> None:
        self._init(spec_of("AWLWWMap"), {}, CausalContext())
        self._bind(replica, clock)

    @classmethod
    def _wire_spec(cls, data: Mapping[str, Any]) -> CausalSpec:
        return spec_of("AWLWWMap")

    @classmethod
    def _read(cls, spec: CausalSpec, store: dict[Key, dict[Dot, tuple[HLCTimestamp, str]]]
              ) -> dict[Key, Json]:
        return {key: _lww_winner(writes) for key, writes in store.items()}

    def get(self, key: Key, default: Json = None) -> Json:
        writes = self._store.get(key)
        return default if writes is None else _lww_winner(writes)

    def put(self, key: Key, value: Json,
            at: HLCTimestamp | HybridLogicalClock | None = None) -> AWLWWMap:
        """Write ``key = value``, stamped by this replica's clock (``at=None``), by the clock
        ``at`` or at the timestamp ``at``; the delta holds the new write and retires the writes
        seen for ``key``. ClockSkewError when a replaced write is further ahead of local time
        than the clock accepts."""
        check_key(key)
        text = canonical(value)
        writes = self._store.get(key, {})
        seen = max(ts for ts, _ in writes.values()) if writes else None
        timestamp = self._stamp(at, seen)
        dot = self._ctx.next_dot(self._writer())
        return self._commit(self._delta({key: {dot: (timestamp, text)}}, [dot, *writes]))

    def remove(self, key: Key) -> AWLWWMap:
        """Remove ``key`` as observed here (an empty delta when it is absent)."""
        return self._commit(self._remove_delta([check_key(key)]))


def _lww_winner(writes: dict[Dot, tuple[HLCTimestamp, str]]) -> Json:
    return json.loads(max(writes.values())[1])


class ORMap(CausalMap):
    """Observed-remove map whose values are causal CRDTs sharing the map's causal context.

    ``ORMap(value_type, replica)`` holds values of one type: ``ORSet``, ``MVRegister``,
    ``AWLWWMap`` or a nested map given by name, e.g. ``ORMap("ORMap[ORSet]", "a")``. A key is
    present while its value holds a dot, so a value emptied by its own operations (an ORSet
    whose elements were all removed) makes the key disappear. ``remove(key)`` retires every dot
    the key's value holds here, resetting it; an update concurrent with the remove brings dots
    the remover never saw, so the key survives holding just the concurrent update's effects
    (update wins). Counters are not embeddable: they carry no dots, so a remove could not reset
    them.
    """

    __slots__ = ()

    def __init__(self, value_type: type[Causal] | str, replica: str | None = None, *,
                 clock: HybridLogicalClock | None = None) -> None:
        name = value_type if isinstance(value_type, str) else getattr(value_type, "TYPE", None)
        if not isinstance(name, str) or name == "ORMap":
            raise ConfigError("value_type must be ORSet, MVRegister, AWLWWMap or a nested map "
                              "name like 'ORMap[ORSet]'", source=SOURCE, field="value_type",
                              value=value_type)
        self._init(spec_of(f"ORMap[{name}]"), {}, CausalContext())
        self._bind(replica, clock)

    @property
    def value_type(self) -> str:
        """The name of the value type, e.g. ``"ORSet"`` or ``"ORMap[MVRegister]"``."""
        return self._inner_spec.name

    @property
    def _inner_spec(self) -> CausalSpec:
        inner = self._spec.value
        assert inner is not None
        return inner

    @classmethod
    def _read(cls, spec: CausalSpec, store: dict[Key, Any]) -> dict[Key, Any]:
        inner = spec.value
        assert inner is not None
        return {key: inner.cls._read(inner, nested) for key, nested in store.items()}

    def get(self, key: Key) -> Any:
        """A detached copy of ``key``'s value (a CRDT of the value type, bound to no replica),
        or None if absent."""
        inner = self._inner_spec
        nested = self._store.get(key)
        if nested is None:
            return None
        return self._wrap(inner, inner.kind.copy(nested), self._ctx.copy())

    def update(self, key: Key, fn: Callable[[Any], object]) -> ORMap:
        """Apply ``fn`` to ``key``'s value (created empty when absent) and return the map delta.

        ``fn`` receives a replica of the value type, bound to this map's replica id and clock,
        and calls its mutators (any number, e.g. ``lambda s: s.add("x")``); their deltas are
        joined into the map's delta ``({key: joined store}, joined context)``. ``fn``'s return
        value is ignored.
        """
        check_key(key)
        inner = self._inner_spec
        view = self._wrap(inner, inner.kind.copy(self._store.get(key, inner.kind.empty)),
                          self._ctx.copy())
        if self._replica is not None:
            view._bind(self._replica, self.clock)
        view._journal = []
        fn(view)
        joined = self._wrap(inner, inner.kind.copy(inner.kind.empty), CausalContext())
        for step in view._journal:
            joined.merge(step)
        store = {key: joined._store} if joined._store else {}
        delta: ORMap = self._commit(self._wrap(self._spec, store, joined._ctx))
        return delta

    def remove(self, key: Key) -> ORMap:
        """Remove ``key`` and reset its value as observed here (empty delta when absent)."""
        return self._commit(self._remove_delta([check_key(key)]))

    def _encode(self) -> dict[str, Any]:
        return {"value_type": self.value_type, **super()._encode()}

    @classmethod
    def _wire_spec(cls, data: Mapping[str, Any]) -> CausalSpec:
        value_type = require(data, "value_type")
        if not isinstance(value_type, str):
            raise ConfigError("must be a string", source=SOURCE, field="value_type",
                              value=value_type)
        return spec_of(f"ORMap[{value_type}]")
