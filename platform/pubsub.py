"""Topic publish/subscribe across the cluster, in the manner of Phoenix.PubSub.

One fan-out actor per node, ``herd/pubsub/<node_id>`` (detached, hard-pinned to its node, no CPU,
restartable, created on demand), holds the subscriptions of the actors living on its node:

* ``PubSub.subscribe(topic, handle, method)`` registers an actor with the fan-out actor of the
  node the actor runs on. The subscriptions of a node are written through to the GCS KV store
  under ``pubsub/node/<node_id>``, so a restarted fan-out actor reloads them, and the key's
  existence tells publishers which nodes have anything to deliver.
* ``PubSub.publish(topic, message)`` sends the message once to the fan-out actor of every such
  live node and waits for each to acknowledge; each pushes it to its local subscribers as
  ``getattr(handle, method).remote(topic, message)``. A subscriber found dead on delivery
  (``ActorDiedError``) is dropped; one whose handler raises is kept (the error is logged).
* ``PubSub.listen(topic)`` gives a driver (or any process) an iterator of messages, long-polling
  a bounded buffer in the fan-out actor of its own node.

Guarantees: a subscription is in effect for every publish that starts after ``subscribe``
returned. Delivery is at most once per (topic, subscriber) per publish. Messages published one
after another by one thread reach every subscriber in publish order, provided the subscriber
executes calls in order (a synchronous actor with ``max_concurrency=1``; Ray runs async and
threaded actors' calls out of order). A subscriber that Ray restarts on another node must
subscribe again. A publish that meets a fan-out actor while it restarts raises ``PublishError``
naming that node (the other nodes got the message); listeners' buffers do not survive a restart.
The fan-out actor holds each subscriber's handle, which keeps the subscriber referenced (as
Ray counts references) until it unsubscribes or dies.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Iterator
from typing import Any

import ray
from ray.actor import ActorHandle
from ray.exceptions import RayError

from herd.platform import kv, rpc
from herd.platform.control_plane import require_ray
from herd.platform.errors import ConfigError, HerdError, HerdTimeoutError
from herd.platform.gcs import GCS_TIMEOUT_S, nodes
from herd.platform.logging import get_logger
from herd.platform.pubsub_node import KV_PREFIX, PubSubNode, node_actor_options

DEFAULT_METHOD = "on_message"
LONG_POLL_S = 2.0
LISTENER_BUFFER = 10_000

log = get_logger("herd.pubsub")


class PublishError(HerdError):
    """A publish reached some nodes' fan-out actors but not all of them."""

    def __init__(self, topic: str, delivered: int, failed: dict[str, str]) -> None:
        self.topic = topic
        self.delivered = delivered
        self.failed = failed
        nodes = "; ".join(f"{node}: {why}" for node, why in sorted(failed.items()))
        super().__init__(f"publish to {topic!r} failed on {len(failed)} node(s) after "
                         f"{delivered} deliveries: {nodes}")


def check_topic(topic: Any) -> str:
    if not isinstance(topic, str) or not topic.strip():
        raise ConfigError("must be a non-empty string", source="pubsub", field="topic",
                          value=topic)
    return topic


def check_subscriber(handle: Any, method: Any) -> None:
    if not isinstance(handle, ActorHandle):
        raise ConfigError("subscribers must be Ray actor handles", source="pubsub",
                          field="handle", value=handle)
    if not isinstance(method, str) or not method or not hasattr(handle, method):
        raise ConfigError("the subscriber's actor has no such method", source="pubsub",
                          field="method", value=method)


