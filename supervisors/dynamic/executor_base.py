"""What every operation of a member's ``ChildExecutor`` shares: the children it runs, their
specs and restart budgets, the host of their lightweight children, and removing a child.

The operations themselves are in ``herd.supervisors.dynamic.bulk`` (many lightweight children
at once) and ``herd.supervisors.dynamic.executor`` (one child at a time, the planner's actions
and the driver's requests).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from herd.supervisors.dynamic import records
from herd.supervisors.dynamic.child_record import ChildRecord
from herd.supervisors.dynamic.metrics import DynamicMetrics
from herd.supervisors.dynamic.planner import Exhausted
from herd.supervisors.dynamic.records import ChildRecords
from herd.supervisors.dynamic.running import RunningChildren
from herd.supervisors.dynamic.spec import DynamicSupervisorSpec
from herd.supervisors.dynamic.tasks import ChildTasks
from herd.supervisors.lightweight.link import HostLink
from herd.supervisors.otp.intensity import RestartIntensity
from herd.supervisors.otp.spec import ChildSpec
from herd.supervisors.warm.pool import WarmPool

#: The options of a child that its member replaces by its own placement (pinned to its node).
PLACED_BY_MEMBER = ("scheduling_strategy", "label_selector")


class ExecutorBase:
    """The state of one member's children. What it needs from its member is passed in: the
    current configuration, this node's region, when a node went down, another member's handle,
    and two signals (``wake``: reconcile soon; ``escalate``: a child exceeded its budget under
    ``on_exhausted="escalate"``, after the supervisor was marked stopped)."""

    def __init__(self, sup: str, node_id: str, store: ChildRecords, metrics: DynamicMetrics,
                 log: Any, *, config: Callable[[], DynamicSupervisorSpec],
                 region: Callable[[], str | None], down_at: Callable[[str], float | None],
                 member: Callable[[str], Awaitable[Any]], wake: Callable[[], None],
                 escalate: Callable[[], None], start_slots: int) -> None:
        self.sup = sup
        self.node_id = node_id
        self.store = store
        self.metrics = metrics
        self.log = log
        self.config = config
        self.region = region
        self.down_at = down_at
        self.member = member
        self.wake = wake
        self.escalate = escalate
        self.start_slots = asyncio.Semaphore(start_slots)
        self.running = RunningChildren()
        self.halted = False
        self.tasks = ChildTasks(log)
        self.link = HostLink(f"{sup}@{node_id[:12]}", config().lightweight)
        """The host of this member's lightweight children, on this node (created by the
        member: no process start on the failover path once it runs)."""
        warm = config().warm
        self.pool = None if warm is None else WarmPool(
            f"{sup}@{node_id[:12]}", warm, placed_by_owner=PLACED_BY_MEMBER,
            place=lambda options: {**options, "scheduling_strategy":
                                   NodeAffinitySchedulingStrategy(node_id, soft=False)},
            quiet=lambda: not self.tasks.busy())
        """Standby shells on this node for the actor children (``config().warm``), refilled
        while no child operation runs here: a restart or failover starts no process."""
        self.budgets: dict[str, RestartIntensity] = {}
        self.specs: dict[str, tuple[int, ChildSpec]] = {}
        """Child id -> (its record's entry id, its spec)."""

    # ------------------------------------------------------------------------- specs
    def cached_spec(self, record: ChildRecord) -> ChildSpec | None:
        cached = self.specs.get(record.child_id)
        return cached[1] if cached is not None and cached[0] == record.entry_id else None

    def cache_spec(self, record: ChildRecord, spec: ChildSpec) -> None:
        self.specs[record.child_id] = (record.entry_id, spec)

    async def spec_of(self, record: ChildRecord) -> ChildSpec | None:
        cached = self.cached_spec(record)
        if cached is not None:
            return cached
        spec = await records.aload_spec(self.sup, record.child_id)
        if spec is None:
            self.log.error("child_spec_missing", child_id=record.child_id)
            return None
        self.cache_spec(record, spec)
        return spec

    async def prefetch_specs(self, every: Sequence[ChildRecord],
                             takeover_sets: Sequence[frozenset[str]] = ()) -> None:
        """Read ahead the specs of the lightweight children other members own (``every``: all
        the supervisor's records), so that claiming them after their node dies reads no spec;
        forget the cached specs of children that are gone. With a warm pool, the actor
        children's too, and keep standby shells for their shapes (``takeover_sets``: what
        this member would take over if another node died, for ``standby="auto"``)."""
        present = {r.child_id for r in every}
        for child_id in [c for c in self.specs if c not in present]:
            del self.specs[child_id]
        missing = [r for r in every if (r.lightweight or self.pool is not None)
                   and r.owner != self.node_id and self.cached_spec(r) is None]
        await self.specs_of(missing, quiet=True)
        if self.pool is not None:
            self.pool.want([spec for r in every if not r.lightweight
                            and (spec := self.cached_spec(r)) is not None],
                           own={r.child_id for r in every if r.owner == self.node_id},
                           takeover_sets=takeover_sets)

    async def specs_of(self, wanted: Sequence[ChildRecord],
                       quiet: bool = False) -> dict[str, ChildSpec | None]:
        """``spec_of`` for many records: cached ones, the others read together (``quiet``:
        a missing spec is no error, e.g. its start is still writing it)."""
        found: dict[str, ChildSpec | None] = {}
        missing = []
        for record in wanted:
            cached = self.cached_spec(record)
            if cached is None:
                missing.append(record)
            found[record.child_id] = cached
        loaded = await records.aload_specs(self.sup, [r.child_id for r in missing])
        absent = sum(spec is None for spec in loaded.values())
        if absent and not quiet:
            self.log.error("child_specs_missing", count=absent)
        for record in missing:
            spec = loaded.get(record.child_id)
            if spec is not None:
                self.cache_spec(record, spec)
            found[record.child_id] = spec
        return found

    # ----------------------------------------------------------------------- budgets
    def budget(self, child_id: str) -> RestartIntensity:
        if child_id not in self.budgets:
            config = self.config()
            self.budgets[child_id] = RestartIntensity(config.max_restarts, config.max_seconds)
        return self.budgets[child_id]

    async def exhausted_child(self, record: ChildRecord, decision: Exhausted) -> None:
        self.log.error("child_give_up", child_id=record.child_id, reason=decision.reason,
                       escalate=decision.escalate)
        if decision.escalate:
            await records.arecord_gave_up(self.sup, record.child_id, decision.reason)
            await records.amark_stopped(self.sup, decision.reason)
            self.escalate()
        elif await self.forget(record, self.node_id, record.incarnation,
                               "restart intensity exceeded"):
            await records.arecord_gave_up(self.sup, record.child_id, decision.reason)

    # ---------------------------------------------------------------------- removing
    async def forget(self, record: ChildRecord, owner: str, number: int, why: str) -> bool:
        """Delete a child's record (while it still names ``owner``/``number``) and its spec."""
        removed = await self.store.retry(record.child_id, record,
                                         lambda r: r.names(owner, number), self.store.remove)
        if not removed:
            self.wake()
            return False
        await self.drop(record.child_id)
        self.log.info("child_removed", child_id=record.child_id, why=why)
        return True

    async def forget_many(self, gone: Sequence[ChildRecord], why: str) -> set[str]:
        """``forget`` for many records named by this member, in one ``remove_many``; the ids
        of those removed."""
        if not gone:
            return set()
        expect = {r.child_id: r.incarnation for r in gone}
        results = await self.store.retry_many(
            gone, lambda r: r.names(self.node_id, expect[r.child_id]), self.store.remove_many)
        removed = [c for c, result in results.items() if isinstance(result, int)]
        if len(removed) < len(gone):
            self.wake()
        await records.adelete_specs(self.sup, removed)
        for child_id in removed:
            self.forget_locally(child_id)
        self.log.info("children_removed", count=len(removed), why=why)
        return set(removed)

    async def drop(self, child_id: str) -> None:
        await records.adelete_spec(self.sup, child_id)
        self.forget_locally(child_id)

    def forget_locally(self, child_id: str) -> None:
        self.budgets.pop(child_id, None)
        self.specs.pop(child_id, None)

    def expired(self, record: ChildRecord) -> bool:
        """May a record whose spec is missing be removed (only the driver's start could still
        write it before ``start_by``)?"""
        return (record.start_by or 0.0) <= time.time()
