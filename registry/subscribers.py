"""Pushing a shard's events to subscribed actors (``Registry.subscribe(handle, method)``).

Each subscriber has its own queue and pump task: events are delivered one call at a time, in
order, and a slow subscriber only delays itself. A subscriber whose call fails with
``ActorDiedError`` is dropped (and forgotten in the KV store); a call that raises or takes longer
than ``PUSH_TIMEOUT_S`` is logged and delivery continues. Subscriptions survive a registry
restart (they are persisted), but events not yet pushed when the registry actor crashes are
lost: delivery to actors is at most once. Drivers that need every change use
``Registry.watch``, which resynchronises.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterable
from typing import Any

from ray.exceptions import ActorDiedError

from herd.platform.logging import get_logger
from herd.registry.models import actor_id
from herd.registry.records import Event
from herd.registry.store import ShardStore, Subscription

PUSH_TIMEOUT_S = 30.0


def subscription_id(holder_id: str, method: str, prefix: str) -> str:
    return hashlib.sha256(f"{holder_id}\0{method}\0{prefix}".encode()).hexdigest()[:32]


class Subscribers:
    def __init__(self, store: ShardStore, **log_context: Any) -> None:
        self._store = store
        self._queues: dict[str, asyncio.Queue[Event]] = {}
        self._subs: dict[str, Subscription] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._log = get_logger("herd.registry.subscribers", **log_context)

    def load(self) -> None:
        for sub in self._store.subscriptions():
            self._start(sub)

    def add(self, sub: Subscription) -> None:
        if sub.sub_id in self._subs:
            return
        self._store.put_subscription(sub)
        self._start(sub)

    def remove(self, sub_id: str) -> bool:
        if sub_id not in self._subs:
            return False
        self._store.delete_subscription(sub_id)
        del self._subs[sub_id]
        del self._queues[sub_id]
        task = self._tasks.pop(sub_id)
        if task is not asyncio.current_task():
            task.cancel()
        return True

    def ids_of(self, holder_id: str, method: str | None) -> list[str]:
        return [s.sub_id for s in self._subs.values()
                if actor_id(s.handle) == holder_id and method in (None, s.method)]

    def publish(self, events: Iterable[Event]) -> None:
        for sub_id, sub in self._subs.items():
            for event in events:
                if event.key.startswith(sub.prefix):
                    self._queues[sub_id].put_nowait(event)

    def __len__(self) -> int:
        return len(self._subs)

    def _start(self, sub: Subscription) -> None:
        self._subs[sub.sub_id] = sub
        self._queues[sub.sub_id] = asyncio.Queue()
        self._tasks[sub.sub_id] = asyncio.get_running_loop().create_task(self._pump(sub))

    async def _pump(self, sub: Subscription) -> None:
        queue = self._queues[sub.sub_id]
        method = getattr(sub.handle, sub.method)
        while True:
            event = await queue.get()
            try:
                await asyncio.wait_for(method.remote(event), PUSH_TIMEOUT_S)
            except ActorDiedError:
                self._log.info("subscriber_dropped", subscriber=sub.sub_id, method=sub.method)
                self.remove(sub.sub_id)
                return
            except Exception as exc:  # the subscriber's method failed or is slow: keep going
                self._log.warning("push_failed", subscriber=sub.sub_id, method=sub.method,
                                  seq=event.seq, error=repr(exc))
