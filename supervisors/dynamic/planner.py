"""The reconcile planner of a dynamic supervisor member: pure decisions, no Ray, no asyncio.

A member (``herd.supervisors.dynamic.member``) takes a ``Snapshot`` of what it sees -- the live
eligible members, every child record of its supervisor, the children it runs -- and carries out
the actions ``plan`` returns. Each action is only a hint taken from a snapshot: the member
carries it out under the child's lock and writes the registry only with a compare-and-set at
the epoch it read, so an action planned from a stale view fails harmlessly.

``plan`` decides, in this order:

1. **Fence**: a child this member runs whose record is gone, or names another owner or
   incarnation, has been superseded (``Fence``); without quorum every child it runs is stopped
   (``StopNoQuorum``). Nothing else happens without quorum.
2. **Orphans**: a record whose owner's node is not alive is placed over the live members with
   the strategy (every member computes the same owner); the member chosen claims and starts it
   (``ClaimOrphan``), or, for a temporary child, removes it (``ForgetOrphan``). Orphans no
   member admits are reported (``Unplaced``). Lightweight orphans are claimed together
   (``ClaimMany``: one batched compare-and-set, one batched start on the member's host).
3. **Own records**: a record owned here that is not running is started (``StartOwn``) once its
   ``start_by`` has passed (before that only the driver's ``start_owned`` call may start it);
   when draining, or with active redistribution, children are moved to another member
   (``Move`` when running, ``Reassign`` when not). Lightweight records to start are started
   together (``StartOwnMany``). With active redistribution a member that
   is not eligible (e.g. the head once a worker is back, under the head rule) moves all of its
   children away, as if draining; with passive redistribution they stay where they are.

Children with an operation in flight (``busy``) are left alone. ``on_exit`` and
``on_start_failure`` decide what follows a child's exit or a failed (re)start, with the child's
own restart budget.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Literal

from herd.supervisors.dynamic.child_record import ChildRecord, RestartType
from herd.supervisors.otp.exit import is_normal
from herd.supervisors.otp.intensity import RestartIntensity
from herd.supervisors.strategies import (
    DistributionStrategy,
    Member,
    Placing,
    move_targets,
    place,
)

__all__ = [
    "Action",
    "ClaimMany",
    "ClaimOrphan",
    "Exhausted",
    "ExitDecision",
    "Fence",
    "Forget",
    "ForgetOrphan",
    "Move",
    "Reassign",
    "Restart",
    "RunningChild",
    "Snapshot",
    "StartOwn",
    "StartOwnMany",
    "StopNoQuorum",
    "Unplaced",
    "exhausted_reason",
    "on_exit",
    "on_start_failure",
    "plan",
]

Redistribution = Literal["passive", "active"]
OnExhausted = Literal["give_up", "escalate"]


@dataclass(frozen=True)
class RunningChild:
    """A child this member runs: the incarnation its claim won, and whether it is stopping."""

    incarnation: int
    stopping: bool = False


@dataclass(frozen=True)
class Snapshot:
    """What one member sees when it plans a reconcile round.

    ``members``: the live eligible members (their ``load`` is ignored: ``loaded_members``
    counts the records each owns). ``live_nodes``: every live node (eligible or not): a record
    whose owner is not among them is an orphan. ``records``: every child record of the
    supervisor. ``running``: child id -> what this member runs. ``busy``: children with an
    operation in flight. ``draining``: this member's node is being drained.
    ``lightweight_capacity``: lightweight children a member's host takes
    (``max_children_per_host``; None: no limit), so orphans and drained children go where
    there is room."""

    node_id: str
    members: tuple[Member, ...]
    live_nodes: frozenset[str]
    records: tuple[ChildRecord, ...]
    running: Mapping[str, RunningChild]
    strategy: DistributionStrategy
    now: float
    busy: frozenset[str] = frozenset()
    draining: bool = False
    redistribution: Redistribution = "passive"
    lightweight_capacity: int | None = None

    @cached_property
    def loaded_members(self) -> list[Member]:
        """``members`` with their load: how many records each owns."""
        loads: dict[str, int] = {}
        for record in self.records:
            loads[record.owner] = loads.get(record.owner, 0) + 1
        return [replace(m, load=loads.get(m.id, 0)) for m in self.members]

    @cached_property
    def room(self) -> dict[str, int] | None:
        """Member id -> how many more lightweight children its host can take (None: no
        limit): ``lightweight_capacity`` less the lightweight records it owns."""
        if self.lightweight_capacity is None:
            return None
        owned: dict[str, int] = {}
        for record in self.records:
            if record.lightweight:
                owned[record.owner] = owned.get(record.owner, 0) + 1
        return {m.id: self.lightweight_capacity - owned.get(m.id, 0) for m in self.members}

    @cached_property
    def quorum(self) -> bool:
        return self.strategy.has_quorum(self.loaded_members)


# ------------------------------------------------------------------------------- actions
@dataclass(frozen=True)
class Fence:
    """Stop a child this member runs whose record no longer names it (without its terminate
    hook: it has been replaced); re-checked on a fresh read first."""

    child_id: str
    incarnation: int


@dataclass(frozen=True)
class StopNoQuorum:
    """Stop a child this member runs: the live members are not a quorum."""

    child_id: str
    incarnation: int


@dataclass(frozen=True)
class ClaimOrphan:
    """Claim (incarnation + 1, owned here) and start a child whose owner's node is gone."""

    record: ChildRecord


