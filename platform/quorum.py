"""Quorum arithmetic, quorum decisions and quorum reads/writes over Ray.

Quorum is always counted against a **static** list of members (nodes, actors, replicas) fixed by
the caller, never against the members that happen to answer: a majority of a list that shrinks
as members die or hang is no majority at all (Horde's quorum bug: two halves of a split each see
a "majority" of what they can reach). For the same reason a call that failed or did not answer
in time is a *missing* vote, never a vote (the original Elixir sketch counted failed remote calls
as votes).

* :func:`quorum_count` / :func:`has_quorum`: the arithmetic.
* :func:`make_decision`: run a function on every target node or actor with one deadline and
  return the majority value as a :class:`Decision`, or raise :class:`QuorumNotAchieved`.
* :class:`QuorumCall`: wait until ``required`` of a list of calls (ObjectRefs) succeed.
* :class:`ReplicaQuorum` with :func:`quorum_write` / :func:`quorum_read`: Dynamo-style
  ``R + W > N`` replication quorums built on ``QuorumCall``.

Nothing here cancels a call: a call still pending when the outcome is known keeps running and its
late result is dropped, so the functions run for votes and replica calls should be idempotent.
"""

from __future__ import annotations

import inspect
import json
import math
import re
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.actor import ActorHandle
from ray.exceptions import RayError
from ray.remote_function import RemoteFunction
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from herd.platform import rpc
from herd.platform.control_plane import require_ray
from herd.platform.errors import ConfigError, HerdTimeoutError, NoQuorum
from herd.platform.logging import get_logger

log = get_logger("herd.quorum")

#: A decision target: a Ray node id (hex, as Ray reports it) or an actor handle.
Target = str | ActorHandle

_NODE_ID = re.compile(f"[0-9a-f]{{{2 * ray.NodeID.size()}}}")
# A ref that ``ray.wait`` reported ready is local, so fetching it is immediate; this floor only
# keeps a fetch right at the deadline from failing with a spurious timeout.
_READY_FETCH_S = 1.0


# ------------------------------------------------------------------------------- arithmetic
def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def quorum_count(n: int) -> int:
    """Votes needed for a majority of ``n`` members: ``n // 2 + 1``.

    Two sets of that size drawn from the same ``n`` members always share a member, which is what
    makes a majority safe: two disjoint groups can never both decide.
    """
    if not _is_int(n) or n < 1:
        raise ConfigError("member count must be an integer >= 1", source="quorum", field="n",
                          value=n)
    return n // 2 + 1


def _members(members: Any, source: str, field_name: str) -> list[Hashable]:
    """A static member list: a non-string iterable of unique hashable ids, at least one."""
    if isinstance(members, (str, bytes)) or not isinstance(members, Iterable):
        raise ConfigError("must be a member count or a list of member ids", source=source,
                          field=field_name, value=members)
    listed = list(members)
    try:
        unique = set(listed)
    except TypeError as exc:
        raise ConfigError("member ids must be hashable", source=source, field=field_name,
                          value=listed) from exc
    if not listed:
        raise ConfigError("needs at least one member", source=source, field=field_name,
                          value=listed)
    if len(unique) != len(listed):
        raise ConfigError("member ids must be unique", source=source, field=field_name,
                          value=listed)
    return listed


def has_quorum(votes: int | Iterable[Hashable], n: int | Iterable[Hashable]) -> bool:
    """True when ``votes`` reach a majority (:func:`quorum_count`) of ``n``.

    ``n`` is the member count or the static member list. ``votes`` is a vote count or the ids of
    the voters; with a member list only listed members count, and a voter listed twice counts
    once, so two disjoint sets of voters can never both have quorum. Impossible input (more
    votes than members, a negative count, a string where a list belongs) is a ``ConfigError``.
    """
    members = None if _is_int(n) else set(_members(n, "has_quorum", "n"))
    total = n if members is None else len(members)
    needed = quorum_count(total)  # validates an integer n
    if _is_int(votes):
        if not 0 <= votes <= total:
            raise ConfigError(f"vote count must be in 0..{total}", source="has_quorum",
                              field="votes", value=votes)
        return votes >= needed
    if isinstance(votes, (str, bytes, bool)) or not isinstance(votes, Iterable):
        raise ConfigError("must be a vote count or a list of voter ids", source="has_quorum",
                          field="votes", value=votes)
    try:
        voters = set(votes)
    except TypeError as exc:
        raise ConfigError("voter ids must be hashable", source="has_quorum", field="votes",
                          value=votes) from exc
    if members is None:
        if len(voters) > total:
            raise ConfigError(f"{len(voters)} distinct voters but only {total} members",
                              source="has_quorum", field="votes", value=sorted(map(str, voters)))
        return len(voters) >= needed
    return len(voters & members) >= needed


