"""The replica actor: one per (store, region), a child of its region's dynamic supervisor.

It owns a :class:`~herd.replication.core.ReplicaCore`, makes every change durable before it
acknowledges it (group commit through :mod:`herd.replication.durability`), pushes deltas to its
peers (:mod:`herd.replication.sync`) and feeds watchers and subscribers. Peers reach it through
``receive(payload) -> bytes``, the transport-independent entry point of ``protocol.py``.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from pathlib import Path
from typing import Any

import ray

from herd.platform import kv
from herd.platform.errors import ConfigError
from herd.platform.logging import get_logger
from herd.platform.metrics import start_sampling
from herd.platform.quorum import QuorumNotAchieved
from herd.replication.core import CoreConfig, ReplicaCore
from herd.replication.durability import Durability, FileDurability, KVDurability
from herd.replication.errors import InvalidValue, WrongValueType
from herd.replication.metrics import ReplicaMetrics
from herd.replication.models import StoreSettings
from herd.replication.sync import PeerSync
from herd.replication.transport import ActorTransport, PeerTransport, load_transport

log = get_logger("herd.replication.replica")

MAX_EVENTS = 10_000
OPS = {"lww_map": ("put", "delete"), "ormap": ("put", "delete", "incr", "add", "discard")}


def _now_ms() -> int:
    return int(time.time() * 1000)


def epoch_key(store: str, region: str) -> str:
    return f"herd/replication-epochs/{store}/{region}"


class Replica:
    """The replica of ``settings`` for ``region`` (an async Ray actor)."""

    def __init__(self, settings: dict[str, Any], region: str) -> None:
        self.settings = StoreSettings.model_validate(settings)
        self.region = region
        s = self.settings
        self.durability = self._durability()
        snapshot, records = self.durability.load()
        # Epochs only grow: the last one is kept in the KV store even for durability="file",
        # since a replica restarted on another node finds no file and maybe a slower clock.
        last = int(kv.get(epoch_key(s.name, region)) or b"0")
        epoch = max(time.time_ns() // 1000, last + 1, int((snapshot or {}).get("epoch", 0)) + 1)
        kv.put(epoch_key(s.name, region), str(epoch).encode())
        config = CoreConfig(s.name, region, s.regions, s.kind, s.max_message_bytes)
        self.core = ReplicaCore.restore(config, epoch, snapshot, records)
        self.transports: dict[str, PeerTransport] = {
            r: load_transport(spec) for r, spec in s.remote_regions.items()}
        self.local_transport = ActorTransport()
        self.commit_lock: asyncio.Lock | None = None
        self.requested = self.done = 0
        self.events: deque[dict[str, Any]] = deque(maxlen=MAX_EVENTS)
        self.event_count = 0
        self.changed: asyncio.Condition | None = None
        self.subscribers: list[tuple[Any, str]] = []
        self.watched = False  # set by the first watcher: only then are changes computed
        self.sync: PeerSync | None = None
        log.info("replica_started", store=s.name, region=region, epoch=epoch,
                 restored=snapshot is not None or bool(records), keys=self.core.state.key_count())

    def _durability(self) -> Durability:
        s = self.settings
        if s.durability == "kv":
            return KVDurability(s.name, self.region)
        node_id = ray.get_runtime_context().get_node_id()
        return FileDurability(Path(s.file_dir) / node_id / s.name / self.region)

    async def _started(self) -> PeerSync:
        if self.sync is None:
            self.commit_lock = asyncio.Lock()
            self.changed = asyncio.Condition()
            self.sync = PeerSync(self.core, self._send, self.commit, self.settings.batch_ms,
                                 self.settings.sync_interval_ms)
            self.sync.start()
            self.sync.kick(urgent=True)
            metrics = ReplicaMetrics(self.settings.name, self.region)
            self.sampling = start_sampling(lambda: metrics.sample(self.core.status(_now_ms())))
        return self.sync

    async def ready(self) -> dict[str, Any]:
        await self._started()
        return {"region": self.region, "epoch": self.core.epoch}

    async def _send(self, region: str, payload: bytes, timeout_s: float) -> bytes:
        transport = self.transports.get(region, self.local_transport)
        return await transport.send(self.settings.name, region, payload, timeout_s)

    # ---------------------------------------------------------------- durability

    async def commit(self) -> None:
        """Make every journal record so far durable; concurrent callers share one write."""
        assert self.commit_lock is not None
        self.requested += 1
        target = self.requested
        async with self.commit_lock:
            if self.done >= target:
                return
            covered = self.requested
            records = self.core.take_journal()
            if records:
                snapshot = self.core.snapshot() if self.durability.wants_snapshot else None
                await self.durability.append(records, snapshot)
            self.done = covered

    # ---------------------------------------------------------------- client operations

    async def write(self, op: str, args: list[Any], replicas: int, timeout_s: float
                    ) -> dict[str, Any]:
        """Apply ``op`` here and acknowledge once it is durable here and, for ``replicas`` > 1,
        durably merged by ``replicas - 1`` peers. Fails before changing anything when too few
        peers are reachable."""
        sync = await self._started()
        if op not in OPS[self.settings.kind]:
            raise WrongValueType(f"{op!r} is not an operation of kind {self.settings.kind!r}")
        reachable = sync.reachable()
        if replicas > 1 and 1 + sum(reachable.values()) < replicas:
            reachable = await sync.probe(min(1.0, timeout_s / 2))
        if 1 + sum(reachable.values()) < replicas:
            raise self._no_quorum(replicas, [], "unreachable before the write")
        watching = self._watching()
        try:
            self.core.write(op, *args)
        except ConfigError as exc:
            raise InvalidValue(str(exc)) from None
        seq = self.core.seq - 1
        await self.commit()
        if watching:
            self._emit(self.region, {args[0]: self.core.state.get(args[0])})
        sync.kick(urgent=replicas > 1)
        if replicas > 1:
            holders = await sync.wait_holders(seq, replicas - 1, timeout_s)
            if len(holders) < replicas - 1:
                raise self._no_quorum(replicas, holders, "no acknowledgement in time")
        return {"region": self.region, "epoch": self.core.epoch, "seq": seq}

    def _no_quorum(self, replicas: int, holders: list[str], why: str) -> QuorumNotAchieved:
        votes: dict[Any, Any] = {self.region: "ack", **{r: "ack" for r in holders}}
        missing: dict[Any, str] = {r: why for r in self.core.peers if r not in holders}
        return QuorumNotAchieved(votes, replicas, missing,
                                 what=f"write to store {self.settings.name!r}")

    async def read(self, key: Any) -> dict[str, Any]:
        """This replica's state of ``key`` (for quorum reads, joined by the caller)."""
        await self._started()
        return self.core.state.partial_key(key)

    async def get(self, key: Any) -> Any:
        await self._started()
        return self.core.state.get(key)

    async def items(self) -> dict[Any, Any]:
        await self._started()
        return self.core.state.items()

    # ---------------------------------------------------------------- peers

    async def receive(self, payload: bytes) -> bytes:
        """A peer's protocol message; the reply is returned only once what it changed is
        durable (see ``protocol.py``)."""
        sync = await self._started()
        before = self.core.changes
        watched = self.core.state.items() if self._watching() else None
        reply = self.core.handle(payload, _now_ms())
        await self.commit()
        if self.core.changes != before:
            sync.kick()
            if watched is not None:
                after = self.core.state.items()
                diff = {k: after.get(k) for k in watched.keys() | after.keys()
                        if watched.get(k) != after.get(k)}
                if diff:
                    self._emit("peer", diff)
        async with sync.acked:
            sync.acked.notify_all()
        return reply or b""

    # ---------------------------------------------------------------- watchers, subscribers

    def _watching(self) -> bool:
        return self.watched or bool(self.subscribers)

    def _emit(self, source: str, changes: dict[Any, Any]) -> None:
        self.event_count += 1
        event = {"n": self.event_count, "region": self.region, "source": source,
                 "changes": changes, "at_ms": _now_ms()}
        self.events.append(event)
        for handle, method in list(self.subscribers):
            try:
                getattr(handle, method).remote(event)
            except Exception as exc:  # a dead subscriber is dropped, never fatal
                log.info("replication_subscriber_dropped", method=method, error=str(exc))
                self.subscribers.remove((handle, method))
        if self.changed is not None:
            asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        assert self.changed is not None
        async with self.changed:
            self.changed.notify_all()

    async def changes(self, after: int, timeout_s: float) -> dict[str, Any]:
        """Events numbered after ``after``, waiting up to ``timeout_s`` for one."""
        await self._started()
        assert self.changed is not None
        self.watched = True
        if after < 0:
            return {"events": [], "next": self.event_count, "lost": False}
        deadline = time.monotonic() + min(timeout_s, 30.0)
        async with self.changed:
            while self.event_count <= after and time.monotonic() < deadline:
                try:
                    await asyncio.wait_for(self.changed.wait(), deadline - time.monotonic())
                except asyncio.TimeoutError:
                    break
        events = [e for e in self.events if e["n"] > after]
        lost = bool(events) and events[0]["n"] > after + 1 and after > 0
        return {"events": events, "next": self.event_count, "lost": lost}

    async def subscribe(self, handle: Any, method: str) -> None:
        await self._started()
        if (handle, method) not in self.subscribers:
            self.subscribers.append((handle, method))

    async def unsubscribe(self, handle: Any, method: str) -> None:
        if (handle, method) in self.subscribers:
            self.subscribers.remove((handle, method))

    # ---------------------------------------------------------------- status

    async def status(self) -> dict[str, Any]:
        sync = await self._started()
        status = self.core.status(_now_ms())
        for region, reach in sync.status().items():
            status["peers"][region].update(reach)
        status["durability"] = self.settings.durability
        status["node_id"] = ray.get_runtime_context().get_node_id()
        status["pid"] = os.getpid()
        status["keys"] = self.core.state.key_count()
        return status

    async def terminate(self, reason: str) -> None:
        if self.sync is not None:
            self.sync.stop()
            await self.commit()
