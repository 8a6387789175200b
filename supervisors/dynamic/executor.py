"""What a dynamic supervisor member does to its children: it carries out the actions of the
reconcile planner (``herd.supervisors.dynamic.planner``) and the driver's requests (start,
terminate, restart, stop), and handles each child's exits.

Every operation on a child runs as a task that holds the child's lock
(``herd.supervisors.dynamic.tasks``); the child counts as busy until it ends, and the planner
leaves busy children alone, so two operations on one child never interleave. Every registry
write is a compare-and-set (or a removal) at an epoch the operation read, retried by
``ChildRecords.retry`` only while the record still names the owner and incarnation the
operation expected; any other change means another member or a terminate got there first, and
the operation gives up.

Lightweight children run on this member's host (``ExecutorBase.link``); the planner hands
them over in batches (``ClaimMany``, ``StartOwnMany``), carried out by
``herd.supervisors.dynamic.bulk``, whose exits handling covers them too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from herd.platform import rpc
from herd.registry import HolderDead
from herd.registry.errors import EpochConflict
from herd.supervisors.dynamic import handoff, records
from herd.supervisors.dynamic.bulk import BulkOps, Outcome
from herd.supervisors.dynamic.child_record import ChildRecord
from herd.supervisors.dynamic.planner import (
    Action,
    ClaimMany,
    ClaimOrphan,
    Exhausted,
    Fence,
    Forget,
    ForgetOrphan,
    Move,
    Reassign,
    StartOwn,
    StartOwnMany,
    StopNoQuorum,
    Unplaced,
    on_exit,
    on_start_failure,
)
from herd.supervisors.dynamic.running import SUPERSEDED, Running, stop_run
from herd.supervisors.dynamic.spec import DynamicChildInfo
from herd.supervisors.errors import StartChildError, SupervisorStopped
from herd.supervisors.otp.exit import SHUTDOWN
from herd.supervisors.otp.lifecycle import Incarnation, shutdown, start_lightweight, start_worker
from herd.supervisors.otp.spec import ChildSpec

MEMBER_CALL_S = 5.0
STOP_ALL_WAIT_S = 30.0


class ChildExecutor(BulkOps):
    """The children of one member and every operation on them (see the module docstring;
    the constructor's arguments are ``ExecutorBase``'s)."""

    # ----------------------------------------------------------------- planner interface
    def carry_out(self, action: Action) -> asyncio.Task[Any] | None:
        """Start the operation that carries ``action`` out (as a task holding the child's
        lock); the task (None for a report)."""
        match action:
            case Unplaced(child_ids):
                self.metrics.unplaced_children(len(child_ids))
                self.log.warning("no_member_for_orphans", children=list(child_ids[:10]),
                                 count=len(child_ids))
                return None
            case Fence(child_id, incarnation):
                return self.tasks.spawn(child_id, lambda: self._fence(child_id, incarnation))
            case StopNoQuorum(child_id, incarnation):
                self.log.warning("child_stopped_no_quorum", child_id=child_id)
                return self.tasks.spawn(child_id, lambda: self._stop_if(child_id, incarnation))
            case ClaimOrphan(record):
                return self.tasks.spawn(record.child_id,
                                        lambda: self.claim_and_start(record, failover=True))
            case ClaimMany(many):
                return self.tasks.spawn_many(
                    [r.child_id for r in many],
                    lambda: self.claim_and_start_many(many, failover=True))
            case ForgetOrphan(record, why):
                return self.tasks.spawn(record.child_id, lambda: self.forget(
                    record, record.owner, record.incarnation, why))
            case StartOwn(record):
                return self.tasks.spawn(record.child_id, lambda: self.claim_and_start(record))
            case StartOwnMany(many):
                return self.tasks.spawn_many([r.child_id for r in many],
                                             lambda: self.claim_and_start_many(many))
            case Move(child_id, incarnation, target):
                return self.tasks.spawn(child_id,
                                        lambda: self._move(child_id, incarnation, target))
            case Reassign(record, target):
                return self.tasks.spawn(record.child_id, lambda: self._reassign(
                    record.child_id, record.incarnation, target))
        return None

    # ------------------------------------------------------------------ driver requests
    async def start_owned(self, record: ChildRecord, spec: ChildSpec) -> DynamicChildInfo:
        """Start a child whose record the driver has just created naming this member
        (incarnation 1). ``StartChildError`` if it cannot start, ``SupervisorStopped`` if the
        supervisor stopped; the record is then removed."""
        if self.halted:
            await self.forget(record, self.node_id, record.incarnation, "supervisor stopped")
            raise SupervisorStopped(f"dynamic supervisor {self.sup!r} has stopped")
        run = self.running.get(record.child_id)
        if run is not None:  # a retried request: the child runs already
            current = await self.store.fresh(record.child_id)
            if current is not None and current.has_holder:
                return records.info_of(current, run.incarnation.holder)
        self.cache_spec(record, spec)
        info = await self._launch(record, spec, first=True)
        if info is None:
            raise StartChildError(f"child {record.child_id!r} was superseded while starting")
        return info

    async def start_owned_many(self, owned: Sequence[ChildRecord],
                               specs: Sequence[ChildSpec]) -> list[Outcome]:
        """``start_owned`` for many children (the driver's ``start_children``): their specs
        saved together, lightweight ones started in one host call and named in one batch,
        actor ones as usual. Per child, in order, its info or the error (its record removed)."""
        if self.halted:
            await self.forget_many(owned, "supervisor stopped")
            raise SupervisorStopped(f"dynamic supervisor {self.sup!r} has stopped")
        await records.asave_specs(self.sup, specs)
        by_id = {spec.id: spec for spec in specs}
        for record in owned:
            self.cache_spec(record, by_id[record.child_id])
        light = [r for r in owned if r.lightweight and r.child_id not in self.running]
        outcomes = await self.launch_many(light, by_id, first=True)
        heavy = [r for r in owned if r.child_id not in outcomes]
        answers = await asyncio.gather(*(self.start_owned(r, by_id[r.child_id]) for r in heavy),
                                       return_exceptions=True)
        outcomes.update({r.child_id: a for r, a in zip(heavy, answers, strict=True)})
        return [outcomes.get(r.child_id) for r in owned]

    async def terminate(self, child_id: str) -> bool:
        """Stop the child gracefully and delete its record. False if it is not known."""
        await self.running.stop(child_id, SHUTDOWN)
        if not await self.store.retry(child_id, None, lambda _: True, self.store.remove):
            return False
        await self.drop(child_id)
        self.log.info("child_terminated", child_id=child_id)
        return True

    async def restart(self, child_id: str) -> DynamicChildInfo | None:
        """Stop the child and start a new incarnation here (restart_child)."""
        await self.running.stop(child_id, SHUTDOWN)
        record = await self.store.fresh(child_id)
        if record is None or record.owner != self.node_id:
            return None
        return await self.claim_and_start(record, restarted=True)

    async def stop_all(self, reason: str = SHUTDOWN, brutal: bool = False) -> list[str]:
        """Stop every child, and start nothing afterwards: the lightweight ones together
        (thousands of them, each one call on the host), then the actor ones newest first (OTP
        stops in reverse start order)."""
        self.halted = True
        stopped = list(self.running)[::-1]
        light = {c for c in stopped if (run := self.running.get(c)) is not None
                 and run.incarnation.lightweight is not None}
        await asyncio.gather(*(self.tasks.spawn(c, lambda c=c: self.running.stop(c, reason, brutal))
                               for c in stopped if c in light))
        for child_id in (c for c in stopped if c not in light):
            await self.tasks.spawn(child_id,
                                   lambda c=child_id: self.running.stop(c, reason, brutal))
        await self.tasks.wait_all(STOP_ALL_WAIT_S)  # they see ``halted``: start nothing more
        for child_id in list(self.running)[::-1]:  # started by one of those meanwhile
            await self.running.stop(child_id, reason, brutal=True)
            stopped.append(child_id)
        self.link.close()
        if self.pool is not None:
            self.pool.close()
        return stopped

    # ------------------------------------------------------------------- claim and start
    async def claim_and_start(self, record: ChildRecord, failover: bool = False,
                              restarted: bool = False) -> DynamicChildInfo | None:
        """Claim incarnation + 1 of ``record`` (while it still names its owner and
        incarnation) and start it here."""
        if self.halted or record.child_id in self.running:
            return None
        spec = await self.spec_of(record)
        if spec is None:
            if self.expired(record):  # it can never start
                await self.forget(record, record.owner, record.incarnation,
                                  "its spec is missing")
            return None
        claimed = await self._claim(record, failover, restarted)
        if claimed is None:
            return None
        down_at = self.down_at(record.owner) if failover else None
        return await self._launch(claimed, spec, first=False, down_at=down_at)

    async def _claim(self, record: ChildRecord, failover: bool,
                     restarted: bool) -> ChildRecord | None:
        owner, number = record.owner, record.incarnation

        async def claim(current: ChildRecord) -> ChildRecord:
            new = current.claimed(self.node_id, self.region(), failover=failover,
                                  restarted=restarted)
            return ChildRecord.from_registration(await self.store.write(current, new))

        claimed = await self.store.retry(record.child_id, record,
                                         lambda r: r.names(owner, number), claim)
        if claimed is None:
            self.wake()
            return None
        self.log.info("child_claimed", child_id=record.child_id, epoch=claimed.epoch,
                      incarnation=claimed.incarnation, failover=failover,
                      from_node=owner[:12] if owner != self.node_id else None)
        return claimed

    async def _launch(self, claimed: ChildRecord, spec: ChildSpec, first: bool,
                      down_at: float | None = None) -> DynamicChildInfo | None:
        """Start the child of a record this member has claimed and register it there."""
        child_id, number = claimed.child_id, claimed.incarnation
        try:
            incarnation = await self._start(claimed, spec)
        except StartChildError as exc:
            return await self._start_failed(claimed, exc, first)
        run = Running(spec=spec, incarnation=incarnation, number=number)
        if self.halted:
            await stop_run(run, SUPERSEDED, brutal=True)
            if first:
                await self.forget(claimed, self.node_id, number, "supervisor stopped")
                raise SupervisorStopped(f"dynamic supervisor {self.sup!r} has stopped")
            return None
        self.running.add(child_id, run)
        if claimed.lightweight:
            self.watch_lightweight(child_id, run)
        else:
            asyncio.get_running_loop().create_task(self._watch(child_id, run))
        await handoff.restore(self.sup, child_id, incarnation.public, self.log)
        try:
            reg = await self.store.write(claimed, claimed.started(
                self.region(), time.time(), warm=incarnation.warm is not None),
                handle=incarnation.holder, on_holder_death="clear")
        except EpochConflict:
            self.log.warning("claim_lost_while_starting", child_id=child_id)
            await self.running.stop(child_id, SUPERSEDED, brutal=True)
            if first:
                raise StartChildError(f"child {child_id!r} was removed while starting") from None
            return None
        except HolderDead:
            if first:  # the caller learns it failed: leave nothing behind
                run.stopping = True
                self.running.discard(child_id, run)
                await self.forget(claimed, self.node_id, number, "died while starting")
                raise StartChildError(f"child {child_id!r} died right after starting") from None
            return None  # its exit is handled like any crash
        if down_at is not None:
            self.metrics.failed_over(time.time() - down_at)
        self.log.info("child_started", child_id=child_id, epoch=reg.epoch,
                      incarnation=number, pid=incarnation.pid, warm=incarnation.warm is not None)
        return records.info_from(reg)

    async def _start(self, claimed: ChildRecord, spec: ChildSpec) -> Incarnation:
        if claimed.lightweight:
            return await start_lightweight(self.link, spec, claimed.name)
        options = {k: v for k, v in spec.options.items() if k != "label_selector"}
        options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(self.node_id, soft=False)
        async with self.start_slots:
            return await start_worker(spec.model_copy(update={"options": options}), self.pool)

    async def _start_failed(self, claimed: ChildRecord, exc: StartChildError,
                            first: bool) -> DynamicChildInfo | None:
        self.log.warning("child_start_failed", child_id=claimed.child_id, error=str(exc))
        if first:
            await self.forget(claimed, self.node_id, claimed.incarnation, "start failed")
            raise exc
        decision = on_start_failure(claimed.child_id, str(exc), self.budget(claimed.child_id),
                                    self.config().on_exhausted)
        if isinstance(decision, Exhausted):
            await self.exhausted_child(claimed, decision)
        return None  # else a later reconcile round tries again (the record names this member)

    # ----------------------------------------------------------------------------- exits
    async def _watch(self, child_id: str, run: Running) -> None:
        reason = await run.incarnation.exited
        if not run.stopping and self.running.get(child_id) is run:
            self.tasks.spawn(child_id, lambda: self._child_exited(child_id, run, reason))

    async def _child_exited(self, child_id: str, run: Running, reason: str) -> None:
        if run.stopping or self.running.get(child_id) is not run:
            return
        self.running.discard(child_id, run)
        record = await self.store.fresh(child_id)
        if record is None or not record.names(self.node_id, run.number):
            return
        self.log.warning("child_exited", child_id=child_id, reason=reason,
                         incarnation=run.number)
        decision = on_exit(child_id, run.spec.restart, reason, self.budget(child_id),
                           self.config().on_exhausted)
        if isinstance(decision, Forget):
            await self.forget(record, self.node_id, run.number, decision.why)
        elif isinstance(decision, Exhausted):
            await self.exhausted_child(record, decision)
        elif not self.halted:
            self.metrics.restarted(reason)
            self.log.info("child_restart", child_id=child_id, reason=reason)
            claimed = await self._claim(record, failover=False, restarted=True)
            if claimed is not None:
                await self._launch(claimed, run.spec, first=False)

    # -------------------------------------------------------------------- stop / move
    async def _stop_if(self, child_id: str, incarnation: int) -> None:
        if self.running.current(child_id, incarnation) is not None:
            await self.running.stop(child_id, SHUTDOWN)

    async def _fence(self, child_id: str, incarnation: int) -> None:
        """Stop the child, without its terminate hook, if a fresh read confirms that its
        record no longer names it."""
        if self.running.current(child_id, incarnation) is None:
            return
        record = await self.store.fresh(child_id)
        if record is None or not record.names(self.node_id, incarnation):
            self.log.warning("child_superseded", child_id=child_id, incarnation=incarnation,
                             epoch=record.epoch if record else None)
            await self.running.stop(child_id, SUPERSEDED, brutal=True)

    async def _move(self, child_id: str, incarnation: int, target: str) -> None:
        run = self.running.current(child_id, incarnation)
        if run is None:
            return
        handle = await self.member(target)
        try:
            await rpc.aget(handle.stats.remote(), MEMBER_CALL_S, what="member stats")
        except Exception as exc:  # not up yet: the next round tries again
            self.log.info("move_deferred", child_id=child_id, to=target[:12], error=repr(exc))
            return
        run.stopping = True
        await handoff.hand_off(self.sup, child_id, run.incarnation.public, self.log)
        await shutdown(run.incarnation, run.spec, SHUTDOWN)
        self.running.discard(child_id, run)
        await self._reassign(child_id, run.number, target)

    async def _reassign(self, child_id: str, number: int, target: str) -> bool:
        """Re-own a record that runs nowhere to ``target`` and poke its member."""

        async def reassign(current: ChildRecord) -> bool:
            await self.store.write(current, current.moving_to(target))
            return True

        moved = await self.store.retry(child_id, None, lambda r: r.names(self.node_id, number),
                                       reassign)
        if not moved:
            return False
        self.log.info("child_move", child_id=child_id, to=target[:12])
        (await self.member(target)).reconcile_now.remote()
        return True
