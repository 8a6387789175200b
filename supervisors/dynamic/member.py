"""One member of a distributed dynamic supervisor: an actor pinned to its node that owns the
children placed there.

Members keep no authority of their own. The registry record of each child (see
``herd.supervisors.dynamic.child_record``) says who owns it and which incarnation runs; a
member acts only after winning a compare-and-set on the record's epoch, so a child is started
at most once per claim even when members' views of the cluster differ.

The member is a thin shell: a level-triggered reconcile loop, woken by membership events and
pokes and otherwise run every ``reconcile_interval_s``, takes a ``Snapshot`` of what it sees,
asks the pure planner (``herd.supervisors.dynamic.planner``) what to do, and hands the actions
to its ``ChildExecutor`` (``herd.supervisors.dynamic.executor``), which also serves the
driver's requests. When a node goes down, the claims of its lightweight children are planned at
once from the last round's records (``_take_over``), before any read. It never blocks its
event loop: registry and KV calls are awaited through their asyncio faces.

Crashes are handled by the owner: each child has its own restart budget (intensity window),
kept in the owner's memory (a child that fails over starts with a fresh budget).

Lightweight children run in one host actor per member, on the member's node, created by the
member (so owned by it: the host dies with its member) as soon as the supervisor has a
lightweight child and this member is eligible. Not the member itself: a child that blocks the
loop, or a watchdog escalation that ends the host's process, must not stall or kill the member
(its reconcile loop, claims and driver requests); and not a host started on demand: it runs
before any failover needs it, so no process start is on the failover path.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from herd.platform import control_plane, rpc
from herd.platform.gcs import NodeInfo
from herd.platform.logging import get_logger
from herd.platform.membership import AsyncMembership, NodeDown, NodeUp
from herd.registry import AsyncRegistry
from herd.supervisors.dynamic import records
from herd.supervisors.dynamic.child_record import ChildRecord
from herd.supervisors.dynamic.executor import ChildExecutor
from herd.supervisors.dynamic.metrics import DynamicMetrics
from herd.supervisors.dynamic.planner import Snapshot, plan, plan_takeover
from herd.supervisors.dynamic.running import SUPERSEDED
from herd.supervisors.dynamic.spec import DynamicChildInfo, DynamicSupervisorSpec
from herd.supervisors.errors import SupervisorStopped
from herd.supervisors.otp.exit import SHUTDOWN
from herd.supervisors.otp.spec import ChildSpec
from herd.supervisors.strategies import member_of
from herd.supervisors.warm.sizing import takeovers

log = get_logger("herd.dynamic")

RESYNC_S = 5.0
#: At most this long a reconcile round waits for a takeover's claims and starts before its
#: full read.
TAKEOVER_WAIT_S = 30.0
MEMBER_CALL_S = 5.0
#: Children this member creates at once. Ray starts worker processes one per CPU at a time
#: (``maximum_startup_concurrency``); more in flight would only queue inside Ray, where their
#: ``start_timeout`` would run out while they wait behind their siblings.
STARTS_PER_CPU = 4
MIN_START_SLOTS = 4


def member_name(supervisor: str, node_id: str) -> str:
    return f"herd/dsup/{supervisor}/{node_id}"


def member_handle(supervisor: str, node_id: str) -> Any | None:
    return control_plane.get_named(member_name(supervisor, node_id))


def retire_member(supervisor: str, node_id: str) -> bool:
    """End for good the member of ``supervisor`` on a node that died (blocking). Detached and
    pinned to that node, it would otherwise wait forever to be restarted there (the GCS keeps
    it pending); its lightweight host, which it owns, ends with it. True if there was one."""
    handle = member_handle(supervisor, node_id)
    if handle is None:
        return False
    ray.kill(handle, no_restart=True)
    return True


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
class DynamicMember:
    async def __init__(self, supervisor: str, node_id: str) -> None:
        config, stopped = await records.aload_state(supervisor)
        if config is None or stopped is not None:  # e.g. created by a round racing stop()
            raise SupervisorStopped(f"dynamic supervisor {supervisor!r} is not running")
        self.sup = supervisor
        self.node_id = node_id
        self.config = config
        self.strategy = config.strategy()
        self.log = log.bind(supervisor=supervisor, node_id=node_id[:12])
        self.nodes: dict[str, NodeInfo] = {}
        self.down_at: dict[str, float] = {}
        self.handles: dict[str, Any] = {}
        self.ensured: set[str] = {node_id}
        self.retired: set[str] = set()
        self.synced_at = 0.0
        self.seen_self = False
        #: The records of the last round, whether a node went down since, and the claims
        #: planned from those records when it did (``_take_over``).
        self.last_records: tuple[ChildRecord, ...] | None = None
        self.node_lost = False
        self.takeover: list[asyncio.Task[Any]] = []
        self.wakeup = asyncio.Event()
        registry = await AsyncRegistry.start(config.registry)
        self.membership = await AsyncMembership.get()
        await self.membership.subscribe(ray.get_runtime_context().current_actor,
                                        "on_membership_event", replay=False)
        await self._resync()
        here = self.nodes.get(node_id)
        cpus = here.resources.get("CPU", 1.0) if here is not None else 1.0
        self.children = ChildExecutor(
            supervisor, node_id, records.ChildRecords(supervisor, registry),
            DynamicMetrics(supervisor, node_id), self.log, config=lambda: self.config,
            region=self._region, down_at=self.down_at.get, member=self._member,
            wake=self.reconcile_now, escalate=self._escalate,
            start_slots=max(MIN_START_SLOTS, int(STARTS_PER_CPU * cpus)))
        self.warming: asyncio.Task[Any] | None = None
        self.prefetching: asyncio.Task[Any] | None = None
        self.loop = asyncio.get_running_loop().create_task(self._reconcile_forever())
        self.log.info("member_started", pid=os.getpid())

    # ---------------------------------------------------------------------------- lifecycle
    async def start(self) -> dict[str, Any]:
        """Wait until the member is constructed (it supervises from then on); its stats."""
        return await self.stats()

    async def stats(self) -> dict[str, Any]:
        return {"node_id": self.node_id, "running": sorted(self.children.running),
                "busy": sorted(self.children.tasks.busy()), "halted": self.children.halted,
                "nodes": len(self.nodes), "pid": os.getpid(),
                "host": dict(self.children.link.host_info) if self.children.link.alive else None,
                "specs_cached": len(self.children.specs),
                "warm": self.children.pool.stats() if self.children.pool is not None else None}

    async def lightweight_host(self) -> Any:
        """The actor handle of this member's lightweight host (None while there is none)."""
        return self.children.link.host if self.children.link.alive else None

    async def lightweight_status(self) -> dict[str, Any]:
        """The host of this member's lightweight children: per child calls and estimated
        memory (``by_child``, keyed by the child's name), loop lag, RSS; ``{"host": None}``
        while there is none."""
        return await self.children.link.status()

    async def on_membership_event(self, event: NodeUp | NodeDown) -> None:
        if isinstance(event, NodeUp):
            self.nodes[event.node_id] = event.node
            self.ensured.discard(event.node_id)
        else:
            self.nodes.pop(event.node_id, None)
            self.down_at[event.node_id] = event.at
            self.node_lost = True
            self._take_over()
        self.reconcile_now()

    def reconcile_now(self) -> None:
        self.wakeup.set()

    async def _reconcile_forever(self) -> None:
        while not self.children.halted:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.wakeup.wait(), self.config.reconcile_interval_s)
            self.wakeup.clear()
            try:
                await self._reconcile()
            except Exception as exc:  # one failed round must not end supervision
                self.log.warning("reconcile_failed", error=repr(exc))

    # ---------------------------------------------------------------------------- reconcile
    async def _reconcile(self) -> None:
        config, stopped = await records.aload_state(self.sup)
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
        self._take_over()
        if self.takeover:  # its read would compete with the claims for this loop and the registry
            await asyncio.wait(self.takeover, timeout=TAKEOVER_WAIT_S)
            self.takeover = [t for t in self.takeover if not t.done()]
        await self._ensure_members()
        await self._retire_dead_members()
        self.last_records = tuple(await self.children.store.all())
        snapshot = self._snapshot(config, self.last_records)
        for action in plan(snapshot):
            self.children.carry_out(action)
        self.children.metrics.running(len(self.children.running), self.children.budgets.values())
        if any(m.id == self.node_id for m in snapshot.members):
            light = any(r.lightweight for r in snapshot.records)
            if light:
                self._warm_host()
            if light or self.children.pool is not None:
                self._prefetch_specs(snapshot)

    def _take_over(self) -> None:
        """After a node went down: claim its lightweight children from the last round's
        records, at once (in the membership event's handler, not after the round in flight):
        reading 10 000 records again first would delay every claim by that read. The next full
        round waits for these claims and starts."""
        if not self.node_lost or self.last_records is None or self.children.halted:
            return
        self.node_lost = False
        snapshot = self._snapshot(self.config, self.last_records)
        self.takeover += [task for action in plan_takeover(snapshot)
                          if (task := self.children.carry_out(action)) is not None]

    def _snapshot(self, config: DynamicSupervisorSpec,
                  records: tuple[ChildRecord, ...]) -> Snapshot:
        return Snapshot(
            node_id=self.node_id,
            members=tuple(member_of(n) for n in config.eligible(self.nodes.values())),
            live_nodes=frozenset(nid for nid, n in self.nodes.items() if n.alive),
            records=records, running=self.children.running.view(), strategy=self.strategy,
            now=time.time(), busy=self.children.tasks.busy(),
            draining=self.node_id in config.draining, redistribution=config.redistribution,
            lightweight_capacity=config.lightweight.max_children_per_host)

    def _prefetch_specs(self, snapshot: Snapshot) -> None:
        """Read ahead, in the background, the specs this member would need to take over the
        lightweight children of another node (none is read on the failover path then); with
        a warm pool, size it (``standby="auto"``: what this member would take over)."""
        if self.prefetching is not None and not self.prefetching.done():
            return
        warm = self.config.warm
        sets = (takeovers(self.node_id, self.strategy, snapshot.records, snapshot.members)
                if warm is not None and warm.standby == "auto" else [])

        async def prefetch() -> None:
            try:
                await self.children.prefetch_specs(snapshot.records, sets)
            except Exception as exc:  # tried again next round
                self.log.warning("spec_prefetch_failed", error=repr(exc))

        self.prefetching = asyncio.get_running_loop().create_task(prefetch())

    def _warm_host(self) -> None:
        """Create the host of lightweight children now, in the background, if there is none."""
        if self.children.link.alive or self.children.halted or (
                self.warming is not None and not self.warming.done()):
            return

        async def warm() -> None:
            try:
                await self.children.link.ensure()
            except Exception as exc:  # tried again next round
                self.log.warning("lightweight_host_not_started", error=repr(exc))

        self.warming = asyncio.get_running_loop().create_task(warm())

    async def _resync(self) -> None:
        """Replace the view of the nodes with membership's (events may have been lost)."""
        nodes = await self.membership.nodes(timeout=MEMBER_CALL_S)
        view = {node.node_id: node for node in nodes}
        now = time.time()
        for gone in self.nodes.keys() - view.keys():
            self.down_at.setdefault(gone, now)
            self.ensured.discard(gone)
            self.node_lost = True
        self.nodes = view
        self.seen_self = self.seen_self or self.node_id in view
        self.synced_at = time.monotonic()

    async def _ensure_members(self) -> None:
        """A member on every node the ``members`` selector admits (the head too, under the
        head rule: it is there, idle, for when no worker is left)."""
        for node in self.config.hosts(self.nodes.values()):
            if node.node_id not in self.ensured and not self.children.halted:
                try:
                    self.handles[node.node_id] = await rpc.blocking(ensure_member, self.sup,
                                                                    node.node_id)
                    self.ensured.add(node.node_id)
                except Exception as exc:  # retried next round
                    self.log.warning("member_not_created", node=node.node_id[:12],
                                     error=repr(exc))

    async def _retire_dead_members(self) -> None:
        """End the members of nodes that died (after the takeover: not on its path). Every
        member does it; ``ray.kill`` of an actor already dead is harmless."""
        for node_id in sorted(self.down_at.keys() - self.nodes.keys() - self.retired):
            try:
                if await rpc.blocking(retire_member, self.sup, node_id):
                    self.log.info("member_retired", node=node_id[:12])
                self.retired.add(node_id)
                self.handles.pop(node_id, None)
            except Exception as exc:  # tried again next round
                self.log.warning("member_not_retired", node=node_id[:12], error=repr(exc))

    def _region(self) -> str | None:
        node = self.nodes.get(self.node_id)
        return node.region if node is not None else None

    async def _member(self, node_id: str) -> Any:
        handle = self.handles.get(node_id)
        if handle is None:
            handle = await rpc.blocking(ensure_member, self.sup, node_id)
            self.handles[node_id] = handle
        return handle

    # ------------------------------------------------------------------- driver requests
    async def start_owned(self, record: ChildRecord, spec: ChildSpec) -> DynamicChildInfo:
        """Start a child whose record the driver has just created naming this member
        (incarnation 1). ``StartChildError`` if it cannot start, ``SupervisorStopped`` if the
        supervisor has stopped; no record is left then."""
        return await self.children.tasks.spawn(
            record.child_id, lambda: self.children.start_owned(record, spec))

    async def start_owned_many(self, owned: list[ChildRecord],
                               specs: list[ChildSpec]) -> list[Any]:
        """``start_owned`` for many children (``DynamicSupervisor.start_children``); per
        child, in order, its ``DynamicChildInfo`` or the error (no record left then)."""
        return await self.children.tasks.spawn_many(
            [r.child_id for r in owned], lambda: self.children.start_owned_many(owned, specs))

    async def terminate(self, child_id: str) -> bool:
        """Stop the child gracefully and delete its record. False if it is not known."""
        return await self.children.tasks.spawn(child_id,
                                               lambda: self.children.terminate(child_id))

    async def restart(self, child_id: str) -> DynamicChildInfo | None:
        """Stop the child and start a new incarnation here (restart_child)."""
        return await self.children.tasks.spawn(child_id,
                                               lambda: self.children.restart(child_id))

    async def stop_all(self, reason: str = SHUTDOWN, brutal: bool = False) -> list[str]:
        """Stop every child here, newest first, and stop supervising: this member starts
        nothing afterwards."""
        self.wakeup.set()
        return await self.children.stop_all(reason, brutal)

    # ----------------------------------------------------------------------------- halting
    async def _halt(self, reason: str, brutal: bool = False) -> None:
        if self.children.halted:
            return
        await self.stop_all(SUPERSEDED if brutal else SHUTDOWN, brutal=brutal)
        self.log.warning("member_halted", reason=reason)

    def _escalate(self) -> None:
        """A child exceeded its budget with ``on_exhausted="escalate"`` (the supervisor is
        marked stopped): tell the other members, and halt. Not awaited by the operation that
        escalates: halting waits for in-flight operations, that one included."""
        asyncio.get_running_loop().create_task(self._escalated())

    async def _escalated(self) -> None:
        for node in self.config.hosts(self.nodes.values()):
            if node.node_id != self.node_id:
                (await self._member(node.node_id)).reconcile_now.remote()
        await self._halt("escalated")