def _check_count(value: Any, low: int, high: float, source: str, field_name: str) -> int:
    """``value`` if it is an integer in ``low..high`` (``high`` may be ``math.inf``)."""
    if not _is_int(value) or not low <= value <= high:
        bounds = f">= {low}" if math.isinf(high) else f"in {low}..{int(high)}"
        raise ConfigError(f"must be an integer {bounds}", source=source, field=field_name,
                          value=value)
    return value


def _check_timeout(timeout: Any, source: str) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) \
            or not math.isfinite(timeout) or timeout <= 0:
        raise ConfigError("must be a positive number of seconds", source=source, field="timeout",
                          value=timeout)
    return float(timeout)


# --------------------------------------------------------------------------- tie breaking
def tie_break_key(value: Any) -> tuple[int, str, str]:
    """Canonical sort key of a vote value; of values with equally many votes the smallest wins.

    JSON-serialisable values sort by their canonical JSON (sorted keys, no whitespace) and come
    before all others, which sort by ``repr``; the type's qualified name separates values with the
    same text (``[1, 2]`` and ``(1, 2)``). The key is the same in every process, so every caller
    breaks a tie the same way, provided non-JSON values have a stable ``repr`` (not the default
    ``<object at 0x...>``).
    """
    kind = f"{type(value).__module__}.{type(value).__qualname__}"
    try:
        return (0, json.dumps(value, sort_keys=True, separators=(",", ":")), kind)
    except (TypeError, ValueError):
        return (1, repr(value), kind)


def _tally(values: Iterable[Any]) -> list[tuple[Any, int]]:
    """Votes grouped by equal value (``==``), most votes first, ties by :func:`tie_break_key`.

    A group is represented by its first value in input order.
    """
    groups: list[list[Any]] = []
    for value in values:
        for group in groups:
            if group[0] == value:
                group[1] += 1
                break
        else:
            groups.append([value, 1])
    ordered = sorted(groups, key=lambda g: (-g[1], tie_break_key(g[0])))
    return [(value, count) for value, count in ordered]


def majority_value(values: Iterable[Any], needed: int, pending: int = 0) -> tuple[Any, int] | None:
    """The winning value of a vote and its vote count, or None while undecided or lost.

    The winner is the value with the most votes (ties: smallest :func:`tie_break_key`) and it
    needs at least ``needed`` votes. With ``pending`` votes still outstanding a winner is only
    returned once no outcome of those votes could change it (the runner-up plus every pending
    vote stays below it), so an early answer is the answer all votes would have given.
    """
    _check_count(needed, 1, math.inf, "majority_value", "needed")
    _check_count(pending, 0, math.inf, "majority_value", "pending")
    groups = _tally(values)
    if not groups:
        return None
    value, count = groups[0]
    runner_up = groups[1][1] if len(groups) > 1 else 0
    if count < needed or (pending and runner_up + pending >= count):
        return None
    return value, count


def _reachable(values: list[Any], needed: int, pending: int) -> bool:
    """Can some value (one already voted for, or a new one) still get ``needed`` votes?"""
    groups = _tally(values)
    return (groups[0][1] if groups else 0) + pending >= needed


