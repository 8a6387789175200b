"""The registry's control-plane actor: one per registry shard, the linearizable arbiter.

Detached, restartable (``max_restarts=-1``), pinned to the head node, named
``herd/registry/<name>[/<shard>]`` in the ``herd`` namespace. Writes are planned by
:class:`RegistryState` and serialised by one writer task (``herd.registry.commit``), which
stores the writes that arrive together -- and each batch (``register_many``,
``compare_and_set_many``, ``remove_many``) -- as one write-through to the GCS KV store before
acknowledging them; the state is reloaded when Ray restarts the actor (holder monitors, one per
distinct holder, and subscriptions are re-established). Expected refusals are returned as
:class:`Rejection` values for the client to raise.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import time
from typing import Any

import ray

from herd.platform.control_plane import control_plane_options
from herd.platform.gcs import actor_status
from herd.platform.logging import get_logger
from herd.platform.metrics import start_sampling
from herd.registry import metrics as registry_metrics
from herd.registry.change import Change
from herd.registry.commit import GroupCommit
from herd.registry.holders import HolderMonitor
from herd.registry.layout import actor_name
from herd.registry.models import actor_id
from herd.registry.persisted import LostHandle
from herd.registry.records import (
    ClaimItem,
    EventBatch,
    Expected,
    KeyMode,
    OnHolderDeath,
    RegisterItem,
    Registration,
    Rejection,
    RemoveItem,
    Snapshot,
    Updated,
)
from herd.registry.state import Planner, RegistryState
from herd.registry.store import ShardStore, Subscription
from herd.registry.subscribers import Subscribers, subscription_id

MAX_WAIT_S = 30.0
PLACEMENT_POLL_S = 0.02
RETRY_GONE_S = 1.0
GONE_CHUNK = 1000


@ray.remote
class RegistryActor:
    async def __init__(self, name: str, shard: int, mode: KeyMode) -> None:
        context = {"registry": name, "shard": shard}
        self._log = get_logger("herd.registry.actor", **context)
        self._store = ShardStore(name, shard)
        entries, high_water = self._store.load()
        self._state = RegistryState(mode, shard, high_water, entries)
        self._changed = asyncio.Event()
        self._writes = GroupCommit(self._state, self._store, self._after_commit, **context)
        self._writes.start()
        self._cleanups: set[asyncio.Task[None]] = set()
        self._holders = HolderMonitor(self._holder_gone, **context)
        self._holders.start()
        for holder_id, handle in self._state.holders().items():
            if isinstance(handle, LostHandle):  # its job and class are gone: the holder is dead
                self._holder_gone(holder_id, "holder died")
            else:
                self._holders.watch(holder_id, handle)
        self._subscribers = Subscribers(self._store, **context)
        self._subscribers.load()
        self._metrics = registry_metrics.of(name, str(shard))
        self._sampling = start_sampling(lambda: self._metrics.sample(
            self._state.count(), len(self._subscribers)))
        self._log.info("registry_started", mode=mode, records=self._state.count(),
                       counter=self._state.counter, pid=os.getpid())

    # ------------------------------------------------------------------------------- writes
    async def register(self, key: str, handle: Any, meta: dict[str, Any],
                       on_holder_death: OnHolderDeath, node_id: str | None, op: str,
                       ready_s: float) -> Registration | Rejection:
        self._metrics.op("register")
        holder_id = actor_id(handle)
        placed = node_id or await self._placement(key, handle, holder_id, ready_s)
        if isinstance(placed, Rejection):
            return placed
        return await self._apply(lambda s: s.plan_register(key, handle, holder_id, placed, meta,
                                                           on_holder_death, op, time.time()))

    async def unregister(self, key: str, holder_id: str | None,
                         epoch: int | None) -> int | Rejection:
        """Remove the key's records of ``holder_id`` (all when None); the number removed."""
        self._metrics.op("unregister")
        return await self._apply(lambda s: s.plan_unregister(key, holder_id, epoch))

    async def compare_and_set(self, key: str, expected: Expected, changes: dict[str, Any],
                              node_id: str | None, op: str,
                              ready_s: float) -> Registration | Rejection:
        self._metrics.op("compare_and_set")
        handle = changes.get("handle")
        holder_id = actor_id(handle) if handle is not None else None
        if handle is not None and node_id is None:
            placed = await self._placement(key, handle, holder_id, ready_s)
            if isinstance(placed, Rejection):
                return placed
            node_id = placed
        return await self._apply(lambda s: s.plan_compare_and_set(
            key, expected, changes, holder_id, node_id, op, time.time()))

    async def update_meta(self, key: str, meta: dict[str, Any], holder_id: str | None,
                          op: str) -> list[Registration] | Rejection:
        self._metrics.op("update_meta")
        return await self._apply(lambda s: s.plan_update_meta(key, meta, holder_id, op))

    # ------------------------------------------------------------------------------ batches
    async def register_many(self, items: list[RegisterItem],
                            ready_s: float) -> list[Registration | Rejection]:
        """``register`` of each item, as one write; per item the record or the refusal."""
        self._metrics.op("register", len(items))
        nodes = await self._placements({i.holder_id: (i.key, i.handle) for i in items
                                        if i.node_id is None}, ready_s)
        ready = [i for i in items if not isinstance(nodes.get(i.holder_id), Rejection)]
        results = iter(await self._apply(lambda s: s.plan_register_many(ready, time.time(),
                                                                        nodes)) if ready else [])
        return [dataclasses.replace(nodes[i.holder_id], key=i.key)
                if isinstance(nodes.get(i.holder_id), Rejection) else next(results)
                for i in items]

    async def compare_and_set_many(self, items: list[ClaimItem], ready_s: float,
                                   full: bool = True
                                   ) -> list[Registration | tuple[int, int] | Rejection]:
        """``compare_and_set`` of each item, as one write; per item the record (``full``) or
        only its new epoch and entry id, or the refusal."""
        self._metrics.op("compare_and_set", len(items))
        nodes = await self._placements(
            {i.holder_id: (i.key, i.changes["handle"]) for i in items
             if i.holder_id is not None and i.node_id is None}, ready_s)
        ready = [i for i in items if not isinstance(nodes.get(i.holder_id or ""), Rejection)]
        written = await self._apply(lambda s: s.plan_compare_and_set_many(
            ready, time.time(), nodes)) if ready else []
        results = iter(written if full else [_written(r) for r in written])
        return [dataclasses.replace(nodes[i.holder_id or ""], key=i.key)
                if isinstance(nodes.get(i.holder_id or ""), Rejection) else next(results)
                for i in items]

    async def remove_many(self, items: list[RemoveItem]) -> list[int | Rejection]:
        self._metrics.op("unregister", len(items))
        return await self._apply(lambda s: s.plan_remove_many(items))

    # ------------------------------------------------------------------------------ queries
    async def entry(self, key: str) -> tuple[int, list[Registration]]:
        """The key's records and the event position they are current at."""
        self._metrics.op("lookup")
        return self._state.counter, self._state.registrations(key)

    async def select(self, prefix: str, meta: dict[str, Any],
                     handles: bool = True) -> list[Registration]:
        self._metrics.op("select")
        found = self._state.select(prefix, meta)
        # Without handles: a reader of thousands of records that only needs their meta pays
        # for no actor handle (each costs the registry and the reader tens of microseconds).
        return found if handles else [dataclasses.replace(r, handle=None) for r in found]

    async def entries(self, keys: list[str]) -> tuple[int, list[list[Registration]]]:
        """The records of each key, in order (one read for many keys), and the event position
        they are current at."""
        self._metrics.op("lookup", len(keys))
        return self._state.counter, [self._state.registrations(key) for key in keys]

    async def keys_of(self, holder_id: str) -> list[str]:
        return self._state.keys_of(holder_id)

    async def count(self) -> int:
        return self._state.count()

    async def snapshot(self, prefix: str) -> Snapshot:
        return self._state.snapshot(prefix)

    async def events_since(self, since: int, prefix: str, wait_s: float) -> EventBatch:
        """Long poll: events after ``since`` for keys under ``prefix``, waiting up to ``wait_s``
        for one; an empty batch at the deadline."""
        deadline = time.monotonic() + min(wait_s, MAX_WAIT_S)
        while True:
            batch = self._state.events_since(since, prefix)
            remaining = deadline - time.monotonic()
            if batch.events or batch.reset or remaining <= 0:
                return batch
            since = batch.seq
            await self._wait_change(remaining)

    async def wait_for(self, key: str, exclude: str | None, wait_s: float) -> Registration | None:
        """The key's record once it has a holder other than ``exclude`` (``None`` at the
        deadline)."""
        deadline = time.monotonic() + min(wait_s, MAX_WAIT_S)
        while True:
            for reg in self._state.registrations(key):
                if reg.handle is not None and reg.holder_id != exclude:
                    return reg
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            await self._wait_change(remaining)

    # -------------------------------------------------------------------------- subscribers
    async def subscribe(self, handle: Any, method: str, prefix: str) -> None:
        sub_id = subscription_id(actor_id(handle), method, prefix)
        self._subscribers.add(Subscription(sub_id, handle, method, prefix))

    async def unsubscribe(self, holder_id: str, method: str | None) -> int:
        return sum(self._subscribers.remove(s) for s in self._subscribers.ids_of(holder_id, method))

    async def info(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id(),
                "mode": self._state.mode, "counter": self._state.counter,
                "records": self._state.count(), "subscribers": len(self._subscribers),
                "writes": self._writes.writes, "commits": self._writes.groups,
                **self._holders.counts()}

    # ---------------------------------------------------------------------------- internals
    async def _apply(self, planner: Planner) -> Any:
        """The write's result (or refusal) once it is durable and committed."""
        return await self._writes.submit(planner)

    async def _placements(self, holders: dict[str, tuple[str, Any]],
                          ready_s: float) -> dict[str, Any]:
        """holder id -> its node or a rejection, for each distinct holder (concurrently)."""
        found = await asyncio.gather(*(self._placement(key, handle, holder_id, ready_s)
                                       for holder_id, (key, handle) in holders.items()))
        return dict(zip(holders, found, strict=True))

    def _after_commit(self, change: Change) -> None:
        touched: dict[str, Any] = {}
        for event in change.events:
            regs = [event.registration] + ([event.previous] if isinstance(event, Updated)
                                           and event.previous else [])
            for reg in regs:
                if reg.holder_id is not None:
                    touched[reg.holder_id] = reg.handle
        for holder_id, handle in touched.items():
            if self._state.has_holder(holder_id):
                self._holders.watch(holder_id, handle)
            else:
                self._holders.unwatch(holder_id)
        self._changed.set()
        self._changed = asyncio.Event()
        self._subscribers.publish(change.events)
        self._metrics.published(len(change.events))

    def _holder_gone(self, holder_id: str, reason: str) -> None:
        task = asyncio.get_running_loop().create_task(self._remove_holder(holder_id, reason))
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    async def _remove_holder(self, holder_id: str, reason: str) -> None:
        """Remove or clear the dead holder's records, ``GONE_CHUNK`` per write: writes that
        arrive meanwhile are committed between the chunks instead of waiting for all of them
        (a supervisor claiming 10 000 children of a dead host need not wait for 10 000 clears,
        and the records it claims are no longer the dead holder's to clear)."""
        try:
            while self._state.has_holder(holder_id):
                await self._apply(lambda s: s.plan_holder_gone(holder_id, reason, GONE_CHUNK))
        except Exception as exc:  # KV unavailable: try again rather than keep a dead holder
            self._log.error("holder_cleanup_failed", holder=holder_id, error=repr(exc))
            asyncio.get_running_loop().call_later(RETRY_GONE_S, self._holder_gone, holder_id,
                                                  reason)

    async def _placement(self, key: str, handle: Any, holder_id: str,
                         ready_s: float) -> str | Rejection:
        """The holder's node once the GCS reports it alive (a just-created actor may still be
        pending); a rejection if it is dead or not alive within ``ready_s``."""
        deadline = time.monotonic() + ready_s
        while True:
            status = await actor_status(holder_id)
            if status.state == "ALIVE" and status.node_id:
                return status.node_id
            if status.state == "DEAD":
                return Rejection("holder_dead", key, holder=handle)
            if time.monotonic() >= deadline:
                return Rejection("holder_not_ready", key, holder=handle, detail=status.state)
            await asyncio.sleep(PLACEMENT_POLL_S)

    async def _wait_change(self, timeout: float) -> None:
        changed = self._changed
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(changed.wait(), timeout)


def _written(result: Registration | Rejection) -> tuple[int, int] | Rejection:
    """A written item as ``(epoch, entry_id)``: a plain tuple, which Ray's pickler writes
    without a Python-level call per object (a ``Written`` per item cost ~60 ms a 10 000-item
    answer here); the client makes the :class:`Written`."""
    if isinstance(result, Rejection):
        return result
    return result.epoch, result.entry_id


def start_actor(name: str, shard: int, shards: int, mode: KeyMode) -> Any:
    """Get or create the actor of one shard (idempotent)."""
    return RegistryActor.options(**control_plane_options(actor_name(name, shard, shards))).remote(
        name, shard, mode)
