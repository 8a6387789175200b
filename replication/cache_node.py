"""The replica of a cache on one node: ``herd/cache/<name>/<node_id>`` (detached, hard-pinned,
no CPU, restarted by Ray), and the settings every replica of a cache shares.

* **replicated**: every replica holds every entry; a write stamped here (HLC) is merged here and
  spread to every peer before it is acknowledged; a change feed (``changes``) keeps the
  in-process mirrors of clients on this node fresh, so their reads are local dict reads.
* **partitioned**: a key lives on its owner and ``backups`` more (``cache_ring``); the owner
  spreads writes to the backups. When membership changes, every replica re-homes what it holds
  (``RehomePlan``): keys go to their new holders, then the ones it no longer holds are dropped.
* ``begin_load`` / ``end_load``: single flight. The ring owner of a key admits one loader per key
  at a time; the others wait for its value (or, if it fails or passes ``load_timeout_s``, one of
  them loads next).
Deletes (invalidations) go to every replica, in both topologies.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
import uuid
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any, Literal

import ray
from pydantic import BaseModel, ConfigDict, Field
from ray.exceptions import RayError

from herd.platform.clocks import HybridLogicalClock
from herd.platform.control_plane import control_plane_options
from herd.platform.errors import HerdError
from herd.platform.gcs import anodes
from herd.platform.logging import get_logger
from herd.platform.membership import AsyncMembership, MembershipEvent, NodeDown
from herd.platform.rpc import aget
from herd.replication.cache_ring import CacheRing, RehomePlan
from herd.replication.cache_store import CacheStore, Entry, Version

ACTOR_PREFIX = "herd/cache/"
SPREAD_TIMEOUT_S = 2.0
START_TIMEOUT_S = 30.0
REHOME_ATTEMPTS = 10
REHOME_RETRY_S = 0.5
FEED_SIZE = 10_000

log = get_logger("herd.cache")

Item = tuple[Hashable, Entry | None, Version]  # (key, entry or None for a delete, version)


class CacheSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1)
    topology: Literal["local", "replicated", "partitioned"] = "replicated"
    ttl: float | None = Field(default=None, gt=0)
    max_entries: int | None = Field(default=None, ge=1)
    backups: int = Field(default=1, ge=0)
    load_timeout_s: float = Field(default=30.0, gt=0)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def node_actor_options(name: str, node_id: str) -> dict[str, Any]:
    return control_plane_options(f"{ACTOR_PREFIX}{name}/{node_id}", node_id=node_id)


def expiry(ttl: float | None, default: float | None) -> int | None:
    chosen = default if ttl is None else ttl
    return None if chosen is None else now_ms() + int(chosen * 1000)


@dataclass
class Flight:
    token: str
    deadline: float
    done: asyncio.Event = field(default_factory=asyncio.Event)


@ray.remote
class CacheNode:
    """One node's replica of a replicated or partitioned cache (async)."""

    def __init__(self, settings: dict[str, Any], node_id: str) -> None:
        self.settings = CacheSettings.model_validate(settings)
        self.node_id = node_id
        self.store = CacheStore(self.settings.max_entries)
        self.hlc = HybridLogicalClock(node_id)
        self.ring = CacheRing(self.settings.backups if self.partitioned else 0)
        self.nodes: set[str] = {node_id}
        self.peers: dict[str, Any] = {}
        self.feed: collections.deque[tuple[int, Item]] = collections.deque(maxlen=FEED_SIZE)
        self.seq = 0
        self.changed: asyncio.Condition | None = None
        self.flights: dict[Hashable, Flight] = {}
        self.rehoming: asyncio.Lock | None = None
        self.rehomes = 0
        self.placed: set[str] = {node_id}  # the live nodes as of the last re-homing
        self.last_rehome: dict[str, Any] = {}
        self.synced = not self.replicated
        self.tasks: set[asyncio.Task[Any]] = set()

    @property
    def partitioned(self) -> bool:
        return self.settings.topology == "partitioned"

    @property
    def replicated(self) -> bool:
        return self.settings.topology == "replicated"

    async def ready(self) -> dict[str, Any]:
        if self.changed is None:
            self.changed, self.rehoming = asyncio.Condition(), asyncio.Lock()
            me = ray.get_runtime_context().current_actor
            await (await AsyncMembership.get()).subscribe(me, "on_membership_event")
        return {"node_id": self.node_id}

    # ------------------------------------------------------------------ membership
    def _peer(self, node_id: str) -> Any:
        handle = self.peers.get(node_id)
        if handle is None:
            handle = self.peers[node_id] = CacheNode.options(
                **node_actor_options(self.settings.name, node_id)).remote(
                    self.settings.model_dump(), node_id)
        return handle

    async def on_membership_event(self, event: MembershipEvent) -> None:
        if event.node_id == self.node_id:
            return
        if isinstance(event, NodeDown):
            self.nodes.discard(event.node_id)
            self.peers.pop(event.node_id, None)
        else:
            self.nodes.add(event.node_id)
            self._spawn(self._start_peer(event.node_id))
        if self.partitioned:
            self._spawn(self._rehome())

    async def _start_peer(self, node_id: str) -> None:
        try:
            await aget(self._peer(node_id).ready.remote(), START_TIMEOUT_S, "cache replica start")
            if not self.synced:
                self.synced = True  # a new replica of a replicated cache copies a peer's
                await self.apply(await aget(self._peer(node_id).snapshot.remote(),
                                            START_TIMEOUT_S, "cache snapshot"))
        except (HerdError, RayError) as exc:
            log.warning("cache_peer_start_failed", node_id=node_id, error=repr(exc))

    async def _rehome(self) -> None:
        """Send what this replica holds to the keys' new holders, from the node set of the
        last re-homing to the live nodes the GCS shows now (never a partial view built from
        events, which could drop keys this replica still holds), retried until every new
        holder acknowledged (a new node's replica may still be starting)."""
        assert self.rehoming is not None
        async with self.rehoming:
            for attempt in range(REHOME_ATTEMPTS):
                live = {n.node_id for n in await anodes() if n.alive} | {self.node_id}
                self.nodes = set(live)  # a copy: events change self.nodes, not the plan
                at = now_ms()
                plan = RehomePlan(self.ring, self.node_id,
                                  [k for k, _ in self.store.live_items(at)], self.placed, live)
                if await self._send_keys(plan.sends, at):
                    for key in plan.drops:
                        self.store.drop(key)
                    self.placed = live
                    break
                await asyncio.sleep(REHOME_RETRY_S * (attempt + 1))
            self.rehomes += 1
            self.last_rehome = {"attempts": attempt + 1, "placed": len(self.placed),
                                "sent": sum(map(len, plan.sends.values())),
                                "dropped": len(plan.drops), "done": self.placed == live}
            log.info("cache_rehomed", cache=self.settings.name, **self.last_rehome)

    async def _send_keys(self, sends: dict[str, list[Hashable]], at: int) -> bool:
        batches: dict[str, list[Item]] = {}
        for node_id, keys in sends.items():
            for key in keys:
                entry = self.store.peek(key, at)
                if entry is not None:
                    batches.setdefault(node_id, []).append((key, entry, entry.version))
        try:
            await asyncio.gather(*(aget(self._peer(node).ready.remote(), START_TIMEOUT_S,
                                        "cache replica start") for node in batches))
        except (HerdError, RayError):
            return False
        return not await self._spread(batches)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # ------------------------------------------------------------------ replication
    async def apply(self, items: list[Item]) -> int:
        """Merge writes and deletes from a peer; how many changed something here."""
        changed = 0
        at = now_ms()
        for key, entry, version in items:
            if self.store.merge(key, entry, version, at):
                changed += 1
                self._record((key, entry, version))
        if changed:
            await self._notify()
        return changed

    def _record(self, item: Item) -> None:
        self.seq += 1
        self.feed.append((self.seq, item))

    async def _notify(self) -> None:
        assert self.changed is not None
        async with self.changed:
            self.changed.notify_all()

    async def _spread(self, batches: dict[str, list[Item]]) -> list[str]:
        """Send each node its items; the nodes that did not acknowledge in time."""
        targets = [(node, items) for node, items in batches.items() if items and node in
                   self.nodes]
        answers = await asyncio.gather(
            *(aget(self._peer(node).apply.remote(items), SPREAD_TIMEOUT_S, "cache spread")
              for node, items in targets), return_exceptions=True)
        return [node for (node, _), answer in zip(targets, answers, strict=True)
                if isinstance(answer, BaseException)]

    def _stamp(self) -> Version:
        stamp = self.hlc.now()
        return (stamp.wall_ms, stamp.logical, stamp.replica)

    def _targets(self, key: Hashable, delete: bool) -> list[str]:
        if delete or self.replicated:
            return [n for n in self.nodes if n != self.node_id]
        return [n for n in self.ring.holders(key, self.nodes) if n != self.node_id]

    async def _write(self, key: Hashable, entry: Entry | None, version: Version) -> dict[str, Any]:
        if self.store.merge(key, entry, version, now_ms()):
            self._record((key, entry, version))
            await self._notify()
        item = (key, entry, version)
        failed = await self._spread({n: [item] for n in self._targets(key, entry is None)})
        return {"version": version, "unacknowledged": failed}

    # ------------------------------------------------------------------ clients
    async def put(self, key: Hashable, value: Any, ttl: float | None) -> dict[str, Any]:
        version = self._stamp()
        return await self._write(key, Entry(value, version, expiry(ttl, self.settings.ttl)),
                                 version)

    async def delete(self, key: Hashable) -> dict[str, Any]:
        return await self._write(key, None, self._stamp())

    async def get(self, key: Hashable) -> tuple[bool, Any]:
        return self.store.get(key, now_ms())

    async def begin_load(self, key: Hashable, wait_s: float) -> tuple[str, Any]:
        """``("hit", value)``, ``("load", token)`` (the caller loads, then ``end_load``), or
        ``("timeout", None)`` when another loader is still running after ``wait_s``."""
        give_up = time.monotonic() + wait_s
        while True:
            entry = self.store.peek(key, now_ms())
            if entry is not None:
                self.store.stats.hits += 1
                return "hit", entry.value
            flight = self.flights.get(key)
            if flight is None or flight.deadline <= time.monotonic():
                token = uuid.uuid4().hex
                self.flights[key] = Flight(token, time.monotonic() + self.settings.load_timeout_s)
                self.store.stats.loads += 1
                return "load", token
            left = min(give_up, flight.deadline) - time.monotonic()
            if left <= 0:
                return "timeout", None
            try:
                await asyncio.wait_for(flight.done.wait(), left)
            except asyncio.TimeoutError:
                continue

    async def end_load(self, key: Hashable, token: str, loaded: bool, value: Any,
                       ttl: float | None) -> None:
        """The loader's result (``loaded`` False: it failed); wakes the waiters."""
        flight = self.flights.get(key)
        if flight is None or flight.token != token:
            return
        try:
            if loaded:
                await self.put(key, value, ttl)
        finally:
            del self.flights[key]
            flight.done.set()

    async def changes(self, after: int, wait_s: float) -> dict[str, Any]:
        """Changes after feed position ``after`` for a client's mirror, waiting up to
        ``wait_s`` for one; a snapshot when ``after`` is -1 or older than the feed reaches."""
        await self.ready()
        assert self.changed is not None
        if after < 0 or (self.feed and self.feed[0][0] > after + 1):
            return {"seq": self.seq, "snapshot": await self.snapshot()}
        if self.seq <= after:
            async with self.changed:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.changed.wait_for(lambda: self.seq > after),
                                           wait_s)
        return {"seq": self.seq, "items": [item for seq, item in self.feed if seq > after]}

    async def snapshot(self) -> list[Item]:
        at = now_ms()
        return ([(k, e, e.version) for k, e in self.store.live_items(at)]
                + [(k, None, v) for k, v in self.store.tombstone_items(at)])

    async def stats(self) -> dict[str, Any]:
        return {**self.store.stats.as_dict(), "node_id": self.node_id, "size": len(self.store),
                "nodes": sorted(self.nodes), "rehomes": self.rehomes,
                "last_rehome": self.last_rehome,
                "keys": sorted(map(repr, (k for k, _ in self.store.live_items(now_ms()))))}
