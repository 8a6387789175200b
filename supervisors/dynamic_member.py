"""One member of a distributed dynamic supervisor: an actor pinned to its node that owns the
children placed there.

Members keep no authority of their own. The registry record of each child (see
``herd.supervisors.dynamic_records``) says who owns it and which incarnation runs; a member acts
only after winning a compare-and-set on the record's epoch, so a child is started at most once
per claim even when members' views of the cluster differ. Every member runs a level-triggered
reconcile loop, woken by membership events and pokes and otherwise run every
``reconcile_interval_s``:

* a record owned by this member that it does not run is claimed (``incarnation + 1``) and started
  -- except a record the driver has just created (``start_by`` not passed): the driver's
  ``start_owned`` call starts those;
* a record whose owner's node is dead is claimed by the survivor the distribution strategy picks
  (temporary children are deleted instead);
* a child this member runs whose record is gone, or names another owner or incarnation, has been
  superseded and is killed without its ``terminate`` hook (the fence for a paused node that comes
  back); without quorum every local child is stopped;
* with ``redistribution="active"`` (or when its node drains), a child whose strategy owner is
  another member is moved: ``handoff()``, graceful stop, record re-owned, new owner poked.

Every operation on a child (start, exit handling, fence, move, terminate) runs as a task that
holds the child's lock, and a reconcile round skips children with an operation in flight, so two
operations on one child never interleave. A claim that loses its compare-and-set only because
the registry cleared a dead holder meanwhile (the record still names the owner and incarnation
it expected) is retried at the new epoch.

Crashes are handled by the owner: each child has its own restart budget (intensity window),
kept in the owner's memory (a child that fails over starts with a fresh budget).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from herd.platform import control_plane
from herd.platform.errors import (EpochConflict, HerdError, StartChildError, SupervisorError,
                                  SupervisorStopped)
from herd.platform.logging import get_logger
from herd.platform.membership import Membership, NodeDown, NodeInfo, NodeUp
from herd.registry import HolderDead, Registration, Registry
from herd.supervisors import dynamic_records as records
from herd.supervisors.dynamic_metrics import DynamicMetrics
from herd.supervisors.dynamic_spec import (DynamicChildInfo, DynamicSupervisorSpec, Placing,
                                           member_of, move_targets, place)
from herd.supervisors.exit import SHUTDOWN, is_normal
from herd.supervisors.intensity import RestartIntensity
from herd.supervisors.lifecycle import Incarnation, shutdown, start_worker
from herd.supervisors.spec import ChildSpec

log = get_logger("herd.dynamic")

T = TypeVar("T")

CLAIM_RETRIES = 5
HANDOFF_TIMEOUT_S = 10.0
MEMBER_CALL_S = 5.0
RESYNC_S = 5.0
STOP_ALL_WAIT_S = 30.0
#: Children this member creates at once. Ray starts worker processes one per CPU at a time
#: (``maximum_startup_concurrency``); more in flight would only queue inside Ray, where their
#: ``start_timeout`` would run out while they wait behind their siblings.
STARTS_PER_CPU = 2
MIN_START_SLOTS = 2
#: Threads for blocking registry/KV calls: one per concurrent operation, so that failing over
#: dozens of children is not serialised behind asyncio's small default pool.
IO_THREADS = 64
SUPERSEDED = "superseded"


def member_name(supervisor: str, node_id: str) -> str:
    return f"herd/dsup/{supervisor}/{node_id}"


def member_handle(supervisor: str, node_id: str) -> Any | None:
    return control_plane.get_named(member_name(supervisor, node_id))


def ensure_member(supervisor: str, node_id: str) -> Any:
    """Get or create the member of ``supervisor`` on ``node_id`` (it starts supervising as soon
    as it is constructed)."""
    return DynamicMember.options(
        name=member_name(supervisor, node_id), namespace=control_plane.HERD_NAMESPACE,
        lifetime="detached", get_if_exists=True, max_restarts=-1, max_task_retries=0,
        num_cpus=0, max_concurrency=1000,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node_id, soft=False),
    ).remote(supervisor, node_id)


@dataclass(eq=False)
class Running:
    """A child this member started: ``number`` is the incarnation its claim won, ``epoch`` the
    record's epoch once the child was registered."""

    spec: ChildSpec
    incarnation: Incarnation
    number: int
    epoch: int = 0
    stopping: bool = False


