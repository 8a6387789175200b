"""Operations on one child of a dynamic supervisor member, each run as a task that holds the
child's lock (``ChildOps._spawn``): claim, start, restore handed-off state, handle its exit
against its own restart budget, fence, stop, move, forget. Mixed into
``herd.supervisors.dynamic.member.DynamicMember``, which owns the state they use.

Every registry write is a compare-and-set at an epoch the operation read. A conflict is retried
only while the record still names the owner and incarnation the operation expected (the
registry clearing a dead holder bumps the epoch but changes nothing else); any other change
means another member or a terminate got there first, and the operation gives up.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from herd.platform.errors import HerdError
from herd.platform.membership import NodeInfo
from herd.registry import HolderDead, Registration, Registry
from herd.registry.errors import EpochConflict
from herd.supervisors.dynamic import records
from herd.supervisors.dynamic.metrics import DynamicMetrics
from herd.supervisors.dynamic.spec import DynamicChildInfo, DynamicSupervisorSpec
from herd.supervisors.errors import StartChildError, SupervisorError, SupervisorStopped
from herd.supervisors.otp.exit import SHUTDOWN, is_normal
from herd.supervisors.otp.intensity import RestartIntensity
from herd.supervisors.otp.lifecycle import Incarnation, shutdown, start_worker
from herd.supervisors.otp.spec import ChildSpec

T = TypeVar("T")

CLAIM_RETRIES = 5
HANDOFF_TIMEOUT_S = 10.0
MEMBER_CALL_S = 5.0
SUPERSEDED = "superseded"


@dataclass(eq=False)
class Running:
    """A child this member started: ``number`` is the incarnation its claim won, ``epoch`` the
    record's epoch once the child was registered."""

    spec: ChildSpec
    incarnation: Incarnation
    number: int
    epoch: int = 0
    stopping: bool = False


