"""The machinery of the causal CRDTs: :class:`CausalContext` (the dots a state has seen) and
the dot stores (DotSet, DotFun, DotMap) with their joins and wire codecs."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from herd.platform.clocks import HLCTimestamp
from herd.platform.crdt.base import (
    SOURCE,
    Dot,
    Key,
    canonical,
    check_counts,
    check_dot,
    check_key,
    check_list,
    check_mapping,
    check_replica,
    key_order,
    require,
)
from herd.platform.errors import ConfigError

S = TypeVar("S")


# ------------------------------------------------------------------------------ causal context

class CausalContext:
    """The set of dots a causal state has seen: a version vector plus a dot cloud.

    ``vv[r] = n`` stands for the dots ``(r, 1) .. (r, n)``; the cloud holds the dots beyond
    each contiguous prefix. The form is kept compact (cloud dots that extend a prefix move into
    it), which makes it canonical: equal dot sets have equal representations. Mutable.
    """

    __slots__ = ("_vv", "_cloud")

    def __init__(self, vv: Mapping[str, int] | None = None, cloud: Iterable[Any] = ()) -> None:
        self._vv = check_counts(vv or {}, "context.vv")
        self._cloud = {check_dot(d, "context.cloud") for d in cloud}
        self._compact()

    @classmethod
    def of_dots(cls, dots: Iterable[Dot]) -> CausalContext:
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
        check_replica(replica)
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
        """Union with ``other`` in place; returns ``self``. O(size of ``other``) while this
        context's vector only grows through ``other``'s cloud (joining many small deltas into
        a large context); a full compaction, O(cloud), when ``other``'s vector jumps ahead of
        it with a cloud here."""
        vv, cloud = self._vv, self._cloud
        jumped = False
        for replica, count in other._vv.items():
            if count > vv.get(replica, 0):
                vv[replica] = count
                jumped = True
        if jumped and cloud:
            cloud |= other._cloud
            self._compact()
            return self
        for dot in other._cloud:
            replica, n = dot
            top = vv.get(replica, 0)
            if n <= top or dot in cloud:
                continue
            if n > top + 1:
                cloud.add(dot)
                continue
            # extends the prefix: so may the cloud dots right after it
            while (replica, n + 1) in cloud:
                n += 1
                cloud.remove((replica, n))
            vv[replica] = n
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
        data = check_mapping(data, "context")
        return cls(require(data, "vv"), check_list(require(data, "cloud"), "context.cloud"))

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

class StoreKind(ABC, Generic[S]):
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


class DotSetKind(StoreKind[frozenset[Dot]]):
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
        return frozenset(check_dot(d, f"{field}[{i}]")
                         for i, d in enumerate(check_list(data, field)))


def _drop_covered_set(store: frozenset[Dot], ctx: CausalContext) -> frozenset[Dot]:
    """``store`` without the dots ``ctx`` has seen (``store`` itself when none is)."""
    vv, cloud = ctx._vv, ctx._cloud
    for replica, n in store:  # the common case keeps every dot: check before building
        if n <= vv.get(replica, 0) or (replica, n) in cloud:
            return frozenset(d for d in store if not ctx.covers(d))
    return store


class ValueCodec(ABC):
    """How a DotFun stores, encodes and decodes its values."""

    @abstractmethod
    def encode(self, value: Any) -> Any: ...

    @abstractmethod
    def decode(self, data: Any, field: str) -> Any: ...


class JsonCodec(ValueCodec):
    """Values are canonical JSON texts."""

    def encode(self, value: str) -> Any:
        return json.loads(value)

    def decode(self, data: Any, field: str) -> str:
        return canonical(data, field)


class LWWCodec(ValueCodec):
    """Values are ``(HLCTimestamp, canonical JSON text)``; encoded ``[wall, logical, r, v]``."""

    def encode(self, value: tuple[HLCTimestamp, str]) -> Any:
        ts, text = value
        return [ts.wall_ms, ts.logical, ts.replica, json.loads(text)]

    def decode(self, data: Any, field: str) -> tuple[HLCTimestamp, str]:
        wall_ms, logical, replica, value = check_list(data, field, 4)
        return HLCTimestamp(wall_ms, logical, replica), canonical(value, field)


class DotFunKind(StoreKind[dict[Dot, Any]]):
    """dot -> value. The same dot always carries the same value (one write); should a reused
    replica id make them differ, the greater value is kept so the join stays commutative."""

    def __init__(self, codec: ValueCodec) -> None:
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
        for i, item in enumerate(check_list(data, field)):
            replica, counter, value = check_list(item, f"{field}[{i}]", 3)
            dot = check_dot([replica, counter], f"{field}[{i}]")
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


class DotMapKind(StoreKind[dict[Key, Any]]):
    """key -> non-empty dot store of ``value`` kind; the join is per key, dropping bottoms."""

    def __init__(self, value: StoreKind[Any]) -> None:
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
        return [[k, self.value.encode(store[k])] for k in sorted(store, key=key_order)]

    def decode(self, data: Any, field: str) -> dict[Key, Any]:
        store: dict[Key, Any] = {}
        for i, item in enumerate(check_list(data, field)):
            raw_key, raw_value = check_list(item, f"{field}[{i}]", 2)
            key = check_key(raw_key, f"{field}[{i}]")
            if key in store:
                raise ConfigError("duplicate key", source=SOURCE, field=f"{field}[{i}]",
                                  value=key)
            nested = self.value.decode(raw_value, f"{field}[{i}]")
            if nested:
                store[key] = nested
        return store

    def copy(self, store: dict[Key, Any]) -> dict[Key, Any]:
        return dict(store)


DOT_SET = DotSetKind()
JSON_VALUES = JsonCodec()
LWW_VALUES = LWWCodec()
