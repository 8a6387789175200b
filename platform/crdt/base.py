"""Shared ground of the CRDT modules: argument and wire-format validation, the :class:`CRDT`
base class (type registry, tagged and versioned serialisation, pickling, equality)."""

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


def canonical(value: Any, field: str = "value") -> str:
    """Canonical JSON text of ``value``; ConfigError when it is not a JSON value."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
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


def to_timestamp(at: Any, field: str = "at") -> HLCTimestamp:
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
        check_mapping(data, "data")
        if data.get("type") != cls.TYPE:
            raise ConfigError(f"expected type {cls.TYPE!r}", source=SOURCE, field="type",
                              value=data.get("type"))
        version = require(data, "v")
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
        return cls.from_dict(parse_bytes(raw))

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
        from herd.platform.crdt import loads  # the facade: it imports (registers) every type
        return loads, (self.to_bytes(),)


def parse_bytes(raw: Any) -> Any:
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise ConfigError("must be bytes", source=SOURCE, field="raw", value=type(raw).__name__)
    try:
        return json.loads(bytes(raw).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"not UTF-8 JSON ({exc})", source=SOURCE, field="raw",
                          value=bytes(raw[:64])) from exc