class ChildOps:
    """The per-child half of a member (see the module docstring)."""

    sup: str
    node_id: str
    config: DynamicSupervisorSpec
    registry: Registry
    metrics: DynamicMetrics
    log: Any
    nodes: dict[str, NodeInfo]
    down_at: dict[str, float]
    running: dict[str, Running]
    locks: dict[str, asyncio.Lock]
    busy: dict[str, int]
    tasks: set[asyncio.Task[Any]]
    budgets: dict[str, RestartIntensity]
    specs: dict[tuple[str, int], ChildSpec]
    start_slots: asyncio.Semaphore
    halted: bool

    # Provided by the member actor.
    reconcile_now: Callable[[], None]
    _member: Callable[[str], Awaitable[Any]]
    _poke_all: Callable[[], Awaitable[None]]
    _halt: Callable[..., Awaitable[None]]

    # ----------------------------------------------------------------------------- tasks
    def _spawn(self, child_id: str, operation: Callable[[], Awaitable[T]]) -> asyncio.Task[T]:
        """Run ``operation`` under the child's lock, as a task; the child counts as busy (the
        reconcile loop leaves it alone) from now until the operation ends."""
        self.busy[child_id] = self.busy.get(child_id, 0) + 1

        async def locked() -> T:
            try:
                async with self.locks.setdefault(child_id, asyncio.Lock()):
                    return await operation()
            finally:
                self.busy[child_id] -= 1
                if not self.busy[child_id]:  # nobody holds or waits for the lock
                    del self.busy[child_id]
                    self.locks.pop(child_id, None)

        task = asyncio.get_running_loop().create_task(locked())
        self.tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        exc = None if task.cancelled() else task.exception()
        if isinstance(exc, HerdError):  # expected (a start that failed, a registry timeout)
            self.log.info("operation_failed", error=str(exc))
        elif exc is not None:
            self.log.error("operation_crashed", error=repr(exc))

    async def _call(self, ref: Any, timeout: float = MEMBER_CALL_S) -> Any:
        return await asyncio.wait_for(_await(ref), timeout)

    async def _fresh(self, child_id: str) -> Registration | None:
        return await asyncio.to_thread(self.registry.entry, child_id, fresh=True)

    def _matches(self, reg: Registration | None, owner: str, number: int) -> bool:
        """Does the record still name ``owner`` and incarnation ``number``?"""
        return (reg is not None and reg.meta.get(records.SUP_META) == self.sup
                and reg.meta["owner"] == owner and reg.meta["incarnation"] == number)

    # ---------------------------------------------------------------------- start / claim
    async def _start_first(self, reg: Registration, spec: ChildSpec) -> DynamicChildInfo:
        if self.halted:
            raise SupervisorStopped(f"dynamic supervisor {self.sup!r} has stopped")
        if reg.key in self.running:
            current = await self._fresh(reg.key)
            if current is not None and current.handle is not None:
                return records.info_from(current)
        self.specs[(reg.key, reg.entry_id)] = spec
        info = await self._launch(reg, spec, first=True)
        if info is None:
            raise StartChildError(f"child {reg.key!r} was superseded while starting")
        return info

    async def _claim_and_start(self, reg: Registration, owner: str, number: int,
                               failover: bool = False,
                               restarted: bool = False) -> DynamicChildInfo | None:
        if self.halted or reg.key in self.running:
            return None
        spec = await self._spec(reg)
        if spec is None:
            if (reg.meta.get("start_by") or 0) <= time.time():  # it can never start
                await self._forget(reg, owner, number, "its spec is missing")
            return None
        claimed = await self._claim(reg, owner, number, failover, restarted)
        if claimed is None:
            return None
        return await self._launch(claimed, spec, first=False,
                                  down_at=self.down_at.get(owner) if failover else None)

    async def _spec(self, reg: Registration) -> ChildSpec | None:
        cached = self.specs.get((reg.key, reg.entry_id))
        if cached is not None:
            return cached
        spec = await asyncio.to_thread(records.load_spec, self.sup, reg.key)
        if spec is None:
            self.log.error("child_spec_missing", child_id=reg.key)
            return None
        self.specs[(reg.key, reg.entry_id)] = spec
        return spec

    async def _claim(self, reg: Registration, owner: str, number: int, failover: bool,
                     restarted: bool) -> Registration | None:
        """Compare-and-set the record to ``incarnation + 1`` owned here; None if another
        member (or a terminate) changed it first."""
        current: Registration | None = reg
        for _ in range(CLAIM_RETRIES):
            assert current is not None
            meta = dict(current.meta, owner=self.node_id, incarnation=number + 1,
                        state="starting", start_by=None, region=self._region(),
                        failovers=current.meta["failovers"] + int(failover),
                        restarts=current.meta["restarts"] + int(restarted))
            try:
                claimed = await asyncio.to_thread(self.registry.compare_and_set, reg.key,
                                                  current.epoch, handle=None, meta=meta)
            except EpochConflict:
                current = await self._fresh(reg.key)
                if not self._matches(current, owner, number):
                    self.reconcile_now()
                    return None
                continue
            self.log.info("child_claimed", child_id=reg.key, epoch=claimed.epoch,
                          incarnation=number + 1, failover=failover,
                          from_node=owner[:12] if owner != self.node_id else None)
            return claimed
        return None

    def _region(self) -> str | None:
        node = self.nodes.get(self.node_id)
        return node.region if node is not None else None

    async def _launch(self, claimed: Registration, spec: ChildSpec, first: bool,
                      down_at: float | None = None) -> DynamicChildInfo | None:
        """Start the child of a record this member has claimed and register it there."""
        child_id, number = claimed.key, claimed.meta["incarnation"]
        pinned = spec.model_copy(update={"options": self._pinned_options(spec)})
        try:
            async with self.start_slots:
                incarnation = await start_worker(pinned)
        except StartChildError as exc:
            return await self._start_failed(claimed, spec, exc, first)
        run = Running(spec=spec, incarnation=incarnation, number=number)
        if self.halted:
            await _kill(run)
            return None
        self.running[child_id] = run
        asyncio.get_running_loop().create_task(self._watch(child_id, run))
        await self._restore(child_id, incarnation)
        meta = dict(claimed.meta, state="running", started_at=time.time(), start_by=None,
                    region=self._region())
        try:
            registered = await asyncio.to_thread(
                self.registry.compare_and_set, child_id, claimed.epoch,
                handle=incarnation.handle, meta=meta, on_holder_death="clear")
        except EpochConflict:
            self.log.warning("claim_lost_while_starting", child_id=child_id)
            await self._stop(child_id, SUPERSEDED, brutal=True)
            if first:
                raise StartChildError(f"child {child_id!r} was removed while starting") from None
            return None
        except HolderDead:
            if first:  # the caller learns it failed: leave nothing behind
                run.stopping = True
                self.running.pop(child_id, None)
                await self._forget(claimed, self.node_id, number, "died while starting")
                raise StartChildError(f"child {child_id!r} died right after starting") from None
            return None  # its exit is handled like any crash
        run.epoch = registered.epoch
        if down_at is not None:
            self.metrics.failed_over(time.time() - down_at)
        self.log.info("child_started", child_id=child_id, epoch=registered.epoch,
                      incarnation=number, pid=incarnation.pid)
        return records.info_from(registered)

    def _pinned_options(self, spec: ChildSpec) -> dict[str, Any]:
        options = {k: v for k, v in spec.options.items() if k != "label_selector"}
        options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(self.node_id, soft=False)
        return options

    async def _restore(self, child_id: str, incarnation: Incarnation) -> None:
        """Hand a moved child's state to its new incarnation (once: the state is dropped)."""
        found, state = await asyncio.to_thread(records.take_handoff, self.sup, child_id)
        if not found:
            return
        try:
            if hasattr(incarnation.handle, "restore"):
                await asyncio.wait_for(_await(incarnation.handle.restore.remote(state)),
                                       HANDOFF_TIMEOUT_S)
                self.log.info("child_restored", child_id=child_id)
        except Exception as exc:
            self.log.warning("restore_failed", child_id=child_id, error=repr(exc))
        finally:
            await asyncio.to_thread(records.drop_handoff, self.sup, child_id)

    async def _start_failed(self, claimed: Registration, spec: ChildSpec, exc: StartChildError,
                            first: bool) -> DynamicChildInfo | None:
        self.log.warning("child_start_failed", child_id=spec.id, error=str(exc))
        if first:
            await self._forget(claimed, self.node_id, claimed.meta["incarnation"], "start failed")
            raise exc
        # A restart or failover that cannot start counts against the child's budget and is
        # retried by a later reconcile round (the record still names this member).
        if not self._budget(spec.id).add():
            await self._exhausted(claimed, spec, "start failed: " + str(exc))
        return None

    # ---------------------------------------------------------------------------- exits
    async def _watch(self, child_id: str, run: Running) -> None:
        reason = await run.incarnation.exited
        if not run.stopping and self.running.get(child_id) is run:
            self._spawn(child_id, lambda: self._child_exited(child_id, run, reason))

    async def _child_exited(self, child_id: str, run: Running, reason: str) -> None:
        if run.stopping or self.running.get(child_id) is not run:
            return
        del self.running[child_id]
        reg = await self._fresh(child_id)
        if not self._matches(reg, self.node_id, run.number):
            return
        assert reg is not None
        self.log.warning("child_exited", child_id=child_id, reason=reason,
                         incarnation=run.number)
        spec = run.spec
        if spec.restart == "temporary" or (spec.restart == "transient" and is_normal(reason)):
            await self._forget(reg, self.node_id, run.number, f"exited: {reason}")
            return
        if not self._budget(child_id).add():
            await self._exhausted(reg, spec, reason)
            return
        self.metrics.restarted()
        self.log.info("child_restart", child_id=child_id, reason=reason)
        if self.halted:
            return
        claimed = await self._claim(reg, self.node_id, run.number, False, True)
        if claimed is not None:
            await self._launch(claimed, spec, first=False)

    def _budget(self, child_id: str) -> RestartIntensity:
        if child_id not in self.budgets:
            self.budgets[child_id] = RestartIntensity(self.config.max_restarts,
                                                      self.config.max_seconds)
        return self.budgets[child_id]

    async def _exhausted(self, reg: Registration, spec: ChildSpec, reason: str) -> None:
        self.log.error("child_give_up", child_id=spec.id, reason=reason,
                       max_restarts=self.config.max_restarts, max_seconds=self.config.max_seconds,
                       on_exhausted=self.config.on_exhausted)
        if self.config.on_exhausted == "escalate":
            await asyncio.to_thread(records.record_gave_up, self.sup, spec.id, reason)
            await asyncio.to_thread(records.mark_stopped, self.sup,
                                    f"child {spec.id!r} exceeded its restart intensity")
            await self._poke_all()
            # Not awaited: halting waits for in-flight operations, this one included.
            asyncio.get_running_loop().create_task(self._halt("escalated"))
        elif await self._forget(reg, self.node_id, reg.meta["incarnation"],
                                "restart intensity exceeded"):
            await asyncio.to_thread(records.record_gave_up, self.sup, spec.id, reason)

    async def _forget(self, reg: Registration, owner: str, number: int, why: str) -> bool:
        """Delete a child's record (while it still names ``owner``/``number``) and its spec."""
        current: Registration | None = reg
        for _ in range(CLAIM_RETRIES):
            assert current is not None
            try:
                await asyncio.to_thread(self.registry.unregister, reg.key, None,
                                        epoch=current.epoch)
                break
            except EpochConflict:
                current = await self._fresh(reg.key)
                if not self._matches(current, owner, number):
                    self.reconcile_now()
                    return False
        else:
            return False
        await asyncio.to_thread(records.delete_spec, self.sup, reg.key)
        self.budgets.pop(reg.key, None)
        self.specs.pop((reg.key, reg.entry_id), None)
        self.log.info("child_removed", child_id=reg.key, why=why)
        return True

    # -------------------------------------------------------------------- stop / move / drain
    async def _stop(self, child_id: str, reason: str, brutal: bool = False) -> str | None:
        run = self.running.get(child_id)
        if run is None:
            return None
        run.stopping = True
        spec = run.spec.model_copy(update={"shutdown": "brutal_kill"}) if brutal else run.spec
        try:
            return await shutdown(run.incarnation, spec, reason)
        finally:
            if self.running.get(child_id) is run:
                del self.running[child_id]

    async def _stop_if(self, child_id: str, run: Running, reason: str) -> None:
        if self.running.get(child_id) is run and not run.stopping:
            await self._stop(child_id, reason)

    async def _check_superseded(self, child_id: str, run: Running) -> None:
        if self.running.get(child_id) is not run or run.stopping:
            return
        reg = await self._fresh(child_id)
        if not self._matches(reg, self.node_id, run.number):
            self.log.warning("child_superseded", child_id=child_id, incarnation=run.number,
                             epoch=reg.epoch if reg else None)
            await self._stop(child_id, SUPERSEDED, brutal=True)

    async def _terminate(self, child_id: str) -> bool:
        await self._stop(child_id, SHUTDOWN)
        for _ in range(CLAIM_RETRIES):
            reg = await self._fresh(child_id)
            if reg is None or reg.meta.get(records.SUP_META) != self.sup:
                return False
            try:
                await asyncio.to_thread(self.registry.unregister, child_id, None,
                                        epoch=reg.epoch)
            except EpochConflict:
                continue
            await asyncio.to_thread(records.delete_spec, self.sup, child_id)
            self.budgets.pop(child_id, None)
            self.log.info("child_terminated", child_id=child_id)
            return True
        raise SupervisorError(f"child {child_id!r} kept changing while being terminated")

    async def _restart(self, child_id: str) -> DynamicChildInfo | None:
        await self._stop(child_id, SHUTDOWN)
        reg = await self._fresh(child_id)
        if reg is None or reg.meta["owner"] != self.node_id:
            return None
        return await self._claim_and_start(reg, self.node_id, reg.meta["incarnation"],
                                           restarted=True)

    async def _move(self, child_id: str, target: str) -> None:
        run = self.running.get(child_id)
        if run is None or run.stopping:
            return
        handle = await self._member(target)
        try:
            await self._call(handle.stats.remote())
        except Exception as exc:  # not up yet: the next round tries again
            self.log.info("move_deferred", child_id=child_id, to=target[:12], error=repr(exc))
            return
        run.stopping = True
        if hasattr(run.incarnation.handle, "handoff"):
            try:
                state = await asyncio.wait_for(_await(run.incarnation.handle.handoff.remote()),
                                               HANDOFF_TIMEOUT_S)
                await asyncio.to_thread(records.save_handoff, self.sup, child_id, state)
            except Exception as exc:
                self.log.warning("handoff_failed", child_id=child_id, error=repr(exc))
        await shutdown(run.incarnation, run.spec, SHUTDOWN)
        self.running.pop(child_id, None)
        await self._reassign(child_id, run.number, target)

    async def _reassign(self, child_id: str, number: int, target: str) -> bool:
        """Re-own a record that runs nowhere to ``target`` and poke its member."""
        for _ in range(CLAIM_RETRIES):
            reg = await self._fresh(child_id)
            if not self._matches(reg, self.node_id, number):
                return False
            assert reg is not None
            meta = dict(reg.meta, owner=target, state="moving")
            try:
                await asyncio.to_thread(self.registry.compare_and_set, child_id, reg.epoch,
                                        handle=None, meta=meta)
            except EpochConflict:
                continue
            self.log.info("child_move", child_id=child_id, to=target[:12])
            handle = await self._member(target)
            handle.reconcile_now.remote()
            return True
        return False


async def _await(ref: Any) -> Any:
    return await ref


async def _kill(run: Running) -> None:
    run.stopping = True
    await shutdown(run.incarnation, run.spec.model_copy(update={"shutdown": "brutal_kill"}),
                   SUPERSEDED)

