"""The fan-out actor of one node for ``herd.platform.pubsub`` (see there for the guarantees).

``herd/pubsub/<node_id>``: detached, hard-pinned to its node, no CPU, restartable, created on
demand. Its subscriptions are written through to the GCS KV store under ``pubsub/node/<node_id>``;
the key's existence tells publishers that the node has something to deliver.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import ray
from ray import cloudpickle
from ray.exceptions import ActorDiedError

from herd.platform import kv
from herd.platform.control_plane import control_plane_options
from herd.platform.gcs import actor_status
from herd.platform.logging import get_logger

ACTOR_PREFIX = "herd/pubsub/"
KV_PREFIX = "pubsub/node/"
LISTENER_TTL_S = 60.0
DELIVERY_WATCH_S = 300.0
LOCATE_POLL_S = 0.1


def node_actor_options(node_id: str) -> dict[str, Any]:
    """``.options(...)`` of the fan-out actor of ``node_id`` (get-or-create, detached,
    restartable, hard-pinned to the node)."""
    return control_plane_options(f"{ACTOR_PREFIX}{node_id}", node_id=node_id)


@dataclass
class _Listener:
    topic: str
    buffer: collections.deque[Any]
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    last_poll: float = field(default_factory=time.monotonic)
    polling: int = 0
    overflowed: int = 0


@ray.remote
class PubSubNode:
    """The fan-out actor of one node. Async: every method runs on one event loop, and none
    awaits between reading its state and changing it."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.key = f"{KV_PREFIX}{node_id}"
        saved = kv.get_object(self.key, default=None) or {}
        self.subscribers: dict[str, dict[str, tuple[Any, str]]] = {
            topic: {aid: (cloudpickle.loads(blob), method)
                    for aid, (blob, method) in subs.items()}
            for topic, subs in saved.get("subscribers", {}).items()}
        self.listeners: dict[str, _Listener] = {}
        self.watches: set[asyncio.Task[None]] = set()
        self.pushed = 0
        self.dropped = 0
        self.log = get_logger("herd.pubsub", node_id=node_id)
        self.reloaded = bool(saved)
        if saved:
            self.log.info("pubsub_node_reloaded", topics=len(self.subscribers))
            if not self.subscribers:  # registered for listeners only, whose buffers are gone
                self._persist()

    # ---------------------------------------------------------------- subscriptions
    async def subscribe(self, topic: str, handle: Any, method: str) -> bool:
        """Register ``handle.method`` for ``topic``; True when it was not subscribed before."""
        aid = handle._actor_id.hex()
        subs = self.subscribers.setdefault(topic, {})
        new = aid not in subs
        subs[aid] = (handle, method)
        self._persist()
        return new

    async def unsubscribe(self, topic: str, actor_id: str) -> bool:
        subs = self.subscribers.get(topic, {})
        removed = subs.pop(actor_id, None) is not None
        if not subs:
            self.subscribers.pop(topic, None)
        if removed:
            self._persist()
        return removed

    async def locate(self, actor_id: str, timeout_s: float) -> tuple[str, str | None]:
        """Where an actor runs: waits up to ``timeout_s`` while it is being placed or restarted.
        Returns ``(state, node_id)``, the node only when ALIVE."""
        deadline = time.monotonic() + timeout_s
        while True:
            status = await actor_status(actor_id)
            state, node = status.state, status.node_id
            if state in ("ALIVE", "DEAD") or time.monotonic() >= deadline:
                return state, node
            await asyncio.sleep(LOCATE_POLL_S)

    def _drop(self, actor_id: str, reason: str) -> None:
        removed = [t for t, subs in self.subscribers.items() if subs.pop(actor_id, None)]
        if not removed:
            return
        self.subscribers = {t: subs for t, subs in self.subscribers.items() if subs}
        self.dropped += 1
        self.log.info("subscriber_dropped", actor_id=actor_id, topics=removed, reason=reason)
        self._persist()

    def _persist(self) -> None:
        if not self.subscribers and not self.listeners:
            kv.delete(self.key)
            return
        kv.put_object(self.key, {"subscribers": {
            topic: {aid: (cloudpickle.dumps(handle), method)
                    for aid, (handle, method) in subs.items()}
            for topic, subs in self.subscribers.items()}})

    # ---------------------------------------------------------------- delivery
    async def deliver(self, topic: str, message: Any) -> int:
        """Push ``message`` to every local subscriber and listener of ``topic``; returns how
        many it was pushed to. Pushes are submitted before this returns, in call order."""
        self._expire_listeners()
        count = 0
        for aid, (handle, method) in list(self.subscribers.get(topic, {}).items()):
            self._watch(aid, getattr(handle, method).remote(topic, message))
            count += 1
        for listener in self.listeners.values():
            if listener.topic == topic:
                if len(listener.buffer) == listener.buffer.maxlen:
                    listener.overflowed += 1
                listener.buffer.append(message)
                listener.wake.set()
                count += 1
        self.pushed += count
        return count

    def _watch(self, actor_id: str, ref: ray.ObjectRef) -> None:
        task = asyncio.get_running_loop().create_task(self._await_delivery(actor_id, ref))
        self.watches.add(task)
        task.add_done_callback(self.watches.discard)

    async def _await_delivery(self, actor_id: str, ref: ray.ObjectRef) -> None:
        try:
            await asyncio.wait_for(asyncio.ensure_future(ref), DELIVERY_WATCH_S)
        except ActorDiedError:
            self._drop(actor_id, "actor dead")
        except asyncio.TimeoutError:
            self.log.warning("subscriber_slow", actor_id=actor_id, waited_s=DELIVERY_WATCH_S)
        except Exception as exc:  # the handler raised: the subscriber's problem, keep it
            self.log.warning("subscriber_handler_failed", actor_id=actor_id, error=repr(exc))

    # ---------------------------------------------------------------- listeners
    async def open_listener(self, topic: str, buffer_size: int) -> str:
        listener_id = uuid.uuid4().hex
        self._open(listener_id, topic, buffer_size)
        return listener_id

    def _open(self, listener_id: str, topic: str, buffer_size: int) -> _Listener:
        listener = _Listener(topic, collections.deque(maxlen=buffer_size))
        self.listeners[listener_id] = listener
        if len(self.listeners) == 1:
            self._persist()
        return listener

    async def poll(self, listener_id: str, topic: str, timeout_s: float, buffer_size: int
                   ) -> tuple[list[Any], int]:
        """Messages buffered for the listener, waiting up to ``timeout_s`` for one; and how
        many were lost to a full buffer since the last poll. Re-opens a listener this actor
        does not know (it restarted, or the listener expired)."""
        listener = self.listeners.get(listener_id)
        if listener is None:
            self.log.info("listener_reopened", listener_id=listener_id, topic=topic)
            listener = self._open(listener_id, topic, buffer_size)
        listener.polling += 1
        try:
            if not listener.buffer:
                listener.wake.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(listener.wake.wait(), timeout_s)
        finally:
            listener.polling -= 1
            listener.last_poll = time.monotonic()
        messages, lost = list(listener.buffer), listener.overflowed
        listener.buffer.clear()
        listener.overflowed = 0
        return messages, lost

    async def close_listener(self, listener_id: str) -> bool:
        closed = self.listeners.pop(listener_id, None) is not None
        if closed and not self.listeners:
            self._persist()
        return closed

    def _expire_listeners(self) -> None:
        cutoff = time.monotonic() - LISTENER_TTL_S
        expired = [lid for lid, listener in self.listeners.items()
                   if not listener.polling and listener.last_poll < cutoff]
        for lid in expired:
            del self.listeners[lid]
            self.log.info("listener_expired", listener_id=lid)
        if expired and not self.listeners:
            self._persist()

    # ---------------------------------------------------------------- introspection
    async def stats(self) -> dict[str, Any]:
        return {"node_id": self.node_id, "reloaded": self.reloaded, "pushed": self.pushed,
                "dropped": self.dropped,
                "listeners": len(self.listeners),
                "subscribers": {topic: sorted(subs) for topic, subs in self.subscribers.items()}}