@ray.remote
class DynamicMember:
    async def __init__(self, supervisor: str, node_id: str) -> None:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(IO_THREADS, thread_name_prefix="herd-dsup"))
        config, stopped = await asyncio.to_thread(records.load_state, supervisor)
        if config is None or stopped is not None:  # e.g. created by a round racing stop()
            raise SupervisorStopped(f"dynamic supervisor {supervisor!r} is not running")
        self.sup = supervisor
        self.node_id = node_id
        self.config: DynamicSupervisorSpec = config
        self.strategy = config.strategy()
        self.registry = await asyncio.to_thread(Registry.start, config.registry)
        self.metrics = DynamicMetrics(supervisor, node_id)
        self.nodes: dict[str, NodeInfo] = {}
        self.down_at: dict[str, float] = {}
        self.running: dict[str, Running] = {}
        self.locks: dict[str, asyncio.Lock] = {}
        self.busy: dict[str, int] = {}
        self.tasks: set[asyncio.Task[Any]] = set()
        self.budgets: dict[str, RestartIntensity] = {}
        self.specs: dict[tuple[str, int], ChildSpec] = {}
        self.handles: dict[str, Any] = {}
        self.ensured: set[str] = {node_id}
        self.synced_at = 0.0
        self.seen_self = False
        self.halted = False
        self.wakeup = asyncio.Event()
        self.log = log.bind(supervisor=supervisor, node_id=node_id[:12])
        self.membership = await asyncio.to_thread(Membership.start)
        me = ray.get_runtime_context().current_actor
        await asyncio.to_thread(self.membership.subscribe, me, "on_membership_event", False)
        await self._resync()
        here = self.nodes.get(node_id)
        cpus = here.resources.get("CPU", 1.0) if here is not None else 1.0
        self.start_slots = asyncio.Semaphore(max(MIN_START_SLOTS, int(STARTS_PER_CPU * cpus)))
        self.loop = loop.create_task(self._reconcile_forever())
        self.log.info("member_started", pid=os.getpid())

    # ---------------------------------------------------------------------------- lifecycle
    async def start(self) -> dict[str, Any]:
        """Wait until the member is constructed (it supervises from then on); its stats."""
        return await self.stats()

    async def stats(self) -> dict[str, Any]:
        return {"node_id": self.node_id, "running": sorted(self.running),
                "busy": sorted(self.busy), "halted": self.halted, "nodes": len(self.nodes),
                "pid": os.getpid()}

    async def on_membership_event(self, event: NodeUp | NodeDown) -> None:
        if isinstance(event, NodeUp):
            self.nodes[event.node_id] = event.node
            self.ensured.discard(event.node_id)
        else:
            self.nodes.pop(event.node_id, None)
            self.down_at[event.node_id] = event.at
        self.reconcile_now()

    def reconcile_now(self) -> None:
        self.wakeup.set()

    async def _reconcile_forever(self) -> None:
        while not self.halted:
            try:
                await asyncio.wait_for(self.wakeup.wait(), self.config.reconcile_interval_s)
            except asyncio.TimeoutError:
                pass
            self.wakeup.clear()
            try:
                await self._reconcile()
            except Exception as exc:  # one failed round must not end supervision
                self.log.warning("reconcile_failed", error=repr(exc))

    # ---------------------------------------------------------------------------- reconcile
    async def _reconcile(self) -> None:
        config, stopped = await asyncio.to_thread(records.load_state, self.sup)
        if config is None or stopped is not None:
            await self._halt(stopped or "supervisor deleted")
            return
        self.config = config
        if time.monotonic() - self.synced_at > RESYNC_S:
            await self._resync()
        if self.seen_self and self.node_id not in self.nodes:
            # The GCS declared this node dead (it was hung): whatever runs here has been or
            # will be replaced elsewhere. Kill it without side effects and stop acting.
            self.log.error("member_node_declared_dead")
            await self._halt("node declared dead", brutal=True)
            return
        live = self._live_members()
        await self._ensure_members(live)
        regs: list[Registration] = await asyncio.to_thread(
            self.registry.select, None, {records.SUP_META: self.sup})
        loads: dict[str, int] = {}
        for reg in regs:
            loads[reg.meta["owner"]] = loads.get(reg.meta["owner"], 0) + 1
        members = [member_of(node, loads.get(nid, 0)) for nid, node in live.items()]
        quorum = self.strategy.has_quorum(members)
        idle = [reg for reg in regs if not self.busy.get(reg.key)]
        self._fence(idle, quorum)
        if quorum:
            self._adopt_orphans(idle, members)
            self._run_own(regs, members)
        self.metrics.running(len(self.running))

    def _live_members(self) -> dict[str, NodeInfo]:
        return {nid: node for nid, node in self.nodes.items()
                if node.alive and self.config.admits_node(node.labels)
                and nid not in self.config.draining}

    async def _resync(self) -> None:
        """Replace the view of the nodes with membership's (events may have been lost)."""
        nodes = await self._call(self.membership.actor.nodes.remote())
        view = {node.node_id: node for node in nodes}
        now = time.time()
        for gone in self.nodes.keys() - view.keys():
            self.down_at.setdefault(gone, now)
            self.ensured.discard(gone)
        self.nodes = view
        self.seen_self = self.seen_self or self.node_id in view
        self.synced_at = time.monotonic()

    async def _ensure_members(self, live: dict[str, NodeInfo]) -> None:
        for node_id in live:
            if node_id not in self.ensured and not self.halted:
                try:
                    self.handles[node_id] = await asyncio.to_thread(ensure_member, self.sup,
                                                                    node_id)
                    self.ensured.add(node_id)
                except Exception as exc:  # retried next round
                    self.log.warning("member_not_created", node=node_id[:12], error=repr(exc))

    def _fence(self, regs: list[Registration], quorum: bool) -> None:
        """Stop local children this member may no longer run. The snapshot only hints: the
        decision is taken on a fresh read, under the child's lock."""
        by_id = {reg.key: reg for reg in regs}
        for child_id, run in list(self.running.items()):
            if run.stopping or self.busy.get(child_id):
                continue
            reg = by_id.get(child_id)
            if not quorum:
                self.log.warning("child_stopped_no_quorum", child_id=child_id)
                self._spawn(child_id, lambda c=child_id, r=run: self._stop_if(c, r, SHUTDOWN))
            elif reg is None or not self._matches(reg, self.node_id, run.number):
                self._spawn(child_id, lambda c=child_id, r=run: self._check_superseded(c, r))

    def _adopt_orphans(self, regs: list[Registration], members: list[Any]) -> None:
        orphans = [reg for reg in regs if not self._alive(reg.meta["owner"])]
        if not orphans:
            return
        owners = place(self.strategy, _placing(orphans), members)
        unplaced = sorted(reg.key for reg in orphans if reg.key not in owners)
        if unplaced:
            self.log.warning("no_member_for_orphans", children=unplaced[:10], count=len(unplaced))
        for reg in orphans:
            if owners.get(reg.key) != self.node_id:
                continue
            owner, number = reg.meta["owner"], reg.meta["incarnation"]
            if reg.meta["restart"] == "temporary":
                self._spawn(reg.key, lambda r=reg, o=owner, n=number: self._forget(
                    r, o, n, "owner node died; temporary children are not restarted"))
            else:
                self._spawn(reg.key, lambda r=reg, o=owner, n=number: self._claim_and_start(
                    r, o, n, failover=True))

    def _run_own(self, regs: list[Registration], members: list[Any]) -> None:
        mine = [reg for reg in regs if reg.meta["owner"] == self.node_id]
        own = [reg for reg in mine if not self.busy.get(reg.key)]
        draining = self.node_id in self.config.draining
        stopped = [reg for reg in own if reg.key not in self.running]
        running = [reg for reg in own if reg.key in self.running
                   and not self.running[reg.key].stopping]
        # Loads in the snapshot do not show moves still in flight: a load-aware strategy
        # rebalances again only once they have landed (else it would move everything).
        settling = self.strategy.load_aware and len(own) < len(mine)
        targets = {} if settling and not draining else move_targets(
            self.strategy, self.node_id, _placing(running + stopped), members,
            redistribution=self.config.redistribution, draining=draining)
        for reg in running:
            if reg.key in targets:
                self._spawn(reg.key, lambda c=reg.key, t=targets[reg.key]: self._move(c, t))
        now = time.time()
        for reg in stopped:
            number = reg.meta["incarnation"]
            if reg.key in targets:
                self._spawn(reg.key, lambda c=reg.key, n=number, t=targets[reg.key]:
                            self._reassign(c, n, t))
            elif not draining and (reg.meta.get("start_by") or 0) <= now:
                self._spawn(reg.key, lambda r=reg, n=number: self._claim_and_start(
                    r, self.node_id, n))

    def _alive(self, node_id: str) -> bool:
        node = self.nodes.get(node_id)
        return node is not None and node.alive

    def _matches(self, reg: Registration | None, owner: str, number: int) -> bool:
        """Does the record still name ``owner`` and incarnation ``number``?"""
        return (reg is not None and reg.meta.get(records.SUP_META) == self.sup
                and reg.meta["owner"] == owner and reg.meta["incarnation"] == number)

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

    # ---------------------------------------------------------------------- start / claim
    async def start_owned(self, reg: Registration, spec: ChildSpec) -> DynamicChildInfo:
        """Start a child whose record the driver has just created naming this member (``reg``,
        incarnation 1). Raises ``StartChildError`` if it cannot start; the record is then
        removed."""
        return await self._spawn(reg.key, lambda: self._start_first(reg, spec))

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
        meta = dict(claimed.meta, state="running", started_at=time.time(), start_by=None)
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

    async def terminate(self, child_id: str) -> bool:
        """Stop the child gracefully and delete its record. False if it is not known."""
        return await self._spawn(child_id, lambda: self._terminate(child_id))

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

    async def restart(self, child_id: str) -> DynamicChildInfo | None:
        """Stop the child and start a new incarnation here (restart_child)."""
        return await self._spawn(child_id, lambda: self._restart(child_id))

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

    async def _member(self, node_id: str) -> Any:
        handle = self.handles.get(node_id)
        if handle is None:
            handle = await asyncio.to_thread(ensure_member, self.sup, node_id)
            self.handles[node_id] = handle
        return handle

    async def stop_all(self, reason: str = SHUTDOWN, brutal: bool = False) -> list[str]:
        """Stop every child here, newest first (OTP stops in reverse start order), and stop
        supervising: this member starts nothing afterwards."""
        self.halted = True
        self.wakeup.set()
        stopped = []
        for child_id in reversed(list(self.running)):
            await self._spawn(child_id, lambda c=child_id: self._stop(c, reason, brutal))
            stopped.append(child_id)
        if self.tasks:  # operations in flight see ``halted`` and start nothing more
            await asyncio.wait(list(self.tasks), timeout=STOP_ALL_WAIT_S)
        for child_id in reversed(list(self.running)):
            await self._stop(child_id, reason, brutal=True)
            stopped.append(child_id)
        return stopped

    async def _halt(self, reason: str, brutal: bool = False) -> None:
        if self.halted:
            return
        await self.stop_all(SUPERSEDED if brutal else SHUTDOWN, brutal=brutal)
        self.log.warning("member_halted", reason=reason)

    async def _poke_all(self) -> None:
        for node_id in self._live_members():
            if node_id != self.node_id:
                (await self._member(node_id)).reconcile_now.remote()


async def _await(ref: Any) -> Any:
    return await ref


def _placing(regs: list[Registration]) -> dict[str, Placing]:
    return {reg.key: Placing(reg.epoch, records.requirements_in(reg.meta)) for reg in regs}


async def _kill(run: Running) -> None:
    run.stopping = True
    await shutdown(run.incarnation, run.spec.model_copy(update={"shutdown": "brutal_kill"}),
                   SUPERSEDED)

