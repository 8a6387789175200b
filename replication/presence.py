"""Presence: who is here, with metadata, on every node (Phoenix.Tracker / Phoenix.Presence).

    presence = Presence.start("chat")
    presence.track(handle, "room:1", "alice", {"status": "online"})
    presence.list("room:1")                      # {"alice": [{"status": "online"}]}
    presence.subscribe("room:1", listener)       # listener.on_presence_diff(topic, diff)

``start`` runs one tracker per node (``herd.replication.presence_tracker``; trackers start on
nodes that join later by themselves). A process is tracked by the tracker of the node it runs
on; entries of a process leave once Ray reports it dead, entries of a node once the GCS declares
it dead, and trackers converge after a partition heals (``presence_state``'s delta CRDT).
Diffs (net joins and leaves per heartbeat) go out over ``herd.platform.pubsub`` on topic
``presence/<name>/<topic>``; each subscriber gets each diff once, from its own node's tracker.
"""

from __future__ import annotations

import pickle
from typing import Any

import ray
from ray import cloudpickle
from ray.actor import ActorHandle

from herd.platform import rpc
from herd.platform.control_plane import require_ray
from herd.platform.errors import ConfigError
from herd.platform.gcs import nodes
from herd.platform.pubsub import Listener, PubSub
from herd.platform.waiting import deadline_in, time_left
from herd.registry import Registry
from herd.replication.federation.config import Federation
from herd.replication.presence_federation import start_bridge
from herd.replication.presence_state import NotTracked, PresenceError
from herd.replication.presence_tracker import diff_topic, tracker_handle

DEFAULT_HEARTBEAT_MS = 100
DIFF_METHOD = "on_presence_diff"

__all__ = ["NotTracked", "Presence", "PresenceError"]


