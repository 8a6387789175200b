"""One member of a distributed dynamic supervisor: an actor pinned to its node that owns the
children placed there.

Members keep no authority of their own. The registry record of each child (see
``herd.supervisors.dynamic_records``) says who owns it; a member acts only after winning a
compare-and-set on the record's epoch, so a child is started at most once per claim even when
members' views of the cluster differ. Every member runs a level-triggered reconcile loop, woken by
membership events and pokes and otherwise run every ``reconcile_interval_s``:

* a record owned by this member that it does not run is claimed (``incarnation + 1``) and started;
* a record whose owner's node is dead is claimed by the survivor the distribution strategy picks
  (temporary children are deleted instead);
* a child this member runs whose record is gone, or now names another owner or incarnation, has
  been superseded and is stopped (the fence for a paused node that comes back);
* with ``redistribution="active"`` (or when its node drains), a child whose strategy owner is
  another member is moved: ``handoff()``, graceful stop, record re-owned, new owner poked.

Crashes are handled by the owner: each child has its own restart budget (intensity window).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from herd.platform import control_plane
from herd.platform.errors import EpochConflict, HerdError, PlacementError, StartChildError
from herd.platform.logging import get_logger
from herd.platform.membership import Membership, NodeDown, NodeInfo, NodeUp
from herd.registry import Registration, Registry
from herd.supervisors import dynamic_records as records
from herd.supervisors.dynamic_metrics import DynamicMetrics
from herd.supervisors.dynamic_spec import (DynamicChildInfo, DynamicSupervisorSpec, member_of,
                                           requirements_of)
from herd.supervisors.exit import SHUTDOWN, is_normal
from herd.supervisors.intensity import RestartIntensity
from herd.supervisors.lifecycle import Incarnation, shutdown, start_worker
from herd.supervisors.spec import ChildSpec

log = get_logger("herd.dynamic")

CLAIM_RETRIES = 5
HANDOFF_TIMEOUT_S = 10.0


def member_name(supervisor: str, node_id: str) -> str:
    return f"herd/dsup/{supervisor}/{node_id}"


def member_handle(supervisor: str, node_id: str) -> Any | None:
    return control_plane.get_named(member_name(supervisor, node_id))


def ensure_member(supervisor: str, node_id: str) -> Any:
    """Get or create the member of ``supervisor`` on ``node_id`` and ask it to start."""
    handle = DynamicMember.options(
        name=member_name(supervisor, node_id), namespace=control_plane.HERD_NAMESPACE,
        lifetime="detached", get_if_exists=True, max_restarts=-1, max_task_retries=0,
        num_cpus=0, max_concurrency=1000,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node_id, soft=False),
    ).remote(supervisor, node_id)
    handle.start.remote()
    return handle


@dataclass(eq=False)
class Running:
    """A child this member started: its incarnation number is the claim it won."""

    spec: ChildSpec
    incarnation: Incarnation
    number: int
    stopping: bool = False


@ray.remote
class DynamicMember:
    def __init__(self, supervisor: str, node_id: str) -> None:
        config = records.load_config(supervisor)
        if config is None:
            raise HerdError(f"dynamic supervisor {supervisor!r} has no configuration")
        self.sup = supervisor
        self.node_id = node_id
        self.config: DynamicSupervisorSpec = config
        self.strategy = config.strategy()
        self.registry = Registry.start(config.registry)
        self.metrics = DynamicMetrics(supervisor, node_id)
        self.nodes: dict[str, NodeInfo] = {}
        self.down_at: dict[str, float] = {}
        self.running: dict[str, Running] = {}
        self.pending: dict[str, asyncio.Task[DynamicChildInfo | None]] = {}
        self.budgets: dict[str, RestartIntensity] = {}
        self.exiting: set[str] = set()
        self.known_members: set[str] = {node_id}
        self.wakeup: asyncio.Event | None = None
        self.loop: asyncio.Task[None] | None = None
        self.halted = False
        self.log = log.bind(supervisor=supervisor, node_id=node_id[:12])

    # ---------------------------------------------------------------------------- lifecycle
    async def start(self) -> dict[str, Any]:
        """Idempotent: subscribe to membership and run the reconcile loop."""
        if self.loop is None:
            self.wakeup = asyncio.Event()
            me = ray.get_runtime_context().current_actor
            membership = await asyncio.to_thread(Membership.start)
            for node in await asyncio.to_thread(membership.nodes):
                self.nodes[node.node_id] = node
            await asyncio.to_thread(membership.subscribe, me, "on_membership_event", False)
            self.loop = asyncio.get_running_loop().create_task(self._reconcile_forever())
            self.log.info("member_started")
        return await self.stats()

    async def stats(self) -> dict[str, Any]:
        return {"node_id": self.node_id, "running": sorted(self.running),
                "pending": sorted(self.pending), "halted": self.halted,
                "nodes": len(self.nodes)}

    async def on_membership_event(self, event: NodeUp | NodeDown) -> None:
        if isinstance(event, NodeUp):
            self.nodes[event.node_id] = event.node
            if self.config.admits_node(event.node.labels):
                self.known_members.discard(event.node_id)
        else:
            self.nodes.pop(event.node_id, None)
            self.down_at[event.node_id] = event.at
        self.reconcile_now()

    def reconcile_now(self) -> None:
        if self.wakeup is not None:
            self.wakeup.set()

    async def _reconcile_forever(self) -> None:
        assert self.wakeup is not None
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
    def _live_members(self) -> dict[str, NodeInfo]:
        return {nid: node for nid, node in self.nodes.items()
                if node.alive and self.config.admits_node(node.labels)
                and nid not in self.config.draining}

    async def _reconcile(self) -> None:
        config = await asyncio.to_thread(records.load_config, self.sup)
        stopped = await asyncio.to_thread(records.stopped_reason, self.sup)
        if config is None or stopped is not None:
            await self._halt(stopped or "supervisor deleted")
            return
        self.config = config
        live = self._live_members()
        self._ensure_members(live)
        regs: list[Registration] = await asyncio.to_thread(
            self.registry.select, None, {records.SUP_META: self.sup})
        loads: dict[str, int] = {}
        for reg in regs:
            loads[reg.meta["owner"]] = loads.get(reg.meta["owner"], 0) + 1
        members = [member_of(node, loads.get(nid, 0)) for nid, node in live.items()]
        quorum = self.strategy.has_quorum(members)
        by_id = {reg.key: reg for reg in regs}
        await self._fence(by_id, quorum)
        actions = []
        for reg in regs:
            action = self._plan(reg, live, members, quorum)
            if action is not None:
                actions.append(action)
        if actions:
            await asyncio.gather(*actions, return_exceptions=True)
        self.metrics.running(len(self.running))

    async def _fence(self, by_id: dict[str, Registration], quorum: bool) -> None:
        """Stop children this member may no longer run."""
        for child_id, run in list(self.running.items()):
            if run.stopping or child_id in self.pending:
                continue
            reg = by_id.get(child_id)
            if reg is None or reg.meta["owner"] != self.node_id \
                    or reg.meta["incarnation"] != run.number:
                self.log.warning("child_superseded", child_id=child_id, incarnation=run.number,
                                 epoch=reg.epoch if reg else None)
                await self._stop(child_id, "superseded")
            elif not quorum:
                self.log.warning("child_stopped_no_quorum", child_id=child_id)
                await self._stop(child_id, SHUTDOWN)

    def _plan(self, reg: Registration, live: dict[str, NodeInfo], members: list[Any],
              quorum: bool) -> Any:
        child_id, owner = reg.key, reg.meta["owner"]
        if child_id in self.pending or child_id in self.exiting:
            return None
        if owner == self.node_id:
            if child_id not in self.running:
                return self._claim_and_start(reg, failover=False) if quorum else None
            if self.running[child_id].stopping:
                return None
            if self.config.redistribution == "active" or self.node_id in self.config.draining:
                target = self._choose(child_id, reg, members)
                if target is not None and target != self.node_id:
                    return self._move(child_id, target)
            return None
        owner_alive = owner in self.nodes and self.nodes[owner].alive
        if owner_alive or not quorum:
            return None
        target = self._choose(child_id, reg, members)
        if target != self.node_id:
            return None
        if reg.meta["restart"] == "temporary":
            return self._forget(reg, "owner node died; temporary children are not restarted")
        return self._claim_and_start(reg, failover=True)

    def _choose(self, child_id: str, reg: Registration, members: list[Any]) -> str | None:
        spec = records.load_spec(self.sup, child_id)
        if spec is None:
            return None
        try:
            return self.strategy.choose(child_id, members, requirements_of(spec)).id
        except (PlacementError, HerdError) as exc:
            self.log.warning("no_member_for_child", child_id=child_id, error=str(exc))
            return None

    def _ensure_members(self, live: dict[str, NodeInfo]) -> None:
        for node_id in live:
            if node_id not in self.known_members:
                ensure_member(self.sup, node_id)
                self.known_members.add(node_id)

    # ---------------------------------------------------------------------- start / claim
    async def start_owned(self, child_id: str) -> DynamicChildInfo:
        """Start a child whose record names this member as owner (called by the driver right
        after it created the record). Raises ``StartChildError`` if it cannot start; the record
        is then removed."""
        reg = await asyncio.to_thread(self.registry.entry, child_id, fresh=True)
        if reg is None or reg.meta.get(records.SUP_META) != self.sup:
            raise StartChildError(f"child {child_id!r} has no record of supervisor {self.sup!r}")
        if child_id in self.running and reg.handle is not None:
            return records.info_from(reg)
        info = await self._claim_and_start(reg, failover=False, first=True)
        if info is None:
            raise StartChildError(f"child {child_id!r} was claimed by another member")
        return info

    async def _claim_and_start(self, reg: Registration, failover: bool, first: bool = False,
                               restarted: bool = False) -> DynamicChildInfo | None:
        child_id = reg.key
        task = self.pending.get(child_id)
        if task is None:
            task = asyncio.get_running_loop().create_task(
                self._do_start(reg, failover, first, restarted))
            self.pending[child_id] = task
            task.add_done_callback(lambda _t: self.pending.pop(child_id, None))
        return await asyncio.shield(task)

    async def _do_start(self, reg: Registration, failover: bool, first: bool,
                        restarted: bool) -> DynamicChildInfo | None:
        child_id = reg.key
        spec = await asyncio.to_thread(records.load_spec, self.sup, child_id)
        if spec is None:
            self.log.error("child_spec_missing", child_id=child_id)
            return None
        meta = dict(reg.meta)
        meta.update(owner=self.node_id, incarnation=meta["incarnation"] + 1, state="starting",
                    region=self.nodes.get(self.node_id, None) and self.nodes[self.node_id].region,
                    failovers=meta["failovers"] + int(failover),
                    restarts=meta["restarts"] + int(restarted))
        try:
            claimed = await asyncio.to_thread(self.registry.compare_and_set, child_id,
                                              reg.epoch, handle=None, meta=meta)
        except EpochConflict:
            self.reconcile_now()
            return None
        number = meta["incarnation"]
        self.log.info("child_claimed", child_id=child_id, epoch=claimed.epoch,
                      incarnation=number, failover=failover)
        pinned = spec.model_copy(update={"options": self._pinned_options(spec)})
        try:
            incarnation = await start_worker(pinned)
        except StartChildError as exc:
            return await self._start_failed(claimed, spec, exc, first)
        run = Running(spec=spec, incarnation=incarnation, number=number)
        self.running[child_id] = run
        found, state = await asyncio.to_thread(records.take_handoff, self.sup, child_id)
        if found and hasattr(incarnation.handle, "restore"):
            await self._restore(child_id, incarnation, state)
        meta.update(state="running", started_at=time.time())
        try:
            registered = await asyncio.to_thread(
                self.registry.compare_and_set, child_id, claimed.epoch,
                handle=incarnation.handle, meta=meta, on_holder_death="clear")
        except EpochConflict:
            self.log.warning("claim_lost_while_starting", child_id=child_id)
            await self._stop(child_id, "superseded")
            return None
        if failover:
            down = self.down_at.get(reg.meta["owner"])
            self.metrics.failed_over(time.time() - down if down else None)
        asyncio.get_running_loop().create_task(self._watch(child_id, run))
        self.log.info("child_started", child_id=child_id, epoch=registered.epoch,
                      incarnation=number, pid=incarnation.pid)
        return records.info_from(registered)

    def _pinned_options(self, spec: ChildSpec) -> dict[str, Any]:
        options = {k: v for k, v in spec.options.items() if k != "label_selector"}
        options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(self.node_id, soft=False)
        return options

    async def _restore(self, child_id: str, incarnation: Incarnation, state: Any) -> None:
        try:
            await asyncio.wait_for(_await(incarnation.handle.restore.remote(state)),
                                   HANDOFF_TIMEOUT_S)
            await asyncio.to_thread(records.drop_handoff, self.sup, child_id)
        except Exception as exc:
            self.log.warning("restore_failed", child_id=child_id, error=repr(exc))

    async def _start_failed(self, claimed: Registration, spec: ChildSpec, exc: StartChildError,
                            first: bool) -> DynamicChildInfo | None:
        self.log.warning("child_start_failed", child_id=spec.id, error=str(exc))
        if first:
            await self._forget(claimed, "start failed")
            raise exc
        # A restart or failover that cannot start counts against the child's budget and is
        # retried by a later reconcile round (the record still names this member).
        if not self._budget(spec.id).add():
            await self._exhausted(claimed, spec, "start failed: " + str(exc))
        return None

    # ---------------------------------------------------------------------------- exits
    async def _watch(self, child_id: str, run: Running) -> None:
        reason = await run.incarnation.exited
        if run.stopping or self.running.get(child_id) is not run:
            return
        del self.running[child_id]
        self.exiting.add(child_id)
        try:
            await self._child_exited(child_id, run, reason)
        finally:
            self.exiting.discard(child_id)

    async def _child_exited(self, child_id: str, run: Running, reason: str) -> None:
        spec = run.spec
        reg = await asyncio.to_thread(self.registry.entry, child_id, fresh=True)
        if reg is None or reg.meta["owner"] != self.node_id or reg.meta["incarnation"] != run.number:
            return
        self.log.warning("child_exited", child_id=child_id, reason=reason,
                         incarnation=run.number)
        if spec.restart == "temporary" or (spec.restart == "transient" and is_normal(reason)):
            await self._forget(reg, f"exited: {reason}")
            return
        if not self._budget(child_id).add():
            await self._exhausted(reg, spec, reason)
            return
        self.metrics.restarted()
        self.log.info("child_restart", child_id=child_id, reason=reason)
        await self._claim_and_start(reg, failover=False, restarted=True)

    def _budget(self, child_id: str) -> RestartIntensity:
        if child_id not in self.budgets:
            self.budgets[child_id] = RestartIntensity(self.config.max_restarts,
                                                      self.config.max_seconds)
        return self.budgets[child_id]

    async def _exhausted(self, reg: Registration, spec: ChildSpec, reason: str) -> None:
        self.log.error("child_give_up", child_id=spec.id, reason=reason,
                       max_restarts=self.config.max_restarts, max_seconds=self.config.max_seconds,
                       on_exhausted=self.config.on_exhausted)
        await asyncio.to_thread(records.record_gave_up, self.sup, spec.id, reason)
        if self.config.on_exhausted == "escalate":
            await asyncio.to_thread(records.mark_stopped, self.sup,
                                    f"child {spec.id!r} exceeded its restart intensity")
            self._poke_all()
            await self._halt("escalated")
        else:
            await self._forget(reg, "restart intensity exceeded")

    async def _forget(self, reg: Registration, why: str) -> None:
        """Delete a child's record (if unchanged) and its spec."""
        try:
            await asyncio.to_thread(self.registry.unregister, reg.key, None, epoch=reg.epoch)
        except EpochConflict:
            self.reconcile_now()
            return
        await asyncio.to_thread(records.delete_spec, self.sup, reg.key)
        self.budgets.pop(reg.key, None)
        self.log.info("child_removed", child_id=reg.key, why=why)

    # -------------------------------------------------------------------- stop / move / drain
    async def _stop(self, child_id: str, reason: str) -> str | None:
        run = self.running.get(child_id)
        if run is None:
            return None
        run.stopping = True
        try:
            return await shutdown(run.incarnation, run.spec, reason)
        finally:
            if self.running.get(child_id) is run:
                del self.running[child_id]

    async def terminate(self, child_id: str) -> bool:
        """Stop the child gracefully and delete its record. False if it is not known."""
        await self._stop(child_id, SHUTDOWN)
        for _ in range(CLAIM_RETRIES):
            reg = await asyncio.to_thread(self.registry.entry, child_id, fresh=True)
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
        raise HerdError(f"child {child_id!r} kept changing while being terminated")

    async def restart(self, child_id: str) -> DynamicChildInfo | None:
        """Stop the child and start a new incarnation here (restart_child)."""
        await self._stop(child_id, SHUTDOWN)
        reg = await asyncio.to_thread(self.registry.entry, child_id, fresh=True)
        if reg is None or reg.meta["owner"] != self.node_id:
            return None
        return await self._claim_and_start(reg, failover=False, restarted=True)

    async def _move(self, child_id: str, target: str) -> None:
        run = self.running.get(child_id)
        if run is None or run.stopping:
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
        for _ in range(CLAIM_RETRIES):
            reg = await asyncio.to_thread(self.registry.entry, child_id, fresh=True)
            if reg is None or reg.meta["owner"] != self.node_id:
                return
            meta = dict(reg.meta, owner=target, state="moving")
            try:
                await asyncio.to_thread(self.registry.compare_and_set, child_id, reg.epoch,
                                        handle=None, meta=meta)
            except EpochConflict:
                continue
            self.log.info("child_move", child_id=child_id, to=target[:12])
            target_member = member_handle(self.sup, target)
            if target_member is not None:
                target_member.reconcile_now.remote()
            return

    async def stop_all(self, reason: str = SHUTDOWN) -> list[str]:
        """Stop every child here, newest first (OTP stops in reverse start order)."""
        stopped = []
        for child_id in reversed(list(self.running)):
            await self._stop(child_id, reason)
            stopped.append(child_id)
        return stopped

    async def _halt(self, reason: str) -> None:
        if self.halted:
            return
        self.halted = True
        await self.stop_all(SHUTDOWN)
        self.log.warning("member_halted", reason=reason)

    def _poke_all(self) -> None:
        for node_id in self._live_members():
            handle = member_handle(self.sup, node_id)
            if handle is not None:
                handle.reconcile_now.remote()

    async def pid(self) -> int:
        import os

        return os.getpid()


async def _await(ref: Any) -> Any:
    return await ref
