"""One member of a distributed dynamic supervisor: an actor pinned to its node that owns the
children placed there.

Members keep no authority of their own. The registry record of each child (see
``herd.supervisors.dynamic.records``) says who owns it and which incarnation runs; a member acts
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

Every operation on a child (start, exit handling, fence, move, terminate; see
``herd.supervisors.dynamic.ops``) runs as a task that holds the child's lock, and a reconcile
round skips children with an operation in flight, so two operations on one child never
interleave.

Crashes are handled by the owner: each child has its own restart budget (intensity window),
kept in the owner's memory (a child that fails over starts with a fresh budget).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from herd.platform import control_plane
from herd.platform.logging import get_logger
from herd.platform.membership import Membership, NodeDown, NodeInfo, NodeUp
from herd.registry import Registration, Registry
from herd.supervisors.dynamic import records
from herd.supervisors.dynamic.metrics import DynamicMetrics
from herd.supervisors.dynamic.ops import SUPERSEDED, ChildOps
from herd.supervisors.dynamic.spec import DynamicChildInfo, Placing, member_of, move_targets, place
from herd.supervisors.errors import SupervisorStopped
from herd.supervisors.otp.exit import SHUTDOWN
from herd.supervisors.otp.spec import ChildSpec

log = get_logger("herd.dynamic")

RESYNC_S = 5.0
STOP_ALL_WAIT_S = 30.0
#: Children this member creates at once. Ray starts worker processes one per CPU at a time
#: (``maximum_startup_concurrency``); more in flight would only queue inside Ray, where their
#: ``start_timeout`` would run out while they wait behind their siblings.
STARTS_PER_CPU = 4
MIN_START_SLOTS = 4
#: Threads for blocking registry/KV calls: one per concurrent operation, so that failing over
#: dozens of children is not serialised behind asyncio's small default pool.
IO_THREADS = 64


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


@ray.remote
class DynamicMember(ChildOps):
    async def __init__(self, supervisor: str, node_id: str) -> None:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(IO_THREADS, thread_name_prefix="herd-dsup"))
        config, stopped = await asyncio.to_thread(records.load_state, supervisor)
        if config is None or stopped is not None:  # e.g. created by a round racing stop()
            raise SupervisorStopped(f"dynamic supervisor {supervisor!r} is not running")
        self.sup = supervisor
        self.node_id = node_id
        self.config = config
        self.strategy = config.strategy()
        self.registry = await asyncio.to_thread(Registry.start, config.registry)
        self.metrics = DynamicMetrics(supervisor, node_id)
        self.nodes: dict[str, NodeInfo] = {}
        self.down_at = {}
        self.running = {}
        self.locks = {}
        self.busy = {}
        self.tasks = set()
        self.budgets = {}
        self.specs = {}
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
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.wakeup.wait(), self.config.reconcile_interval_s)
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

    # ------------------------------------------------------------------------- children
    async def start_owned(self, reg: Registration, spec: ChildSpec) -> DynamicChildInfo:
        """Start a child whose record the driver has just created naming this member (``reg``,
        incarnation 1). Raises ``StartChildError`` if it cannot start; the record is then
        removed."""
        return await self._spawn(reg.key, lambda: self._start_first(reg, spec))

    async def terminate(self, child_id: str) -> bool:
        """Stop the child gracefully and delete its record. False if it is not known."""
        return await self._spawn(child_id, lambda: self._terminate(child_id))

    async def restart(self, child_id: str) -> DynamicChildInfo | None:
        """Stop the child and start a new incarnation here (restart_child)."""
        return await self._spawn(child_id, lambda: self._restart(child_id))

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
        stopped = list(reversed(self.running))
        for child_id in stopped:
            await self._spawn(child_id, lambda c=child_id: self._stop(c, reason, brutal))
        if self.tasks:  # operations in flight see ``halted`` and start nothing more
            await asyncio.wait(list(self.tasks), timeout=STOP_ALL_WAIT_S)
        for child_id in reversed(list(self.running)):  # started by one of those meanwhile
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


def _placing(regs: list[Registration]) -> dict[str, Placing]:
    return {reg.key: Placing(reg.epoch, records.requirements_in(reg.meta)) for reg in regs}