def _check_text(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError("must be a non-empty string", source="presence", field=field,
                          value=value)
    return value


def _check_meta(meta: Any) -> Any:
    try:
        cloudpickle.dumps(meta)
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        raise ConfigError(f"cannot be pickled ({exc})", source="presence", field="meta",
                          value=repr(meta)) from None
    return meta


class Presence:
    """Client of the trackers of presence ``name``; cheap to create."""

    def __init__(self, name: str, heartbeat_ms: int = DEFAULT_HEARTBEAT_MS,
                 timeout: float | None = None) -> None:
        require_ray()
        self.name = _check_text(name, "name")
        if isinstance(heartbeat_ms, bool) or not isinstance(heartbeat_ms, int) \
                or heartbeat_ms < 1:
            raise ConfigError("must be an integer >= 1", source="presence",
                              field="heartbeat_ms", value=heartbeat_ms)
        self.heartbeat_ms = heartbeat_ms
        self.timeout = rpc.DEFAULT_TIMEOUT_S if timeout is None else timeout
        self._trackers: dict[str, Any] = {}
        self._pubsub: PubSub | None = None

    @classmethod
    def start(cls, name: str, heartbeat_ms: int = DEFAULT_HEARTBEAT_MS,
              timeout: float | None = None, federation: Federation | None = None) -> Presence:
        """Start (or join) the trackers of ``name`` on every live node and wait until each
        runs. With ``federation`` (this cluster's, as its gateway was started with), also the
        bridge that shares the entries with the other regions' clusters of the same presence
        (``herd.replication.presence_federation``; start it in each cluster)."""
        presence = cls(name, heartbeat_ms, timeout)
        deadline = deadline_in(presence.timeout)
        refs = [presence.tracker(n.node_id).ready.remote() for n in nodes() if n.alive]
        rpc.get(refs, timeout=time_left(deadline), what=f"presence {name} start")
        if federation is not None:
            if not isinstance(federation, Federation):
                raise ConfigError("must be a herd.replication.federation.Federation",
                                  source="presence", field="federation", value=federation)
            start_bridge(presence.name, federation, heartbeat_ms, timeout=time_left(deadline))
        return presence

    def tracker(self, node_id: str) -> Any:
        """The tracker of ``node_id`` (get-or-create)."""
        handle = self._trackers.get(node_id)
        if handle is None:
            handle = self._trackers[node_id] = tracker_handle(self.name, node_id,
                                                              self.heartbeat_ms)
        return handle

    def _local(self) -> Any:
        return self.tracker(ray.get_runtime_context().get_node_id())

    def _pid(self, handle_or_name: Any) -> str:
        if isinstance(handle_or_name, str):
            _check_text(handle_or_name, "handle_or_name")
            handle = Registry.get().lookup(handle_or_name, timeout=self.timeout)
            if handle is None:
                raise ConfigError("no process is registered under this name",
                                  source="presence", field="handle_or_name",
                                  value=handle_or_name)
            handle_or_name = handle
        if not isinstance(handle_or_name, ActorHandle):
            raise ConfigError("must be an actor handle or a registered name",
                              source="presence", field="handle_or_name", value=handle_or_name)
        return str(handle_or_name._actor_id.hex())

    def track(self, handle_or_name: Any, topic: str, key: str, meta: Any = None) -> str:
        """Track the process under ``key`` in ``topic`` with ``meta`` (tracking it again under
        the same key replaces the meta); returns the id of the node whose tracker holds it."""
        return self._track(handle_or_name, topic, key, meta, False)

    def _track(self, handle_or_name: Any, topic: str, key: str, meta: Any, update: bool) -> str:
        pid = self._pid(handle_or_name)
        args = (_check_text(topic, "topic"), _check_text(key, "key"), _check_meta(meta))
        context = ray.get_runtime_context()
        here = context.get_node_id() if context.get_actor_id() == pid else None
        return rpc.get(self._local().track.remote(pid, *args, update, here),
                       timeout=self.timeout, what="presence update" if update else "presence track")

    def update(self, handle_or_name: Any, topic: str, key: str, meta: Any) -> str:
        """Replace the meta of a tracked process; ``NotTracked`` if it is not tracked."""
        return self._track(handle_or_name, topic, key, meta, True)

    def untrack(self, handle_or_name: Any, topic: str | None = None,
                key: str | None = None) -> int:
        """Untrack the process (from ``topic``/``key`` or everywhere); how many entries left."""
        pid = self._pid(handle_or_name)
        return rpc.get(self._local().untrack.remote(pid, topic, key), timeout=self.timeout,
                       what="presence untrack")

    def list(self, topic: str, node_id: str | None = None) -> dict[str, list[Any]]:
        """``key -> metas`` (one per tracked process) of ``topic`` as the tracker of
        ``node_id`` (by default this process's node) sees it."""
        tracker = self._local() if node_id is None else self.tracker(node_id)
        return rpc.get(tracker.list.remote(_check_text(topic, "topic")), timeout=self.timeout,
                       what="presence list")

    def digests(self, timeout: float | None = None) -> dict[str, list[Any]]:
        """Every live node's tracker's entries (equal values mean converged views)."""
        alive = [n.node_id for n in nodes() if n.alive]
        refs = [self.tracker(node_id).digest.remote() for node_id in alive]
        got = rpc.get(refs, timeout=timeout or self.timeout, what="presence digests")
        return dict(zip(alive, got, strict=True))

    def subscribe(self, topic: str, handle: Any, method: str = DIFF_METHOD) -> bool:
        """Push every diff of ``topic`` as ``handle.method.remote(pubsub_topic, diff)``, where
        diff is ``{"joins": {key: [meta]}, "leaves": {key: [meta]}}``."""
        return self._pubsub_client().subscribe(diff_topic(self.name, _check_text(topic, "topic")),
                                               handle, method)

    def unsubscribe(self, topic: str, handle: Any) -> bool:
        return self._pubsub_client().unsubscribe(diff_topic(self.name, topic), handle)

    def listen(self, topic: str, timeout: float | None = None) -> Listener:
        """An iterator of the diffs of ``topic`` (for drivers; see ``PubSub.listen``)."""
        return self._pubsub_client().listen(diff_topic(self.name, _check_text(topic, "topic")),
                                            timeout=timeout)

    def _pubsub_client(self) -> PubSub:
        if self._pubsub is None:
            self._pubsub = PubSub(timeout=self.timeout)
        return self._pubsub