# --------------------------------------------------------------------------- quorum calls
def _describe(exc: BaseException) -> str:
    """One line for an error: a task error is described by the exception the task raised."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        exc = cause
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


@dataclass
class QuorumResult:
    """Outcome of a quorum call; indexes refer to the list of refs given to ``QuorumCall``."""

    required: int
    total: int
    successes: dict[int, Any] = field(default_factory=dict)
    failures: dict[int, BaseException] = field(default_factory=dict)

    @property
    def pending(self) -> list[int]:
        return [i for i in range(self.total) if i not in self.successes and i not in self.failures]

    @property
    def reached(self) -> bool:
        return len(self.successes) >= self.required

    @property
    def impossible(self) -> bool:
        """Too many calls failed for ``required`` successes to remain possible."""
        return self.total - len(self.failures) < self.required

    @property
    def values(self) -> list[Any]:
        """Successful results in the order of the refs."""
        return [self.successes[i] for i in sorted(self.successes)]

    def summary(self) -> str:
        failed = "; ".join(f"#{i}: {_describe(e)}" for i, e in sorted(self.failures.items()))
        return (f"{len(self.successes)} of {self.total} succeeded, {len(self.failures)} failed, "
                f"{len(self.pending)} pending; {self.required} required"
                + (f" (failures: {failed})" if failed else ""))


def _collect(refs: Sequence[ray.ObjectRef], result: QuorumResult, deadline: float, what: str,
             settled: Callable[[QuorumResult], bool]) -> bool:
    """Record each of ``refs`` in ``result`` as it completes (a value in ``successes``, a Ray
    error in ``failures``) until ``settled(result)``, none is pending, or ``deadline``
    (``time.monotonic()``) passes. Returns False when the deadline passed first."""
    index = {ref: i for i, ref in enumerate(refs)}
    remaining = list(refs)
    while remaining and not settled(result):
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        ready, remaining = ray.wait(remaining, num_returns=1, timeout=left, fetch_local=True)
        for ref in ready:
            try:
                result.successes[index[ref]] = rpc.get(ref, timeout=max(left, _READY_FETCH_S),
                                                       what=what)
            except RayError as exc:
                result.failures[index[ref]] = exc
    return True


class QuorumNotReached(NoQuorum):
    """Enough replica calls failed that the required number of successes became impossible."""

    def __init__(self, what: str, result: QuorumResult) -> None:
        self.result = result
        super().__init__(f"{what}: no quorum: {result.summary()}")


class QuorumTimeout(HerdTimeoutError):
    """The deadline passed before the required number of replica calls succeeded."""

    def __init__(self, what: str, timeout: float, result: QuorumResult) -> None:
        self.result = result
        super().__init__(f"{what}: quorum not reached within {timeout:.1f} s: {result.summary()}")


class QuorumCall:
    """Wait for ``required`` (default: a majority) of ``refs`` to succeed.

    ``wait()`` returns a :class:`QuorumResult` as soon as quorum is reached, raises
    :class:`QuorumNotReached` (a ``NoQuorum``) as soon as it has become impossible, and
    :class:`QuorumTimeout` (a ``HerdTimeoutError``) when ``timeout`` seconds pass first. A call
    that raised (task error, dead actor) counts as a failure.
    """

    def __init__(self, refs: Sequence[ray.ObjectRef], required: int | None = None,
                 timeout: float | None = None, what: str = "quorum call") -> None:
        if not refs:
            raise ConfigError("needs at least one call", source="QuorumCall", field="refs",
                              value=list(refs))
        if not all(isinstance(ref, ray.ObjectRef) for ref in refs):
            raise ConfigError("must be Ray ObjectRefs", source="QuorumCall", field="refs",
                              value=list(refs))
        if len(set(refs)) != len(refs):
            raise ConfigError("refs must be unique", source="QuorumCall", field="refs",
                              value=list(refs))
        self.refs = list(refs)
        self.required = _check_count(quorum_count(len(refs)) if required is None else required,
                                     1, len(refs), "QuorumCall", "required")
        self.timeout = _check_timeout(rpc.DEFAULT_TIMEOUT_S if timeout is None else timeout,
                                      "QuorumCall")
        self.what = what

    def wait(self) -> QuorumResult:
        deadline = time.monotonic() + self.timeout
        result = QuorumResult(required=self.required, total=len(self.refs))
        _collect(self.refs, result, deadline, self.what, lambda r: r.reached or r.impossible)
        if result.reached:
            return result
        if result.impossible:
            log.warning("quorum_not_reached", what=self.what, summary=result.summary())
            raise QuorumNotReached(self.what, result)
        log.warning("quorum_timeout", what=self.what, summary=result.summary())
        raise QuorumTimeout(self.what, self.timeout, result)


# ------------------------------------------------------------------------------ decisions
def _label(target: Target) -> str:
    """A target's id for messages and logs: the node id, or the actor id in hex."""
    return target if isinstance(target, str) else target._actor_id.hex()


