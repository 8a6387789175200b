"""Cluster membership: ``NodeUp`` / ``NodeDown`` events from the GCS node table.

Ray has no push API for node events, so one control-plane actor (``herd/membership``, detached,
pinned to the head node, restartable) reads the GCS node table asynchronously
(``herd.platform.gcs.anodes``) every ~100 ms, diffs it against its last view and delivers events:

* to actor subscribers, pushed as ``getattr(handle, method).remote(event)``; a subscriber whose
  actor is dead is dropped;
* to drivers, through ``Membership.watch()``, an iterator positioned when it is created that
  long-polls the actor's event log (like ``Registry.watch``).

``Membership.get()`` starts the actor when it is not running. ``Membership.aio`` /
``AsyncMembership`` is the asyncio face for async actors (same operations, awaited).

Failure detection itself is Ray's (GCS health checks, see ``HealthCheckConfig``); the poll adds at
most one interval. The view, the event sequence and the subscribers are written through to the
GCS KV store, so a restarted actor reloads them and reports the changes it missed as events.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import ray
from ray import cloudpickle

from herd.platform import kv, rpc
from herd.platform.control_plane import control_plane_options, get_named, require_ray
from herd.platform.errors import ConfigError, HerdTimeoutError
from herd.platform.gcs import NodeInfo, anodes
from herd.platform.logging import get_logger
from herd.platform.membership_metrics import MembershipMetrics

ACTOR_NAME = "herd/membership"
KV_STATE = "membership/state"
DEFAULT_POLL_S = 0.1
EVENT_LOG_SIZE = 10_000
LONG_POLL_S = 2.0
ITER_POLL_S = 1.0

__all__ = [
    "AsyncMembership",
    "Membership",
    "MembershipActor",
    "MembershipEvent",
    "MembershipWatch",
    "NodeDown",
    "NodeInfo",
    "NodeUp",
    "diff_views",
]


@dataclass(frozen=True)
class _NodeEvent:
    seq: int
    node: NodeInfo
    at: float  # wall-clock time the membership actor saw the change

    @property
    def node_id(self) -> str:
        return self.node.node_id

    @property
    def region(self) -> str | None:
        return self.node.region


@dataclass(frozen=True)
class NodeUp(_NodeEvent):
    """A node joined (or was alive when the subscriber subscribed with ``replay``)."""


@dataclass(frozen=True)
class NodeDown(_NodeEvent):
    """The GCS declared a node dead (crash, hang past the health checks, or a graceful stop)."""


MembershipEvent = NodeUp | NodeDown


def diff_views(old: dict[str, NodeInfo], new: dict[str, NodeInfo], first_seq: int,
               at: float) -> list[MembershipEvent]:
    """Events that turn view ``old`` into view ``new`` (both: node id -> info, alive only)."""
    events: list[MembershipEvent] = []
    seq = first_seq
    for node_id in sorted(new.keys() - old.keys()):
        events.append(NodeUp(seq, new[node_id], at))
        seq += 1
    for node_id in sorted(old.keys() - new.keys()):
        events.append(NodeDown(seq, old[node_id].as_dead(), at))
        seq += 1
    return events


@ray.remote
class MembershipActor:
    """The control-plane actor behind ``Membership``. Async: every method runs on one loop."""

    def __init__(self, poll_interval_s: float = DEFAULT_POLL_S) -> None:
        self.poll_interval_s = poll_interval_s
        state = kv.get_object(KV_STATE, default=None) or {}
        self.view: dict[str, NodeInfo] = state.get("view", {})
        self.seq: int = state.get("seq", 0)
        self.subscribers: dict[bytes, tuple[Any, str]] = {
            key: (cloudpickle.loads(blob), method)
            for key, (blob, method) in state.get("subscribers", {}).items()}
        self.log: collections.deque[MembershipEvent] = collections.deque(maxlen=EVENT_LOG_SIZE)
        self.changed: asyncio.Condition | None = None
        self.loop_task: asyncio.Task[None] | None = None
        self.scans = 0
        self.restarted = bool(state)
        self.persisting = asyncio.Lock()
        self.logger = get_logger("herd.membership")
        self.metrics = MembershipMetrics()

    async def _ensure_loop(self) -> None:
        if self.loop_task is None:
            self.changed = asyncio.Condition()
            self.loop_task = asyncio.get_running_loop().create_task(self._poll_forever())
            await self._scan()

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval_s)
            try:
                await self._scan()
            except Exception as exc:  # a failed GCS read must not end the loop
                self.logger.warning("membership_scan_failed", error=repr(exc))

    async def _scan(self) -> None:
        began = time.monotonic()
        entries = await anodes()
        now = time.time()
        current = {info.node_id: info for info in entries if info.alive}
        self.scans += 1
        events = diff_views(self.view, current, self.seq + 1, now)
        self.metrics.scanned(entries, events, time.monotonic() - began)
        if not events:
            return
        self.view = current
        self.seq = events[-1].seq
        self.log.extend(events)
        await self._persist()
        for event in events:
            self.logger.info("node_up" if isinstance(event, NodeUp) else "node_down",
                     node_id=event.node_id, region=event.region, seq=event.seq)
            self._push(event)
        assert self.changed is not None
        async with self.changed:
            self.changed.notify_all()

    async def _persist(self) -> None:
        """Write the state through to the KV store; writes are serialised and each writes the
        state as of when it starts, so the last one written is the latest."""
        async with self.persisting:
            await kv.aput_object(KV_STATE, {
                "view": self.view, "seq": self.seq,
                "subscribers": {key: (cloudpickle.dumps(handle), method)
                                for key, (handle, method) in self.subscribers.items()}})

    def _push(self, event: MembershipEvent, only: bytes | None = None) -> None:
        for key, (handle, method) in list(self.subscribers.items()):
            if only is not None and key != only:
                continue
            ref = getattr(handle, method).remote(event)
            asyncio.get_running_loop().create_task(self._watch_delivery(key, ref))

    async def _watch_delivery(self, key: bytes, ref: ray.ObjectRef) -> None:
        try:
            await ref
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnschedulableError):
            if self.subscribers.pop(key, None) is not None:
                self.logger.info("subscriber_dropped", reason="actor dead")
                await self._persist()
        except Exception as exc:  # the subscriber's handler raised: its problem, keep it
            self.logger.warning("subscriber_handler_failed", error=repr(exc))

    async def nodes(self) -> list[NodeInfo]:
        await self._ensure_loop()
        return sorted(self.view.values(), key=lambda n: n.node_id)

    async def subscribe(self, handle: Any, method: str, replay: bool = True) -> int:
        """Push future events to ``handle.method``; with ``replay`` first a ``NodeUp`` for
        every live node. Returns the current sequence number."""
        await self._ensure_loop()
        key = handle._actor_id.binary()
        self.subscribers[key] = (handle, method)
        await self._persist()
        if replay:
            for node in sorted(self.view.values(), key=lambda n: n.node_id):
                getattr(handle, method).remote(NodeUp(self.seq, node, time.time()))
        return self.seq

    async def unsubscribe(self, handle: Any) -> bool:
        removed = self.subscribers.pop(handle._actor_id.binary(), None) is not None
        if removed:
            await self._persist()
        return removed

    async def events_since(self, seq: int, timeout_s: float) -> tuple[int, list[MembershipEvent]]:
        """Events with a sequence number above ``seq``, waiting up to ``timeout_s`` for one."""
        await self._ensure_loop()
        assert self.changed is not None
        if self.seq <= seq:
            async with self.changed:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(
                        self.changed.wait_for(lambda: self.seq > seq), timeout_s)
        return self.seq, [event for event in self.log if event.seq > seq]

    async def stats(self) -> dict[str, Any]:
        await self._ensure_loop()
        return {"seq": self.seq, "scans": self.scans, "subscribers": len(self.subscribers),
                "nodes": len(self.view), "poll_interval_s": self.poll_interval_s,
                "restarted": self.restarted}


def _check_poll(poll_interval_s: float) -> None:
    if poll_interval_s <= 0:
        raise ConfigError("must be positive", field="poll_interval_s", value=poll_interval_s)


def _check_subscriber(handle: Any, method: str) -> None:
    if not hasattr(handle, method):
        raise ConfigError("subscriber has no such method", field="method", value=method)


def _create_actor(poll_interval_s: float) -> Any:
    """Get or create the membership actor (blocking: a named-actor call to the GCS)."""
    require_ray()
    return MembershipActor.options(**control_plane_options(ACTOR_NAME)).remote(poll_interval_s)


class Membership:
    """Client of the membership actor. ``start()`` is get-or-create; ``get()`` also starts the
    actor (with the default poll interval) when it is not running."""

    def __init__(self, actor: Any) -> None:
        self.actor = actor

    @classmethod
    def start(cls, poll_interval_s: float = DEFAULT_POLL_S, timeout: float | None = None
              ) -> Membership:
        _check_poll(poll_interval_s)
        actor = _create_actor(poll_interval_s)
        rpc.get(actor.stats.remote(), timeout=timeout, what="membership start")
        return cls(actor)

    @classmethod
    def get(cls, timeout: float | None = None) -> Membership:
        """The running membership actor's client, starting the actor if needed."""
        actor = get_named(ACTOR_NAME)
        return cls(actor) if actor is not None else cls.start(timeout=timeout)

    @property
    def aio(self) -> AsyncMembership:
        """The asyncio face of this client."""
        return AsyncMembership(self.actor)

    def nodes(self, timeout: float | None = None) -> list[NodeInfo]:
        return rpc.get(self.actor.nodes.remote(), timeout=timeout, what="membership nodes")

    def subscribe(self, handle: Any, method: str = "on_membership_event", replay: bool = True,
                  timeout: float | None = None) -> int:
        _check_subscriber(handle, method)
        return rpc.get(self.actor.subscribe.remote(handle, method, replay), timeout=timeout,
                       what="membership subscribe")

    def unsubscribe(self, handle: Any, timeout: float | None = None) -> bool:
        return rpc.get(self.actor.unsubscribe.remote(handle), timeout=timeout,
                       what="membership unsubscribe")

    def stats(self, timeout: float | None = None) -> dict[str, Any]:
        return rpc.get(self.actor.stats.remote(), timeout=timeout, what="membership stats")

    def watch(self, since: int | None = None, timeout: float | None = None) -> MembershipWatch:
        """A ``MembershipWatch`` of the events after sequence number ``since``; by default
        after the current one, read now: an event that happens after ``watch()`` returns is
        seen, even if iteration starts later."""
        if since is None:
            since = self.stats(timeout=timeout)["seq"]
        return MembershipWatch(self.actor, since)