@dataclass(frozen=True)
class ClaimMany:
    """``ClaimOrphan`` for many lightweight children at once (in child id order)."""

    records: tuple[ChildRecord, ...]


@dataclass(frozen=True)
class ForgetOrphan:
    """Remove the record of a temporary child whose owner's node is gone."""

    record: ChildRecord
    why: str = "owner node died; temporary children are not restarted"


@dataclass(frozen=True)
class StartOwn:
    """Claim and start a record owned here that is not running."""

    record: ChildRecord


@dataclass(frozen=True)
class StartOwnMany:
    """``StartOwn`` for many lightweight children at once (in child id order)."""

    records: tuple[ChildRecord, ...]


@dataclass(frozen=True)
class Move:
    """Hand off, stop and re-own a running child to member ``target``."""

    child_id: str
    incarnation: int
    target: str


@dataclass(frozen=True)
class Reassign:
    """Re-own a record owned here that runs nowhere to member ``target``."""

    record: ChildRecord
    target: str


@dataclass(frozen=True)
class Unplaced:
    """Orphans that no live member admits (their labels or resources): reported, kept."""

    child_ids: tuple[str, ...]


Action = (Fence | StopNoQuorum | ClaimOrphan | ClaimMany | ForgetOrphan | StartOwn
          | StartOwnMany | Move | Reassign | Unplaced)


# ---------------------------------------------------------------------------------- plan
def plan(snapshot: Snapshot) -> list[Action]:
    """The actions this member should take (see the module docstring)."""
    actions: list[Action] = list(_fence(snapshot))
    if snapshot.quorum:
        actions += _adopt_orphans(snapshot)
        actions += _run_own(snapshot)
    return actions


def plan_takeover(snapshot: Snapshot) -> list[Action]:
    """The claims of lightweight orphans only, from a snapshot whose records may be stale: the
    previous round's, read before a node went down, so that a member claims the moment it
    hears of the death instead of after reading every record again. Safe with stale records:
    each claim expects the owner and incarnation it read (``ChildRecords.claim_many``), so a
    record that changed since can only lose its claim; records created since are left to the
    full round that follows."""
    if not snapshot.quorum:
        return []
    return [a for a in _adopt_orphans(snapshot) if isinstance(a, ClaimMany)]


def _fence(s: Snapshot) -> list[Action]:
    by_id = {r.child_id: r for r in s.records}
    actions: list[Action] = []
    for child_id in sorted(s.running):
        run = s.running[child_id]
        if run.stopping or child_id in s.busy:
            continue
        record = by_id.get(child_id)
        if not s.quorum:
            actions.append(StopNoQuorum(child_id, run.incarnation))
        elif record is None or not record.names(s.node_id, run.incarnation):
            actions.append(Fence(child_id, run.incarnation))
    return actions


