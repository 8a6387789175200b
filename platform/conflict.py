"""Conflict resolution between a local and a remote version of a replicated value.

A :class:`Versioned` value carries the metadata a strategy needs; :func:`resolve` picks or builds
the version both replicas should keep:

* ``"lww"`` (last writer wins): the version with the greater :class:`HLCTimestamp` wins. The
  replica id is part of the timestamp's total order, so two replicas never tie; should the very
  same timestamp carry two different values (a replica id reused), the canonical form of the
  values decides. The sketch's wall-clock last-write-wins is ``resolve(local, remote, "lww")``.
* ``"vector_clock"``: the causally later version wins. Concurrent versions (and, defensively,
  equal clocks with different values) are combined by the caller's ``merge(local, remote)``,
  and the result carries the merged clock, so it descends from both; without ``merge`` a
  :class:`ConflictError` names both clocks.
* ``"crdt"``: the values are state-based CRDTs (anything with a ``merge(other)`` method) and the
  result is their join ``local.value.merge(remote.value)``.

Commutativity: ``resolve(a, b) == resolve(b, a)`` for ``"lww"`` always, for ``"crdt"`` whenever
the CRDT's merge is commutative (as a CRDT's must be), and for ``"vector_clock"`` whenever the
given ``merge`` function is commutative. Replicas that resolve in either direction therefore
keep the same version.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar, get_args

from herd.platform.clocks import HLCTimestamp, VectorClock
from herd.platform.errors import ConfigError, HerdError

__all__ = ["ConflictError", "Strategy", "STRATEGIES", "Versioned", "resolve"]

T = TypeVar("T")
Strategy = Literal["lww", "vector_clock", "crdt"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)

SOURCE = "conflict"


class ConflictError(HerdError):
    """Two versions are concurrent and no merge function was given to combine them."""

    def __init__(self, local_clock: VectorClock, remote_clock: VectorClock) -> None:
        self.local_clock = local_clock
        self.remote_clock = remote_clock
        super().__init__(f"concurrent versions: local clock {local_clock!r} and remote clock "
                         f"{remote_clock!r} do not order and no merge function was given")


@dataclass(frozen=True)
class Versioned(Generic[T]):
    """A value with the metadata conflict strategies read: ``timestamp`` for ``"lww"``,
    ``clock`` for ``"vector_clock"``; ``"crdt"`` needs neither."""

    value: T
    timestamp: HLCTimestamp | None = None
    clock: VectorClock | None = None

    def __post_init__(self) -> None:
        if self.timestamp is not None and not isinstance(self.timestamp, HLCTimestamp):
            raise ConfigError("must be an HLCTimestamp or None", source=SOURCE,
                              field="timestamp", value=self.timestamp)
        if self.clock is not None and not isinstance(self.clock, VectorClock):
            raise ConfigError("must be a VectorClock or None", source=SOURCE, field="clock",
                              value=self.clock)


def resolve(local: Versioned[T], remote: Versioned[T], strategy: Strategy = "lww",
            merge: Callable[[T, T], T] | None = None) -> Versioned[T]:
    """The version to keep after seeing ``local`` and ``remote`` (see the module docstring).

    ``merge`` is used only by ``"vector_clock"``. Raises ConfigError on an unknown strategy or
    missing metadata, ConflictError on concurrent versions without ``merge``.
    """
    for side, version in (("local", local), ("remote", remote)):
        if not isinstance(version, Versioned):
            raise ConfigError("must be a Versioned", source=SOURCE, field=side, value=version)
    if strategy == "lww":
        return _last_writer_wins(local, remote)
    if strategy == "vector_clock":
        return _by_vector_clock(local, remote, merge)
    if strategy == "crdt":
        return _join(local, remote)
    raise ConfigError(f"unknown strategy (known: {', '.join(STRATEGIES)})", source=SOURCE,
                      field="strategy", value=strategy)


# ------------------------------------------------------------------------------ strategies

def _last_writer_wins(local: Versioned[T], remote: Versioned[T]) -> Versioned[T]:
    _require_timestamp(local, "local")
    _require_timestamp(remote, "remote")
    return max(local, remote, key=_lww_rank)


def _lww_rank(version: Versioned[Any]) -> tuple[HLCTimestamp, str, str]:
    """Sort key of a version under LWW. Past the timestamp, the canonical value (and clock) only
    matter for identical timestamps and keep the pick deterministic and commutative."""
    clock = "" if version.clock is None else _canonical(version.clock.to_dict())
    return version.timestamp, _canonical(version.value), clock  # type: ignore[return-value]


def _by_vector_clock(local: Versioned[T], remote: Versioned[T],
                     merge: Callable[[T, T], T] | None) -> Versioned[T]:
    local_clock = _require_clock(local, "local")
    remote_clock = _require_clock(remote, "remote")
    if merge is not None and not callable(merge):
        raise ConfigError("must be callable", source=SOURCE, field="merge", value=merge)
    ordering = local_clock.compare(remote_clock)
    if ordering == "after" or (ordering == "equal" and local.value == remote.value):
        return local
    if ordering == "before":
        return remote
    # Concurrent, or equal clocks with different values (which a correct replica never
    # produces): neither version has seen the other, so only the caller can combine them.
    if merge is None:
        raise ConflictError(local_clock, remote_clock)
    return Versioned(merge(local.value, remote.value),
                     timestamp=_max_timestamp(local, remote),
                     clock=local_clock.merge(remote_clock))


def _join(local: Versioned[T], remote: Versioned[T]) -> Versioned[T]:
    for side, version in (("local", local), ("remote", remote)):
        if not callable(getattr(version.value, "merge", None)):
            raise ConfigError("value has no merge(other) method, so it is not a CRDT",
                              source=SOURCE, field=f"{side}.value",
                              value=type(version.value).__name__)
    clock = local.clock if remote.clock is None else \
        remote.clock if local.clock is None else local.clock.merge(remote.clock)
    return Versioned(local.value.merge(remote.value),  # type: ignore[attr-defined]
                     timestamp=_max_timestamp(local, remote), clock=clock)


# ------------------------------------------------------------------------------ helpers

def _require_timestamp(version: Versioned[Any], side: str) -> HLCTimestamp:
    if version.timestamp is None:
        raise ConfigError("strategy 'lww' needs a timestamp", source=SOURCE,
                          field=f"{side}.timestamp", value=None)
    return version.timestamp


def _require_clock(version: Versioned[Any], side: str) -> VectorClock:
    if version.clock is None:
        raise ConfigError("strategy 'vector_clock' needs a clock", source=SOURCE,
                          field=f"{side}.clock", value=None)
    return version.clock


def _max_timestamp(local: Versioned[Any], remote: Versioned[Any]) -> HLCTimestamp | None:
    stamps = [v.timestamp for v in (local, remote) if v.timestamp is not None]
    return max(stamps) if stamps else None


def _canonical(value: Any) -> str:
    """A text form of ``value`` that is the same in every process: canonical JSON, with sets
    sorted (their iteration order varies with string hashing) and ``repr`` as the fallback."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), default=_json_fallback)
    except (TypeError, ValueError):
        return repr(value)


def _json_fallback(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return sorted(_canonical(item) for item in value)
    return repr(value)
