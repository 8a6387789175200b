"""Quorum decisions: ask every target node or actor for a value with one deadline and keep the
value a quorum agrees on. Public names are re-exported by ``herd.platform.quorum``."""

from __future__ import annotations

import inspect
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import ray
from ray.actor import ActorHandle
from ray.remote_function import RemoteFunction
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from herd.platform.control_plane import require_ray
from herd.platform.errors import ConfigError, NoQuorum
from herd.platform.logging import get_logger
from herd.platform.quorum.calls import QuorumResult, collect_until, describe_error
from herd.platform.quorum.core import (
    check_count,
    check_timeout,
    majority_value,
    quorum_count,
    reachable,
    tally,
)

log = get_logger("herd.quorum")

#: A decision target: a Ray node id (hex, as Ray reports it) or an actor handle.
Target = str | ActorHandle

_NODE_ID = re.compile(f"[0-9a-f]{{{2 * ray.NodeID.size()}}}")


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
        self.what = what
        counted = ", ".join(f"{value!r} x{count}" for value, count in tally(votes.values()))
        absent = "; ".join(f"{_label(t)}: {reason}" for t, reason in missing.items())
        super().__init__(
            f"{what}: no value reached {needed} of {len(votes) + len(missing)} votes "
            f"(votes: {counted or 'none'}; missing: {absent or 'none'})")

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # Raised inside actors: Ray pickles it to the caller, and the default reduce would
        # call __init__ with the message alone.
        return type(self), (self.votes, self.needed, self.missing, self.what)


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
    needed = check_count(quorum_count(total) if needed is None else needed, 1, total,
                          "make_decision", "needed")
    timeout = check_timeout(timeout, "make_decision")
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
                or not reachable(values, needed, pending))

    in_time = collect_until(refs, result, deadline, what, settled)
    votes = {listed[i]: value for i, value in sorted(result.successes.items())}
    missing = {listed[i]: describe_error(exc) for i, exc in sorted(result.failures.items())}
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
