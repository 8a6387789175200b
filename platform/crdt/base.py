"""Shared ground of the CRDT modules: argument and wire-format validation, the :class:`CRDT`
base class (replica binding, type registry, tagged and versioned serialisation, pickling,
equality) and :func:`load` / :func:`loads`."""

from __future__ import annotations

import json
import reprlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

from herd.platform.clocks import HLCTimestamp, HybridLogicalClock
from herd.platform.errors import ConfigError

SOURCE = "crdt"
VERSION = 1

Key = str | int
Dot = tuple[str, int]
Json = Any
C = TypeVar("C", bound="CRDT")


# ------------------------------------------------------------------------------ validation

def check_replica(replica: Any, field: str = "replica") -> str:
    if not isinstance(replica, str) or not replica:
        raise ConfigError("replica id must be a non-empty string", source=SOURCE, field=field,
                          value=replica)
    return replica


def check_int(value: Any, field: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"must be an integer >= {minimum}", source=SOURCE, field=field,
                          value=value)
    return value


def check_key(key: Any, field: str = "key") -> Key:
    if isinstance(key, bool) or not isinstance(key, (str, int)):
        raise ConfigError("set elements and map keys must be strings or integers",
                          source=SOURCE, field=field, value=key)
    return key


def key_order(key: Key) -> tuple[bool, Key]:
    """Sort key for mixed str/int keys: integers first, then strings."""
    return isinstance(key, str), key


# one encoder each: json.dumps with options builds a new encoder on every call (hot here)
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), allow_nan=False)
_COMPACT = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def canonical(value: Any, field: str = "value") -> str:
    """Canonical JSON text of ``value``; ConfigError when it is not a JSON value."""
    try:
        return _CANONICAL.encode(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"must be a JSON value ({exc})", source=SOURCE, field=field,
                          value=value) from exc


def check_list(data: Any, field: str, length: int | None = None) -> list[Any]:
    if not isinstance(data, list) or (length is not None and len(data) != length):
        shape = "a list" if length is None else f"a list of {length} items"
        raise ConfigError(f"must be {shape}", source=SOURCE, field=field, value=data)
    return data


def check_mapping(data: Any, field: str) -> Mapping[Any, Any]:
    if not isinstance(data, Mapping):
        raise ConfigError("must be a mapping", source=SOURCE, field=field, value=data)
    return data


def require(data: Mapping[str, Any], name: str) -> Any:
    if name not in data:
        raise ConfigError("missing field", source=SOURCE, field=name, value=None)
    return data[name]


def check_counts(data: Any, field: str) -> dict[str, int]:
    """Validated replica -> count map with zero entries dropped (``{a: 0}`` equals ``{}``)."""
    checked = {check_replica(r, f"{field}.{r}"): check_int(n, f"{field}.{r}", 0)
               for r, n in check_mapping(data, field).items()}
    return {r: n for r, n in checked.items() if n}


def join_counts(mine: dict[str, int], theirs: Mapping[str, int]) -> None:
    """Join ``theirs`` into ``mine`` in place: the per-replica maximum."""
    for replica, count in theirs.items():
        if count > mine.get(replica, 0):
            mine[replica] = count


def check_dot(data: Any, field: str) -> Dot:
    replica, counter = check_list(list(data) if isinstance(data, tuple) else data, field, 2)
    return check_replica(replica, field), check_int(counter, field, 1)


def _json_bytes(data: Any) -> bytes:
    return _COMPACT.encode(data).encode()


# ------------------------------------------------------------------------------ base class

