"""Logical clocks: vector clocks for causality, hybrid logical clocks for a total order.

:class:`VectorClock` maps a replica id to the number of events seen from that replica and
answers the causal question "did this happen before that?". ``compare`` returns one of
``"before" | "after" | "equal" | "concurrent"`` from the pointwise order of the two clocks:

* ``"equal"`` when every entry is the same (missing entries count as zero);
* ``"before"`` when ``self <= other`` pointwise and they differ (``self`` happened before);
* ``"after"`` when ``self >= other`` pointwise and they differ;
* ``"concurrent"`` otherwise: each side has seen an event the other has not.

The Elixir sketch this project grew from got this wrong: it never answered "equal", it called
``{a: 2, b: 1}`` vs ``{a: 1, b: 1}`` concurrent and ``{a: 2}`` vs ``{a: 1, b: 5}`` ordered.
Here ``{a: 2, b: 1}`` is ``"after"`` ``{a: 1, b: 1}`` (it has seen everything the other has,
and one more event of ``a``), ``{a: 2}`` vs ``{a: 1, b: 5}`` is ``"concurrent"`` (each has
events the other lacks), and equal clocks are ``"equal"``.

:class:`HybridLogicalClock` (Kulkarni et al., "Logical Physical Clocks", 2014) stamps events
with an :class:`HLCTimestamp` ``(wall_ms, logical, replica)``. ``wall_ms`` follows physical time
but never goes backwards; ``logical`` orders events within one millisecond and while physical
time lags behind a timestamp already seen; ``replica`` breaks the remaining ties, so timestamps
of different replicas are totally ordered and every replica picks the same last writer. Every
timestamp a clock hands out is strictly greater than every timestamp it handed out or accepted
before, whatever the physical clock does.

Drift rejection: a receive event (``update``) adopts the remote ``wall_ms`` when it is ahead of
local time, so one replica with a clock far in the future would drag every other clock with it,
and their timestamps would then stop following physical time. ``update`` therefore refuses (with
:class:`~herd.platform.errors.ClockSkewError`, leaving the clock untouched) a remote timestamp
whose ``wall_ms`` is more than ``max_drift_ms`` ahead of local physical time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, NoReturn

from herd.platform.errors import ClockSkewError, ConfigError

__all__ = ["Ordering", "VectorClock", "HLCTimestamp", "HybridLogicalClock", "happened_before",
           "ClockSkewError"]

Ordering = Literal["before", "after", "equal", "concurrent"]

SOURCE = "clocks"
VECTOR_CLOCK_TYPE = "VectorClock"
VECTOR_CLOCK_VERSION = 1


# ------------------------------------------------------------------------------ validation

def _replica(replica: Any, field: str = "replica", source: str = SOURCE) -> str:
    if not isinstance(replica, str) or not replica:
        raise ConfigError("replica id must be a non-empty string", source=source, field=field,
                          value=replica)
    return replica


def _count(value: Any, field: str, source: str = SOURCE) -> int:
    # bool is an int subclass; True as a count is always a bug, not a 1.
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError("must be an integer >= 0", source=source, field=field, value=value)
    return value


def _mapping(data: Any, field: str, source: str) -> Mapping[Any, Any]:
    if not isinstance(data, Mapping):
        raise ConfigError("must be a mapping", source=source, field=field, value=data)
    return data


def _require(data: Mapping[str, Any], name: str, source: str) -> Any:
    if name not in data:
        raise ConfigError("missing field", source=source, field=name, value=None)
    return data[name]


# ------------------------------------------------------------------------------ vector clock

class VectorClock:
    """Replica id -> number of events seen from it; an immutable value object.

    Missing entries are zero, and zero entries are dropped, so ``VectorClock({"a": 0})`` equals
    ``VectorClock()``. Operations return new clocks. ``<=`` is the causal partial order
    (``a <= b`` when ``b`` descends from ``a``), so ``a <= b or b <= a`` can both be false.
    """

    __slots__ = ("_clock",)
    _clock: dict[str, int]

    def __init__(self, clock: Mapping[str, int] | None = None) -> None:
        raw = _mapping({} if clock is None else clock, "clock", VECTOR_CLOCK_TYPE)
        checked = {_replica(r, f"clock.{r}", VECTOR_CLOCK_TYPE):
                   _count(n, f"clock.{r}", VECTOR_CLOCK_TYPE) for r, n in raw.items()}
        object.__setattr__(self, "_clock", {r: n for r, n in checked.items() if n})

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def get(self, replica: str) -> int:
        """Events seen from ``replica`` (0 when it has none)."""
        return self._clock.get(replica, 0)

    def value(self) -> dict[str, int]:
        """A copy of the non-zero entries."""
        return dict(self._clock)

    def increment(self, replica: str) -> VectorClock:
        """The clock after one more event of ``replica``."""
        _replica(replica)
        return VectorClock({**self._clock, replica: self.get(replica) + 1})

    def merge(self, other: VectorClock) -> VectorClock:
        """Pointwise maximum: the clock that has seen every event either side has seen."""
        _check_clock(other)
        return VectorClock({r: max(self.get(r), other.get(r))
                            for r in self._clock.keys() | other._clock.keys()})

    def descends(self, other: VectorClock) -> bool:
        """True when this clock has seen every event ``other`` has (``self >= other``)."""
        _check_clock(other)
        return all(self.get(r) >= n for r, n in other._clock.items())

    def compare(self, other: VectorClock) -> Ordering:
        """``"before"`` when ``self`` happened before ``other``, ``"after"`` when after,
        ``"equal"`` when the clocks are the same, ``"concurrent"`` otherwise."""
        ge, le = self.descends(other), other.descends(self)
        if ge and le:
            return "equal"
        if le:
            return "before"
        if ge:
            return "after"
        return "concurrent"

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form: ``{"type": "VectorClock", "v": 1, "clock": {...}}``, keys sorted."""
        return {"type": VECTOR_CLOCK_TYPE, "v": VECTOR_CLOCK_VERSION,
                "clock": dict(sorted(self._clock.items()))}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VectorClock:
        """Inverse of :meth:`to_dict`; ConfigError on a wrong type tag, an unknown version or
        bad entries."""
        _mapping(data, "data", VECTOR_CLOCK_TYPE)
        if _require(data, "type", VECTOR_CLOCK_TYPE) != VECTOR_CLOCK_TYPE:
            raise ConfigError(f"expected type {VECTOR_CLOCK_TYPE!r}", source=VECTOR_CLOCK_TYPE,
                              field="type", value=data["type"])
        version = _require(data, "v", VECTOR_CLOCK_TYPE)
        if isinstance(version, bool) or version != VECTOR_CLOCK_VERSION:
            raise ConfigError(f"unknown version (supported: {VECTOR_CLOCK_VERSION})",
                              source=VECTOR_CLOCK_TYPE, field="v", value=version)
        return cls(_require(data, "clock", VECTOR_CLOCK_TYPE))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, VectorClock):
            return NotImplemented
        return self._clock == other._clock

    def __hash__(self) -> int:
        return hash(frozenset(self._clock.items()))

    def __le__(self, other: object) -> bool:
        if not isinstance(other, VectorClock):
            return NotImplemented
        return other.descends(self)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, VectorClock):
            return NotImplemented
        return self.compare(other) == "before"

    def __repr__(self) -> str:
        return f"VectorClock({dict(sorted(self._clock.items()))!r})"


