"""Errors of the replication layer: every one is a ``HerdError``; none of them changes data."""

from __future__ import annotations

from herd.platform.errors import HerdError
from herd.platform.quorum import QuorumNotAchieved

__all__ = ["ConsistencyUnavailable", "InvalidValue", "QuorumNotAchieved", "ReplicaUnavailable",
           "ReplicationError",
           "StoreExists", "StoreNotFound", "UnknownRegion", "ValueTooLarge", "WrongValueType"]


class ReplicationError(HerdError):
    """Base class of the replication layer's errors."""


class InvalidValue(ReplicationError, ValueError):
    """A key or value that cannot be stored: not JSON-serialisable, or a bad key type."""


class ValueTooLarge(InvalidValue):
    """An encoded value (or key) larger than the store's ``max_value_bytes``."""


class WrongValueType(ReplicationError, TypeError):
    """A typed operation on a store whose kind has no such values (``incr`` on an lww_map)."""


class UnknownRegion(ReplicationError, LookupError):
    """A region that is not one of the store's regions (or the caller has none)."""


class ConsistencyUnavailable(ReplicationError):
    """A consistency level this store cannot meet (e.g. ``all`` while a region's replica is
    known to be unreachable, or an unknown level)."""


class ReplicaUnavailable(ReplicationError):
    """The region's replica died or did not answer during the call (a write may or may not
    have been applied; retry it, or use an idempotent value)."""


class StoreExists(ReplicationError):
    """``ReplicatedStore.start`` of a running store with different settings."""


class StoreNotFound(ReplicationError, LookupError):
    """No store of that name was started."""