class Listener(Iterator[Any]):
    """Messages of one topic for the process that called ``PubSub.listen``.

    Iteration stops once ``timeout`` seconds have passed since ``listen`` (never when None) and
    then closes the listener; ``close()`` (or a ``with`` block) ends it early. A listener nobody
    polls for ``LISTENER_TTL_S`` is discarded by its fan-out actor. ``lost`` counts messages
    dropped because the buffer was full.
    """

    def __init__(self, actor: Any, topic: str, listener_id: str, timeout: float | None,
                 call_timeout: float, buffer_size: int) -> None:
        self.topic = topic
        self.lost = 0
        self._actor = actor
        self._id = listener_id
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._call_timeout = call_timeout
        self._buffer_size = buffer_size
        self._pending: collections.deque[Any] = collections.deque()
        self._closed = False

    def __next__(self) -> Any:
        while not self._pending:
            left = None if self._deadline is None else self._deadline - time.monotonic()
            if self._closed or (left is not None and left <= 0):
                self.close()
                raise StopIteration
            wait = LONG_POLL_S if left is None else min(LONG_POLL_S, left)
            messages, lost = rpc.get(
                self._actor.poll.remote(self._id, self.topic, wait, self._buffer_size),
                timeout=wait + self._call_timeout, what="pubsub listen")
            if lost:
                self.lost += lost
                log.warning("listener_overflow", topic=self.topic, lost=lost)
            self._pending.extend(messages)
        return self._pending.popleft()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            rpc.get(self._actor.close_listener.remote(self._id), timeout=self._call_timeout,
                    what="pubsub close listener")
        except (HerdError, RayError) as exc:  # it expires on its own
            log.warning("listener_close_failed", topic=self.topic, error=repr(exc))

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PubSub:
    """Client of the per-node fan-out actors. Cheap to create; thread-safe.

    ``timeout`` bounds every remote call it makes (default ``HERD_CALL_TIMEOUT_S``).
    """

    def __init__(self, timeout: float | None = None) -> None:
        timeout = rpc.DEFAULT_TIMEOUT_S if timeout is None else timeout
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ConfigError("must be a positive number of seconds", source="pubsub",
                              field="timeout", value=timeout)
        require_ray()
        self.timeout = float(timeout)
        self._actors: dict[str, Any] = {}
        self._lock = threading.Lock()

    def subscribe(self, topic: str, handle: Any, method: str = DEFAULT_METHOD) -> bool:
        """Deliver messages published to ``topic`` as ``handle.method.remote(topic, message)``.
        Returns False when the actor was already subscribed (its method is replaced)."""
        check_topic(topic)
        check_subscriber(handle, method)
        node_id = self._node_of(handle)
        return rpc.get(self._node_actor(node_id).subscribe.remote(topic, handle, method),
                       timeout=self.timeout, what="pubsub subscribe")

    def unsubscribe(self, topic: str, handle: Any) -> bool:
        """Stop deliveries of ``topic`` to ``handle``; False when it was not subscribed."""
        check_topic(topic)
        if not isinstance(handle, ActorHandle):
            raise ConfigError("subscribers must be Ray actor handles", source="pubsub",
                              field="handle", value=handle)
        aid = handle._actor_id.hex()
        refs = [self._node_actor(node).unsubscribe.remote(topic, aid)
                for node in self._registered_nodes()]
        return any(rpc.get(refs, timeout=self.timeout, what="pubsub unsubscribe"))

    def publish(self, topic: str, message: Any) -> int:
        """Send ``message`` to every subscriber and listener of ``topic``; returns how many it
        was pushed to (0 without subscribers). Raises ``PublishError`` naming the nodes whose
        fan-out actor failed or did not acknowledge within the timeout."""
        check_topic(topic)
        refs = {node: self._node_actor(node).deliver.remote(topic, message)
                for node in self._registered_nodes()}
        if not refs:
            return 0
        ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=self.timeout)
        answered = set(ready)
        delivered, failed = 0, {}
        for node, ref in refs.items():
            if ref not in answered:
                failed[node] = f"no answer within {self.timeout:.1f} s"
                continue
            try:
                delivered += rpc.get(ref, timeout=self.timeout, what="pubsub deliver")
            except RayError as exc:
                self._forget(node)
                failed[node] = repr(exc)
        if failed:
            raise PublishError(topic, delivered, failed)
        return delivered

    def listen(self, topic: str, timeout: float | None = None,
               buffer_size: int = LISTENER_BUFFER) -> Listener:
        """An iterator of the messages published to ``topic`` from now on (see ``Listener``)."""
        check_topic(topic)
        if timeout is not None and (isinstance(timeout, bool) or timeout <= 0):
            raise ConfigError("must be positive or None", source="pubsub", field="timeout",
                              value=timeout)
        if isinstance(buffer_size, bool) or not isinstance(buffer_size, int) or buffer_size < 1:
            raise ConfigError("must be an integer >= 1", source="pubsub", field="buffer_size",
                              value=buffer_size)
        actor = self._node_actor(ray.get_runtime_context().get_node_id())
        listener_id = rpc.get(actor.open_listener.remote(topic, buffer_size),
                              timeout=self.timeout, what="pubsub listen")
        return Listener(actor, topic, listener_id, timeout, self.timeout, buffer_size)

    def subscribers(self, topic: str) -> list[str]:
        """Hex actor ids of the subscribers of ``topic`` on all live nodes."""
        check_topic(topic)
        refs = [self._node_actor(node).stats.remote() for node in self._registered_nodes()]
        stats = rpc.get(refs, timeout=self.timeout, what="pubsub stats")
        return sorted(aid for s in stats for aid in s["subscribers"].get(topic, []))

    # ---------------------------------------------------------------- internals
    def _node_actor(self, node_id: str) -> Any:
        with self._lock:
            actor = self._actors.get(node_id)
            if actor is None:
                actor = PubSubNode.options(**node_actor_options(node_id)).remote(node_id)
                self._actors[node_id] = actor
            return actor

    def _forget(self, node_id: str) -> None:
        with self._lock:
            self._actors.pop(node_id, None)

    def _registered_nodes(self) -> list[str]:
        """Live nodes whose fan-out actor has subscribers or listeners. Registrations of nodes
        the GCS declared dead are removed (their subscribers died with them)."""
        registered = {key[len(KV_PREFIX):] for key in kv.keys(KV_PREFIX)}
        alive = {node.node_id for node in nodes() if node.alive}
        for node_id in registered - alive:
            kv.delete(f"{KV_PREFIX}{node_id}")
            self._forget(node_id)
            log.info("pubsub_node_gone", node_id=node_id)
        return sorted(registered & alive)

    def _node_of(self, handle: Any) -> str:
        """The node ``handle``'s actor runs on, waiting while Ray places or restarts it."""
        context = ray.get_runtime_context()
        aid = handle._actor_id.hex()
        if context.get_actor_id() == aid:
            return context.get_node_id()
        local = self._node_actor(context.get_node_id())
        state, node_id = rpc.get(local.locate.remote(aid, self.timeout),
                                 timeout=self.timeout + GCS_TIMEOUT_S, what="pubsub locate")
        if state == "DEAD":
            raise ConfigError("the subscriber's actor is dead", source="pubsub", field="handle",
                              value=aid)
        if node_id is None:
            raise HerdTimeoutError(f"subscriber actor {aid} still {state} after "
                                   f"{self.timeout:.1f} s")
        return node_id