class CRDT(ABC):
    """A delta-state CRDT replica, bound to the id of the replica it stands for, or to none.

    The id is what mutations mint under (counter entries, dots, HLC timestamps). A state without
    one can be read, merged and serialised; a mutation that needs an id raises ConfigError.
    Concrete subclasses register for :func:`load` by ``TYPE``; a class declared with
    ``abstract=True`` does not.
    """

    TYPE: ClassVar[str]
    _types: ClassVar[dict[str, type[CRDT]]] = {}
    __slots__ = ("_journal", "_replica", "_clock")
    _journal: list[CRDT] | None  # ORMap.update collects a nested value's deltas here
    _replica: str | None
    _clock: HybridLogicalClock | None
    __hash__ = None  # type: ignore[assignment]  # mutable replicas

    def __init_subclass__(cls, abstract: bool = False, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not abstract:
            cls.TYPE = cls.__name__
            CRDT._types[cls.TYPE] = cls

    def _bind(self, replica: str | None, clock: HybridLogicalClock | None = None) -> None:
        """Bind this state to ``replica`` (and its clock: by default one is made on first use;
        a clock given without a replica id brings its own)."""
        if clock is not None:
            if not isinstance(clock, HybridLogicalClock):
                raise ConfigError("must be a HybridLogicalClock", source=SOURCE, field="clock",
                                  value=clock)
            if replica is None:
                replica = clock.replica
            elif clock.replica != replica:
                raise ConfigError(f"the clock belongs to replica {clock.replica!r}, not "
                                  f"{replica!r}", source=SOURCE, field="clock", value=clock)
        self._journal = None
        self._replica = None if replica is None else check_replica(replica)
        self._clock = clock

    @property
    def replica(self) -> str | None:
        """The replica id mutations mint under (None: read, merge and serialise only)."""
        return self._replica

    @property
    def clock(self) -> HybridLogicalClock:
        """This replica's hybrid logical clock (made on first use; needs a replica id)."""
        if self._clock is None:
            self._clock = HybridLogicalClock(self._writer())
        return self._clock

    def _writer(self) -> str:
        """The replica id a mutation mints under; ConfigError when this state has none."""
        if self._replica is None:
            raise ConfigError(f"this {self.TYPE} has no replica id to mutate under: create it "
                              f"as {self.TYPE}(<replica id>, ...), or bind a copy or a loaded "
                              "state with copy(<replica id>) / from_dict(data, replica=...)",
                              source=SOURCE, field="replica", value=None)
        return self._replica

    def _stamp(self, at: HLCTimestamp | HybridLogicalClock | None,
               seen: HLCTimestamp | None) -> HLCTimestamp:
        """The timestamp of a write: ``at`` itself, or the next stamp of a clock (``at``, or
        this replica's clock for None). The clock first receives ``seen``, the newest write the
        new one replaces, so the write orders after it (ClockSkewError when ``seen`` is further
        ahead of local time than the clock's ``max_drift_ms``)."""
        if isinstance(at, HLCTimestamp):
            return at
        if at is not None and not isinstance(at, HybridLogicalClock):
            raise ConfigError("must be an HLCTimestamp, a HybridLogicalClock or None",
                              source=SOURCE, field="at", value=at)
        clock = self.clock if at is None else at
        last = clock.last
        if seen is not None and (last is None or seen > last):
            return clock.update(seen)
        return clock.now()

    @abstractmethod
    def value(self) -> Any:
        """What the application reads."""

    @abstractmethod
    def merge(self: C, other: C) -> C:
        """Join ``other`` (a full state or a delta) into this replica; returns ``self``."""

    @abstractmethod
    def _clone(self: C) -> C:
        """An independent state equal to this one, bound to no replica."""

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

    def copy(self: C, replica: str | None = None) -> C:
        """An independent state equal to this one, bound to ``replica``: by default to none,
        since two writers must never share an id. A copy bound to this state's own id (a
        snapshot to continue from) shares its clock."""
        state = self._clone()
        state._bind(replica, self.clock if replica is not None and replica == self._replica
                    else None)
        return state

    def to_dict(self) -> dict[str, Any]:
        """``{"type": ..., "v": 1, ...}``, JSON-safe and deterministic. The replica id is not
        part of it: a state read back is bound to the id given to :meth:`from_dict`."""
        return {"type": self.TYPE, "v": VERSION, **self._encode()}

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any], replica: str | None = None, *,
                  clock: HybridLogicalClock | None = None) -> C:
        """Inverse of :meth:`to_dict`, bound to ``replica`` (and ``clock``, e.g. the clock of
        the state it replaces); ConfigError on a wrong tag, version or content."""
        check_mapping(data, "data")
        if data.get("type") != cls.TYPE:
            raise ConfigError(f"expected type {cls.TYPE!r}", source=SOURCE, field="type",
                              value=data.get("type"))
        version = require(data, "v")
        if isinstance(version, bool) or version != VERSION:
            raise ConfigError(f"unsupported version (supported: {VERSION})", source=SOURCE,
                              field="v", value=version)
        state = cls._decode(data)
        state._bind(replica, clock)
        return state

    def to_bytes(self) -> bytes:
        """Compact UTF-8 JSON of :meth:`to_dict`."""
        return _json_bytes(self.to_dict())

    @classmethod
    def from_bytes(cls: type[C], raw: bytes, replica: str | None = None, *,
                   clock: HybridLogicalClock | None = None) -> C:
        """Inverse of :meth:`to_bytes`, bound to ``replica`` (and ``clock``)."""
        return cls.from_dict(parse_bytes(raw), replica, clock=clock)

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
        same: bool = self._state() == other._state()
        return same

    def __repr__(self) -> str:
        return f"{self.TYPE}({reprlib.repr(self.value())})"

    def __reduce__(self) -> tuple[Callable[[bytes], CRDT], tuple[bytes]]:
        # like to_bytes, a pickle carries no replica id (unpickling on another process must
        # not make a second writer under this one's id)
        return loads, (self.to_bytes(),)


def load(data: Mapping[str, Any], replica: str | None = None, *,
         clock: HybridLogicalClock | None = None) -> CRDT:
    """Any CRDT from its ``to_dict()`` form, dispatched on the ``type`` tag, bound to
    ``replica`` (and ``clock``)."""
    type_name = data.get("type") if isinstance(data, Mapping) else None
    cls = CRDT._types.get(type_name) if isinstance(type_name, str) else None
    if cls is None:
        raise ConfigError(f"unknown CRDT type (known: {sorted(CRDT._types)})", source=SOURCE,
                          field="type", value=type_name)
    return cls.from_dict(data, replica, clock=clock)


def loads(raw: bytes, replica: str | None = None, *,
          clock: HybridLogicalClock | None = None) -> CRDT:
    """Any CRDT from its ``to_bytes()`` form, bound to ``replica`` (and ``clock``)."""
    return load(parse_bytes(raw), replica, clock=clock)


def parse_bytes(raw: Any) -> Any:
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise ConfigError("must be bytes", source=SOURCE, field="raw", value=type(raw).__name__)
    try:
        return json.loads(bytes(raw).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"not UTF-8 JSON ({exc})", source=SOURCE, field="raw",
                          value=bytes(raw[:64])) from exc