@dataclass(frozen=True)
class Decision:
    """A value chosen by a quorum of targets.

    ``votes`` maps every target that answered to its answer (including dissenting values);
    ``missing`` maps every other target to why its vote is missing; together they cover the
    static target list. ``count`` is the number of votes for ``value`` (>= ``needed``).
    """

    value: Any
    votes: dict[Target, Any]
    missing: dict[Target, str]
    count: int
    needed: int


class QuorumNotAchieved(NoQuorum):
    """No value got ``needed`` votes from the static target list.

    ``votes`` maps the targets that answered to their answers, ``missing`` the others to why
    (the call failed, or it had not answered by the deadline).
    """

    def __init__(self, votes: dict[Target, Any], needed: int, missing: dict[Target, str],
                 what: str = "decision") -> None:
        self.votes = votes
        self.needed = needed
        self.missing = missing
        tally = ", ".join(f"{value!r} x{count}" for value, count in _tally(votes.values()))
        absent = "; ".join(f"{_label(t)}: {reason}" for t, reason in missing.items())
        super().__init__(
            f"{what}: no value reached {needed} of {len(votes) + len(missing)} votes "
            f"(votes: {tally or 'none'}; missing: {absent or 'none'})")


def _check_targets(targets: Any) -> tuple[list[Target], bool]:
    """The target list and whether it is of node ids (else actor handles)."""
    if isinstance(targets, (str, bytes)) or not isinstance(targets, Sequence) or not targets:
        raise ConfigError("must be a non-empty list of node ids or actor handles",
                          source="make_decision", field="targets", value=targets)
    listed = list(targets)
    nodes = all(isinstance(t, str) for t in listed)
    if not nodes and not all(isinstance(t, ActorHandle) for t in listed):
        raise ConfigError("must be all node ids (hex str) or all actor handles, not a mix",
                          source="make_decision", field="targets", value=listed)
    if nodes:
        bad = [t for t in listed if not _NODE_ID.fullmatch(t)]
        if bad:
            raise ConfigError(f"node ids must be {2 * ray.NodeID.size()} lowercase hex digits, "
                              "as Ray reports them", source="make_decision", field="targets",
                              value=bad)
    if len(set(listed)) != len(listed):
        raise ConfigError("targets must be unique: a target listed twice would vote twice",
                          source="make_decision", field="targets", value=listed)
    return listed, nodes


def _node_caller(fn: Any) -> Callable[[str], ray.ObjectRef]:
    """``fn()`` as a zero-CPU, never-retried task hard-pinned to a node."""
    if isinstance(fn, RemoteFunction):
        remote = fn
    elif inspect.isfunction(fn):
        remote = ray.remote(fn)
    else:
        raise ConfigError("for node targets must be a function (or @ray.remote function) "
                          "taking no arguments", source="make_decision", field="fn", value=fn)

    def call(node_id: str) -> ray.ObjectRef:
        strategy = NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)
        return remote.options(num_cpus=0, max_retries=0, scheduling_strategy=strategy).remote()

    return call


def _actor_caller(fn: Any, handles: list[ActorHandle]) -> Callable[[ActorHandle], ray.ObjectRef]:
    """``handle.<fn>.remote()`` for a method name, else ``fn(handle)`` returning an ObjectRef."""
    if isinstance(fn, str):
        lacking = [_label(h) for h in handles if not hasattr(h, fn)]
        if lacking:
            raise ConfigError(f"actors {lacking} have no method {fn!r}", source="make_decision",
                              field="fn", value=fn)
        return lambda handle: getattr(handle, fn).remote()
    if not callable(fn):
        raise ConfigError("for actor targets must be a method name or a function "
                          "fn(handle) -> ObjectRef", source="make_decision", field="fn", value=fn)

    def call(handle: ActorHandle) -> ray.ObjectRef:
        ref = fn(handle)
        if not isinstance(ref, ray.ObjectRef):
            raise ConfigError(f"must return an ObjectRef, returned {type(ref).__name__}",
                              source="make_decision", field="fn", value=fn)
        return ref

    return call