def _adopt_orphans(s: Snapshot) -> list[Action]:
    orphans = [r for r in s.records if r.owner not in s.live_nodes and r.child_id not in s.busy]
    if not orphans:
        return []
    owners = place(s.strategy, _placing(orphans), s.loaded_members, s.room)
    actions: list[Action] = []
    unplaced = tuple(sorted(r.child_id for r in orphans if r.child_id not in owners))
    if unplaced:
        actions.append(Unplaced(unplaced))
    light: list[ChildRecord] = []
    for record in sorted(orphans, key=lambda r: r.child_id):
        if owners.get(record.child_id) != s.node_id:
            continue
        if record.restart == "temporary":
            actions.append(ForgetOrphan(record))
        elif record.lightweight:
            light.append(record)
        else:
            actions.append(ClaimOrphan(record))
    if light:
        actions.append(ClaimMany(tuple(light)))
    return actions


def _run_own(s: Snapshot) -> list[Action]:
    mine = [r for r in s.records if r.owner == s.node_id]
    own = sorted((r for r in mine if r.child_id not in s.busy), key=lambda r: r.child_id)
    stopped = [r for r in own if r.child_id not in s.running]
    running = [r for r in own if r.child_id in s.running and not s.running[r.child_id].stopping]
    # Loads in the snapshot do not show moves still in flight: a load-aware strategy
    # rebalances again only once they have landed (else it would move everything).
    settling = s.strategy.load_aware and len(own) < len(mine)
    leaving = s.draining or (s.redistribution == "active"
                             and all(m.id != s.node_id for m in s.members))
    targets: dict[str, str] = {}
    if leaving or not settling:
        targets = move_targets(s.strategy, s.node_id, _placing(running + stopped),
                               s.loaded_members, redistribution=s.redistribution,
                               draining=leaving, capacity=s.room)
    actions: list[Action] = []
    for record in running:
        if record.child_id in targets:
            actions.append(Move(record.child_id, s.running[record.child_id].incarnation,
                                targets[record.child_id]))
    light: list[ChildRecord] = []
    for record in stopped:
        if record.child_id in targets:
            actions.append(Reassign(record, targets[record.child_id]))
        elif not leaving and (record.start_by or 0.0) <= s.now:
            if record.lightweight:
                light.append(record)
            else:
                actions.append(StartOwn(record))
    if light:
        actions.append(StartOwnMany(tuple(light)))
    return actions


def _placing(records: Sequence[ChildRecord]) -> dict[str, Placing]:
    return {r.child_id: Placing(r.epoch, r.requirements, r.lightweight) for r in records}


# --------------------------------------------------------------------------------- exits
@dataclass(frozen=True)
class Forget:
    """Remove the child (its record and spec): it is not to be restarted."""

    why: str


@dataclass(frozen=True)
class Restart:
    """Start a new incarnation (now, or in a later reconcile round after a failed start)."""


@dataclass(frozen=True)
class Exhausted:
    """The child exceeded its restart budget: remove it (``escalate`` False) or stop the
    whole supervisor (``escalate`` True). ``reason`` says which child and which intensity."""

    reason: str
    escalate: bool


ExitDecision = Forget | Restart | Exhausted


def on_exit(child_id: str, restart: RestartType, reason: str, budget: RestartIntensity,
            on_exhausted: OnExhausted) -> ExitDecision:
    """What follows the exit of a child this member runs (its record still names it): a
    temporary child, or a transient one that exited normally, is forgotten; any other exit
    counts against the child's budget and restarts it while the budget allows."""
    if restart == "temporary" or (restart == "transient" and is_normal(reason)):
        return Forget(f"exited: {reason}")
    return _count_restart(child_id, reason, budget, on_exhausted)


def on_start_failure(child_id: str, error: str, budget: RestartIntensity,
                     on_exhausted: OnExhausted) -> Restart | Exhausted:
    """A restart or failover that could not start counts against the child's budget and is
    retried by a later reconcile round (``Restart``) while the budget allows."""
    return _count_restart(child_id, f"start failed: {error}", budget, on_exhausted)


def _count_restart(child_id: str, reason: str, budget: RestartIntensity,
                   on_exhausted: OnExhausted) -> Restart | Exhausted:
    if budget.add():
        return Restart()
    return Exhausted(exhausted_reason(child_id, budget, reason),
                     escalate=on_exhausted == "escalate")


def exhausted_reason(child_id: str, budget: RestartIntensity, last: str) -> str:
    """Which child exceeded which intensity, and its last exit."""
    return (f"child {child_id!r} exceeded its restart intensity (max_restarts="
            f"{budget.max_restarts} in max_seconds={budget.max_seconds:g}); last: {last}")

