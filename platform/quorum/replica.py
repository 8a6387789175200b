"""Dynamo-style replication quorums (``R + W > N``) on top of ``QuorumCall``. Public names are
re-exported by ``herd.platform.quorum``."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import ray

from herd.platform.errors import ConfigError
from herd.platform.quorum.calls import QuorumCall, QuorumResult
from herd.platform.quorum.core import check_count, quorum_count


# --------------------------------------------------------------------- replication quorums
@dataclass(frozen=True)
class ReplicaQuorum:
    """Read and write quorums over ``n`` replicas: ``r`` replies per read, ``w`` acks per write.

    ``r + w > n`` is required: then every set of ``r`` replicas overlaps every set of ``w``, so
    each read reaches at least one replica that acknowledged the latest completed write (and
    resolving the replies, e.g. by highest version, returns it). ``w > n / 2`` additionally makes
    any two write quorums overlap; :meth:`majority` has both.
    """

    n: int
    r: int
    w: int

    def __post_init__(self) -> None:
        check_count(self.n, 1, math.inf, "ReplicaQuorum", "n")
        check_count(self.r, 1, self.n, "ReplicaQuorum", "r")
        check_count(self.w, 1, self.n, "ReplicaQuorum", "w")
        if self.r + self.w <= self.n:
            raise ConfigError(
                f"R + W must exceed N, got {self.r} + {self.w} <= {self.n}: otherwise a read "
                f"quorum can miss every replica of a write quorum and return stale data",
                source="ReplicaQuorum", field="r + w", value=(self.r, self.w, self.n))

    @classmethod
    def majority(cls, n: int) -> ReplicaQuorum:
        """R = W = a majority of ``n``: tolerates a minority of replicas down for both."""
        return cls(n=n, r=quorum_count(n), w=quorum_count(n))

    @classmethod
    def read_one(cls, n: int) -> ReplicaQuorum:
        """R = 1, W = N: fast reads from any replica; a write needs every replica."""
        return cls(n=n, r=1, w=n)

    @classmethod
    def write_one(cls, n: int) -> ReplicaQuorum:
        """R = N, W = 1: fast writes to any replica; a read needs every replica."""
        return cls(n=n, r=n, w=1)


@dataclass(frozen=True)
class QuorumRead:
    """A quorum read: ``value`` resolved from the ``replies`` of the replicas that answered."""

    value: Any
    result: QuorumResult

    @property
    def replies(self) -> list[Any]:
        """The successful replies, in replica order."""
        return self.result.values

    @property
    def answered(self) -> int:
        return len(self.result.successes)


def _check_replica_calls(refs: Sequence[ray.ObjectRef], rq: ReplicaQuorum, source: str) -> None:
    if not isinstance(rq, ReplicaQuorum):
        raise ConfigError("must be a ReplicaQuorum", source=source, field="rq", value=rq)
    if isinstance(refs, (str, bytes)) or not isinstance(refs, Sequence) or len(refs) != rq.n:
        raise ConfigError(f"needs one call per replica ({rq.n}): the quorum is counted over all "
                          "replicas, not over those that can be reached", source=source,
                          field="refs", value=refs)


def quorum_write(refs: Sequence[ray.ObjectRef], rq: ReplicaQuorum, timeout: float, *,
                 what: str = "quorum write") -> QuorumResult:
    """Wait for ``rq.w`` of the write calls ``refs`` (one per replica, all ``rq.n``) to succeed.

    Raises :class:`QuorumNotReached` once too many failed and :class:`QuorumTimeout` at the
    deadline (see :class:`QuorumCall`); a failed write is never an acknowledgement.
    """
    _check_replica_calls(refs, rq, "quorum_write")
    return QuorumCall(refs, required=rq.w, timeout=timeout, what=what).wait()


def quorum_read(refs: Sequence[ray.ObjectRef], rq: ReplicaQuorum, timeout: float,
                resolve: Callable[[list[Any]], Any] | None = None, *,
                what: str = "quorum read") -> QuorumRead:
    """Wait for ``rq.r`` of the read calls ``refs`` (one per replica, all ``rq.n``) to succeed
    and resolve their replies into one value.

    ``resolve`` gets the replies in replica order (e.g. pick the highest version, or join CRDT
    states); without it the value is the list of replies. Raises like :func:`quorum_write`.
    """
    _check_replica_calls(refs, rq, "quorum_read")
    result = QuorumCall(refs, required=rq.r, timeout=timeout, what=what).wait()
    replies = result.values
    return QuorumRead(value=replies if resolve is None else resolve(replies), result=result)