def _check_clock(other: Any) -> None:
    if not isinstance(other, VectorClock):
        raise ConfigError("must be a VectorClock", source=VECTOR_CLOCK_TYPE, field="other",
                          value=other)


def happened_before(a: VectorClock, b: VectorClock) -> bool:
    """True when the event stamped ``a`` causally precedes the one stamped ``b``."""
    return a.compare(b) == "before"


# ------------------------------------------------------------------------------ HLC

@dataclass(frozen=True, order=True)
class HLCTimestamp:
    """A hybrid-logical-clock timestamp, totally ordered by ``(wall_ms, logical, replica)``."""

    wall_ms: int
    logical: int
    replica: str

    def __post_init__(self) -> None:
        _count(self.wall_ms, "wall_ms", "HLCTimestamp")
        _count(self.logical, "logical", "HLCTimestamp")
        _replica(self.replica, "replica", "HLCTimestamp")

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form: ``{"wall_ms": .., "logical": .., "replica": ..}``."""
        return {"wall_ms": self.wall_ms, "logical": self.logical, "replica": self.replica}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HLCTimestamp:
        """Inverse of :meth:`to_dict`; ConfigError on missing or invalid fields."""
        _mapping(data, "data", "HLCTimestamp")
        return cls(*(_require(data, name, "HLCTimestamp")
                     for name in ("wall_ms", "logical", "replica")))


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class HybridLogicalClock:
    """A hybrid logical clock for one replica (mutable, thread-safe).

    ``now()`` stamps a local event or a send; ``update(remote)`` stamps the receipt of a message
    stamped ``remote``, so that everything this replica does afterwards orders after it.
    ``physical_ms`` reads physical time in milliseconds (wall time by default; inject a fake in
    tests). ``max_drift_ms`` bounds how far ahead of local physical time a remote timestamp may
    be (see the module docstring).
    """

    def __init__(self, replica: str, max_drift_ms: int = 60_000,
                 physical_ms: Callable[[], int] | None = None) -> None:
        self.replica: str = _replica(replica, "replica", "HybridLogicalClock")
        self.max_drift_ms: int = _count(max_drift_ms, "max_drift_ms", "HybridLogicalClock")
        if physical_ms is not None and not callable(physical_ms):
            raise ConfigError("must be callable", source="HybridLogicalClock",
                              field="physical_ms", value=physical_ms)
        self._physical_ms = physical_ms or _wall_clock_ms
        self._lock = threading.Lock()
        self._last: HLCTimestamp | None = None

    @property
    def last(self) -> HLCTimestamp | None:
        """The latest timestamp this clock returned (None before the first event)."""
        return self._last

    def now(self) -> HLCTimestamp:
        """Stamp a local or send event: strictly greater than every earlier stamp."""
        with self._lock:
            physical = self._physical_ms()
            last = self._last
            if last is None or physical > last.wall_ms:
                stamp = HLCTimestamp(physical, 0, self.replica)
            else:
                stamp = HLCTimestamp(last.wall_ms, last.logical + 1, self.replica)
            self._last = stamp
            return stamp

    def update(self, remote: HLCTimestamp) -> HLCTimestamp:
        """Stamp the receipt of a message stamped ``remote``: the result is greater than both
        ``remote`` and every earlier stamp of this clock.

        Raises ClockSkewError, leaving the clock unchanged, when ``remote.wall_ms`` is more than
        ``max_drift_ms`` ahead of local physical time.
        """
        if not isinstance(remote, HLCTimestamp):
            raise ConfigError("must be an HLCTimestamp", source="HybridLogicalClock",
                              field="remote", value=remote)
        with self._lock:
            physical = self._physical_ms()
            if remote.wall_ms - physical > self.max_drift_ms:
                raise ClockSkewError(
                    f"remote timestamp wall_ms={remote.wall_ms} (replica {remote.replica!r}) is "
                    f"{remote.wall_ms - physical} ms ahead of local physical time "
                    f"{physical} ms on replica {self.replica!r}; max_drift_ms="
                    f"{self.max_drift_ms}")
            stamp = self._receive(remote, physical)
            self._last = stamp
            return stamp

    def _receive(self, remote: HLCTimestamp, physical: int) -> HLCTimestamp:
        """The receive rule of Kulkarni et al.: take the largest wall time of (local, remote,
        physical) and count past every logical value already seen at that wall time."""
        local_wall, local_logical = (-1, -1) if self._last is None \
            else (self._last.wall_ms, self._last.logical)
        wall = max(local_wall, remote.wall_ms, physical)
        logical = -1  # becomes 0 when physical time alone is the maximum
        if wall == local_wall:
            logical = max(logical, local_logical)
        if wall == remote.wall_ms:
            logical = max(logical, remote.logical)
        return HLCTimestamp(wall, logical + 1, self.replica)

    def __repr__(self) -> str:
        return (f"HybridLogicalClock(replica={self.replica!r}, "
                f"max_drift_ms={self.max_drift_ms}, last={self._last!r})")