class MembershipWatch:
    """Membership events after a fixed position, for drivers (like ``Registry.watch``)::

        with Membership.get().watch() as watch:
            event = watch.next(timeout=5)        # or: for event in watch: ...  (until close())
    """

    def __init__(self, actor: Any, since: int) -> None:
        self.since = since
        self._actor = actor
        self._buffer: collections.deque[MembershipEvent] = collections.deque()
        self._closed = False

    def poll(self, timeout: float) -> list[MembershipEvent]:
        """The events that arrived, waiting up to ``timeout`` seconds for at least one."""
        deadline = time.monotonic() + timeout
        while not self._buffer and not self._closed:
            wait = min(LONG_POLL_S, max(0.0, deadline - time.monotonic()))
            self.since, batch = rpc.get(self._actor.events_since.remote(self.since, wait),
                                        timeout=wait + rpc.DEFAULT_TIMEOUT_S,
                                        what="membership events")
            self._buffer.extend(batch)
            if time.monotonic() >= deadline:
                break
        events = list(self._buffer)
        self._buffer.clear()
        return events

    def next(self, timeout: float) -> MembershipEvent:
        """The next event; ``HerdTimeoutError`` if none arrives within ``timeout`` seconds."""
        if not self._buffer:
            self._buffer.extend(self.poll(timeout))
        if not self._buffer:
            raise HerdTimeoutError(f"no membership event within {timeout} s")
        return self._buffer.popleft()

    def __iter__(self) -> Iterator[MembershipEvent]:
        """Every event until ``close()`` (an endless stream: break out or close)."""
        while not self._closed:
            yield from self.poll(ITER_POLL_S)

    def close(self) -> None:
        self._closed = True

    def __enter__(self) -> MembershipWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncMembership:
    """The asyncio face of ``Membership`` for async actors: the same operations, awaited."""

    def __init__(self, actor: Any) -> None:
        self.actor = actor

    @classmethod
    async def start(cls, poll_interval_s: float = DEFAULT_POLL_S,
                    timeout: float | None = None) -> AsyncMembership:
        _check_poll(poll_interval_s)
        actor = await rpc.blocking(_create_actor, poll_interval_s)
        await rpc.aget(actor.stats.remote(), timeout=timeout, what="membership start")
        return cls(actor)

    @classmethod
    async def get(cls, timeout: float | None = None) -> AsyncMembership:
        actor = await rpc.blocking(get_named, ACTOR_NAME)
        return cls(actor) if actor is not None else await cls.start(timeout=timeout)

    async def nodes(self, timeout: float | None = None) -> list[NodeInfo]:
        return await rpc.aget(self.actor.nodes.remote(), timeout=timeout,
                              what="membership nodes")

    async def subscribe(self, handle: Any, method: str = "on_membership_event",
                        replay: bool = True, timeout: float | None = None) -> int:
        _check_subscriber(handle, method)
        return await rpc.aget(self.actor.subscribe.remote(handle, method, replay),
                              timeout=timeout, what="membership subscribe")

    async def unsubscribe(self, handle: Any, timeout: float | None = None) -> bool:
        return await rpc.aget(self.actor.unsubscribe.remote(handle), timeout=timeout,
                              what="membership unsubscribe")

    async def stats(self, timeout: float | None = None) -> dict[str, Any]:
        return await rpc.aget(self.actor.stats.remote(), timeout=timeout,
                              what="membership stats")
