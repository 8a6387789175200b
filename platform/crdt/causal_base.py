"""The base classes of the causal CRDTs: a dot store plus its causal context, joined as in the
paper (:class:`Causal`), and the key-indexed DotMap variant (:class:`CausalMap`). The concrete
types are in ``causal_types``."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from herd.platform.crdt.base import CRDT, SOURCE, Dot, Key, require
from herd.platform.crdt.causal import CausalContext, DotMapKind, StoreKind
from herd.platform.errors import ConfigError


@dataclass(frozen=True, eq=False)
class CausalSpec:
    """A causal type: its name (``"ORSet"``, ``"ORMap[MVRegister]"``), class, store kind and,
    for ORMap, the spec of its values."""

    name: str
    cls: type[Causal]
    kind: StoreKind[Any]
    value: CausalSpec | None = None


# ------------------------------------------------------------------------------ causal types

class Causal(CRDT, abstract=True):
    """A causal CRDT: a dot store plus the causal context of every dot it has seen.

    Invariant: every dot in the store is in the context. The join is the paper's:
    a dot survives when both sides have it, or when one side has it and the other has not
    seen it; a dot one side has seen but no longer holds was removed there.
    """

    __slots__ = ("_spec", "_store", "_ctx")

    def _init(self, spec: CausalSpec, store: Any, ctx: CausalContext) -> None:
        """Set the state (every constructor calls this); the replica binding is reset."""
        self._bind(None)
        self._spec, self._store, self._ctx = spec, store, ctx

    @staticmethod
    def _wrap(spec: CausalSpec, store: Any, ctx: CausalContext) -> Any:
        """An instance of ``spec`` over ``store`` and ``ctx`` (taken over, not copied)."""
        state = spec.cls.__new__(spec.cls)
        state._init(spec, store, ctx)
        return state

    def _delta(self, store: Any, dots: Iterable[Dot]) -> Any:
        """A delta of this type: ``store`` with the exact causal context ``dots``."""
        return self._wrap(self._spec, store, CausalContext.of_dots(dots))

    @classmethod
    @abstractmethod
    def _read(cls, spec: CausalSpec, store: Any) -> Any:
        """``value()`` of a store of this type (also used for values nested in an ORMap)."""

    def value(self) -> Any:
        return self._read(self._spec, self._store)

    def context(self) -> CausalContext:
        """A copy of the causal context (the dots this state has seen), without the store."""
        return self._ctx.copy()

    def merge(self, other: Any) -> Any:
        self._check_mergeable(other)
        self._store = self._spec.kind.join(self._store, self._ctx, other._store, other._ctx)
        self._ctx.merge(other._ctx)
        return self

    def _clone(self) -> Any:
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
    @abstractmethod
    def _wire_spec(cls, data: Mapping[str, Any]) -> CausalSpec:
        """The spec of a state of this class in its ``to_dict`` form ``data``."""

    @classmethod
    def _decode(cls, data: Mapping[str, Any]) -> Any:
        return cls._decode_spec(cls._wire_spec(data), data)

    @classmethod
    def _decode_spec(cls, spec: CausalSpec, data: Mapping[str, Any]) -> Any:
        ctx = CausalContext.from_dict(require(data, "context"))
        store = spec.kind.decode(require(data, "store"), "store")
        seen: set[Dot] = set()
        for dot in spec.kind.dots(store):
            if dot in seen or not ctx.covers(dot):
                raise ConfigError("dot repeated or not covered by the context", source=SOURCE,
                                  field="store", value=list(dot))
            seen.add(dot)
        return cls._wrap(spec, store, ctx)


class CausalMap(Causal, abstract=True):
    """A causal CRDT whose store is a DotMap, joined in place key by key.

    Merging a small delta must cost O(delta), not O(state): the keys to revisit are those in
    the other store plus those holding a dot the other context has seen. When the other
    context is small they are found through a dot -> key index (built on first use, then kept
    up to date); otherwise every key is scanned.

    For large maps kept in sync by key ranges (digests per bucket of keys), the per-key
    accessors cost O(keys involved): :meth:`keys`, :meth:`encode_key`, :meth:`slice`,
    :meth:`merge_slice`, and :meth:`changed_keys` to maintain derived data incrementally.
    """

    __slots__ = ("_index", "_changed")

    def _init(self, spec: CausalSpec, store: Any, ctx: CausalContext) -> None:
        super()._init(spec, store, ctx)
        self._index: dict[Dot, Key] | None = None
        self._changed: set[Key] | None = None

    @property
    def _value_kind(self) -> StoreKind[Any]:
        """The kind of the stores the keys map to."""
        kind = self._spec.kind
        assert isinstance(kind, DotMapKind)
        return kind.value

    def __len__(self) -> int:
        return len(self._store)

    def contains(self, key: Key) -> bool:
        return key in self._store

    def __contains__(self, key: object) -> bool:
        return key in self._store

    def keys(self) -> Iterator[Key]:
        """The keys present, in no particular order (O(1) to start; do not mutate meanwhile)."""
        return iter(self._store)

    def encode_key(self, key: Key) -> Any:
        """The wire form of ``key``'s entry: the second item of its ``[key, ...]`` pair in
        ``to_dict()["store"]``; None when the key is absent. O(size of the entry)."""
        nested = self._store.get(key)
        return None if nested is None else self._value_kind.encode(nested)

    def slice(self, keys: Iterable[Key]) -> Any:
        """A state of this type holding only ``keys`` (those present) and a copy of the whole
        causal context, bound to no replica; O(len(keys) + context). Merging it with
        :meth:`merge` would remove every key outside ``keys`` whose dots the context covers:
        join it with :meth:`merge_slice` instead."""
        store = self._store
        nested = {key: store[key] for key in keys if key in store}
        return self._wrap(self._spec, nested, self._ctx.copy())

    def merge(self, other: Any) -> Any:
        self._check_mergeable(other)
        if other is self:
            return self
        return self._join(other, self._keys_seen_by(other._ctx, other._store))

    def merge_slice(self, other: Any, keys: Iterable[Key]) -> Any:
        """Join ``other``, a :meth:`slice` of a state: every entry of ``other`` and its context
        are joined, but of this map's keys that ``other`` does not hold only ``keys`` are
        revisited (removed when ``other``'s context has seen their dots); the others are kept
        as they are, since the slice left them out rather than removed them. With ``keys``
        covering every key this is :meth:`merge`. O(len(other) + len(keys) + context)."""
        self._check_mergeable(other)
        if other is self:
            return self
        mine, theirs = self._store, other._store
        return self._join(other, [key for key in keys if key in mine and key not in theirs])

    def changed_keys(self) -> set[Key]:
        """The keys whose entry was set, replaced or removed since the previous call. The first
        call starts the tracking and returns every key present, so derived data (digests,
        indexes) can be seeded from it and then kept current at O(changes)."""
        if self._changed is None:
            self._changed = set()
            return set(self._store)
        changed, self._changed = self._changed, set()
        return changed

    def _join(self, other: Any, revisit: Iterable[Key]) -> Any:
        """Join ``other``'s entries and context; of this map's keys outside ``other``'s store,
        ``revisit`` are those that may hold a dot ``other``'s context has seen."""
        value_kind = self._value_kind
        mine, theirs, empty = self._store, other._store, value_kind.empty
        mine_ctx, their_ctx = self._ctx, other._ctx
        changes = []
        for key, nested in theirs.items():
            current = mine.get(key, empty)
            joined = value_kind.join(current, mine_ctx, nested, their_ctx)
            if joined is not current:
                changes.append((key, joined))
        for key in revisit:
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
            dots = self._value_kind.dots
            self._index = {dot: key for key, nested in self._store.items()
                           for dot in dots(nested)}
        return self._index

    def _put(self, key: Key, nested: Any) -> None:
        """Set ``key``'s store (bottom deletes the key), keeping the dot index current."""
        if self._index is not None:
            value_kind = self._value_kind
            dots = value_kind.dots
            for dot in dots(self._store.get(key, value_kind.empty)):
                self._index.pop(dot, None)
            for dot in dots(nested):
                self._index[dot] = key
        if nested:
            self._store[key] = nested
        else:
            self._store.pop(key, None)
        if self._changed is not None:
            self._changed.add(key)

    def _remove_delta(self, keys: Iterable[Key]) -> Any:
        """The delta removing ``keys`` as observed here: no store, their dots as context."""
        dots = self._value_kind.dots
        return self._delta({}, [d for k in keys if k in self._store for d in dots(self._store[k])])

    def clear(self) -> Any:
        """Remove every observed key/element; concurrent additions survive."""
        return self._commit(self._remove_delta(list(self._store)))