def make_decision(targets: Sequence[Target], fn: Callable[..., Any] | RemoteFunction | str,
                  timeout: float, *,
                  needed: int | None = None, what: str = "decision") -> Decision:
    """Ask every target for a value and return the value a quorum of them agrees on.

    ``targets`` is the static voter list, all node ids or all actor handles:

    * node ids (hex, as ``ray.get_runtime_context().get_node_id()`` reports them): ``fn`` is a
      picklable function taking **no arguments** (or an ``@ray.remote`` function), run as a
      zero-CPU task hard-pinned to each node (``NodeAffinitySchedulingStrategy(soft=False)``)
      and never retried; inside, ``ray.get_runtime_context().get_node_id()`` says which node.
    * actor handles: ``fn`` is a method name, called as ``handle.<fn>.remote()``, or a function
      ``fn(handle) -> ObjectRef`` (for methods with arguments).

    All calls share one deadline of ``timeout`` seconds. A call that succeeded is a vote; a call
    that failed (the function raised, the actor or node is dead) or had not answered is missing,
    never a vote. The winner is the value with the most votes (values compared with ``==``; of
    values with equally many votes the one with the smallest :func:`tie_break_key`) and it needs
    ``needed`` votes (default: a majority of all targets, :func:`quorum_count`). Below a
    majority, two values can tie and two disjoint groups can each reach ``needed``.

    Returns as soon as the outcome is settled, without waiting for stragglers (they are then
    listed in ``missing`` as not awaited; their calls keep running and their late results are
    dropped); an early answer is always the one all votes would have given. Raises
    :class:`QuorumNotAchieved` as soon as no value can reach ``needed`` any more, or at the
    deadline.
    """
    listed, nodes = _check_targets(targets)
    total = len(listed)
    needed = _check_count(quorum_count(total) if needed is None else needed, 1, total,
                          "make_decision", "needed")
    timeout = _check_timeout(timeout, "make_decision")
    call = _node_caller(fn) if nodes else _actor_caller(fn, listed)  # type: ignore[arg-type]
    require_ray()

    deadline = time.monotonic() + timeout
    refs = [call(target) for target in listed]
    if len(set(refs)) != len(refs):
        raise ConfigError("returned the same ObjectRef for two targets", source="make_decision",
                          field="fn", value=fn)
    result = QuorumResult(required=needed, total=total)

    def settled(r: QuorumResult) -> bool:
        values, pending = r.values, len(r.pending)
        return (majority_value(values, needed, pending) is not None
                or not _reachable(values, needed, pending))

    in_time = _collect(refs, result, deadline, what, settled)
    votes = {listed[i]: value for i, value in sorted(result.successes.items())}
    missing = {listed[i]: _describe(exc) for i, exc in sorted(result.failures.items())}
    late = "not awaited: the outcome was settled without it" if in_time \
        else f"no answer within {timeout:.1f} s"
    missing.update((listed[i], late) for i in result.pending)
    winner = majority_value(list(votes.values()), needed)
    if winner is None:
        log.warning("decision_not_reached", what=what, needed=needed, targets=total,
                    votes={_label(t): repr(v) for t, v in votes.items()},
                    missing={_label(t): reason for t, reason in missing.items()})
        raise QuorumNotAchieved(votes, needed, missing, what=what)
    value, count = winner
    return Decision(value=value, votes=votes, missing=missing, count=count, needed=needed)


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
        _check_count(self.n, 1, math.inf, "ReplicaQuorum", "n")
        _check_count(self.r, 1, self.n, "ReplicaQuorum", "r")
        _check_count(self.w, 1, self.n, "ReplicaQuorum", "w")
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
    replies: list[Any]
    result: QuorumResult

    @property
    def answered(self) -> int:
        return len(self.replies)


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
    return QuorumRead(value=replies if resolve is None else resolve(replies), replies=replies,
                      result=result)
