"""The presence tracker of one node: ``herd/presence/<name>/<node_id>`` (detached, hard-pinned
to its node, no CPU, restarted by Ray: the per-node placement of ``herd.platform.pubsub``'s
fan-out actors).

It holds a :class:`~herd.replication.presence_state.PresenceState`, carries out its decisions
and does the I/O around it, once per heartbeat (``heartbeat_ms``):

* gossip: to every peer tracker the payload for the clock that peer last acknowledged, as a
  signed datagram (``herd.platform.datagram``: arrives at once after a partition heals, where a
  Ray call waits out TCP's retransmission backoff), and as a Ray call (one in flight per peer, so
  a partitioned peer costs one pending call) whenever that peer's datagram acknowledgements have
  not been arriving: the first contact (it also tells each side the other's address), a payload
  too large for a datagram, a network that drops UDP;
* liveness: the GCS state of every process tracked here; a dead one is untracked;
* diffs: the net joins and leaves since the last heartbeat, per topic, to this node's pubsub
  fan-out actor only (``presence/<name>/<topic>``), which pushes them to the subscribers living
  on this node: every tracker sees every change, so every subscriber gets each diff once.

Membership events (pushed by ``herd/membership``) add a tracker on each node that joins and drop
the entries of each node declared dead. A restarted tracker starts a new incarnation: its peers
drop what the old one had tracked (its processes have to track again).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import ray
from ray.exceptions import RayError

from herd.platform.control_plane import control_plane_options
from herd.platform.datagram import Address, DatagramChannel, shared_key
from herd.platform.errors import HerdError
from herd.platform.gcs import actor_status
from herd.platform.logging import get_logger
from herd.platform.membership import AsyncMembership, MembershipEvent, NodeDown
from herd.platform.pubsub_node import PubSubNode, node_actor_options
from herd.platform.rpc import aget
from herd.replication.presence_state import Clock, PresenceError, PresenceState

ACTOR_PREFIX = "herd/presence/"
PEER_TIMEOUT_S = 1.0
LIVENESS_EVERY_S = 0.2
#: A peer whose datagram acknowledgement is younger than this is kept up to date by datagrams
#: alone; otherwise the Ray call goes too.
DATAGRAMS_TRUSTED_S = 1.0
CHANNEL_RETRY_S = 5.0

log = get_logger("herd.presence")


def tracker_name(name: str, node_id: str) -> str:
    return f"{ACTOR_PREFIX}{name}/{node_id}"


def diff_topic(name: str, topic: str) -> str:
    return f"presence/{name}/{topic}"


def tracker_options(name: str, node_id: str) -> dict[str, Any]:
    return control_plane_options(tracker_name(name, node_id), node_id=node_id)


@ray.remote
class PresenceTracker:
    """The tracker of ``name`` on node ``node_id`` (async: one event loop, no awaits between
    reading the state and changing it)."""

    def __init__(self, name: str, node_id: str, heartbeat_ms: int) -> None:
        self.name, self.node_id = name, node_id
        self.heartbeat_s = heartbeat_ms / 1000
        self.state = PresenceState(node_id, time.time_ns())
        self.peers: dict[str, Any] = {}
        self.acked: dict[str, Clock | None] = {}
        self.in_flight: set[str] = set()
        self.channel: DatagramChannel | None = None
        self.channel_tried_at = float("-inf")
        self.addresses: dict[str, Address] = {}  # peers' datagram addresses
        self.datagram_acked_at: dict[str, float] = {}
        self.remote: set[str] = set()  # replicas of other clusters (the federation bridge's)
        self.pubsub = PubSubNode.options(**node_actor_options(node_id)).remote(node_id)
        self.loop: asyncio.Task[None] | None = None
        self.checked_at = 0.0
        self.diffs_sent = 0
        self.tasks: set[asyncio.Task[Any]] = set()

    async def ready(self) -> dict[str, Any]:
        if self.loop is None:
            await self._open_channel()
            self.loop = asyncio.get_running_loop().create_task(self._beat_forever())
            me = ray.get_runtime_context().current_actor
            membership = await AsyncMembership.get()
            await membership.subscribe(me, "on_membership_event", replay=True)
        return {"node_id": self.node_id, "incarnation": self.state.own.incarnation}

    # ------------------------------------------------------------------ membership
    async def on_membership_event(self, event: MembershipEvent) -> None:
        if event.node_id == self.node_id:
            return
        if isinstance(event, NodeDown):
            self.peers.pop(event.node_id, None)
            self.acked.pop(event.node_id, None)
            self.addresses.pop(event.node_id, None)
            self.state.drop_replica(event.node_id)
            self._publish()
            log.info("presence_node_down", presence=self.name, node_id=event.node_id)
        elif event.node_id not in self.peers and event.node_id not in self.state.down:
            self.peers[event.node_id] = tracker_handle(self.name, event.node_id,
                                                       int(self.heartbeat_s * 1000))
            self._spawn(self._wake(event.node_id))

    async def _wake(self, node_id: str) -> None:
        """Start a new peer's loop (it may have been created just now)."""
        handle = self.peers.get(node_id)
        if handle is not None:
            try:
                await aget(handle.ready.remote(), 30.0, "presence tracker start")
            except (HerdError, RayError) as exc:
                log.warning("presence_peer_start_failed", node_id=node_id, error=repr(exc))

    # ------------------------------------------------------------------ the heartbeat
    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            try:
                await self._beat()
            except Exception as exc:  # one bad beat must not end the loop
                log.warning("presence_beat_failed", presence=self.name, error=repr(exc))

    async def _beat(self) -> None:
        now = time.monotonic()
        if self.channel is None and now - self.channel_tried_at >= CHANNEL_RETRY_S:
            await self._open_channel()
        for node_id in list(self.peers):
            if self._gossip_datagram(node_id, now) or node_id in self.in_flight:
                continue
            self.in_flight.add(node_id)
            self._spawn(self._gossip(node_id))
        if now - self.checked_at >= LIVENESS_EVERY_S:
            self.checked_at = now
            await self._check_liveness()
        self._publish()

    async def _gossip(self, node_id: str) -> None:
        try:
            payload = self._payload(node_id)
            handle = self.peers.get(node_id)
            if handle is None:
                return
            clock, address = await aget(handle.receive.remote(payload), PEER_TIMEOUT_S,
                                        "presence gossip")
            if node_id in self.peers:
                self.acked[node_id] = clock
                if address is not None:
                    self.addresses[node_id] = (str(address[0]), int(address[1]))
        except (HerdError, RayError):
            pass  # unreachable for now: the next heartbeat tries again from the same clock
        finally:
            self.in_flight.discard(node_id)

    async def _check_liveness(self) -> None:
        pids = sorted(self.state.local_pids())
        if not pids:
            return
        states = await asyncio.gather(*(actor_status(pid) for pid in pids),
                                      return_exceptions=True)
        for pid, status in zip(pids, states, strict=True):
            if not isinstance(status, BaseException) and status.state == "DEAD":
                self.state.untrack(pid)

    def _publish(self) -> None:
        diff = self.state.take_diff()
        for topic, changes in diff.topics.items():
            self.pubsub.deliver.remote(diff_topic(self.name, topic), changes)
            self.diffs_sent += 1

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # ------------------------------------------------------------------ peers
    async def receive(self, payload: dict[str, Any]) -> tuple[Clock | None, Address | None]:
        """A peer's gossip through Ray: this tracker's clock of the sender (what to acknowledge)
        and this tracker's datagram address (where to gossip from now on)."""
        self._learn_address(payload)
        return self.state.apply(payload), self.channel.address if self.channel else None

    # ------------------------------------------------------------------ federation
    async def export(self) -> dict[str, Any]:
        """This tracker's own part (clock and every entry), for the federation bridge
        (``herd.replication.presence_federation``)."""
        return self.state.payload_for(None)

    async def import_remote(self, parts: dict[str, dict[str, Any]]) -> int:
        """Merge the other regions' replica parts (``export``s, by replica) the bridge read,
        and drop the remote replicas no longer among them; how many parts changed."""
        changed = 0
        for replica, part in parts.items():
            if replica in self.peers or replica == self.node_id:
                continue  # a node of this cluster: its tracker gossips it
            known = self.state.parts.get(replica)
            if known is None or known.clock != tuple(part["clock"]):
                self.state.apply({**part, "replica": replica, "clock": tuple(part["clock"])})
                changed += 1
        for replica in self.remote - set(parts):
            self.state.drop_replica(replica)
            changed += 1
        self.remote = set(parts) - set(self.peers) - {self.node_id}
        if changed:
            self._publish()
        return changed

    # ------------------------------------------------------------------ datagrams
    async def _open_channel(self) -> None:
        """Open this tracker's datagram socket on its node's address; without one (the GCS KV
        did not answer, no such address) it gossips through Ray alone and tries again later."""
        self.channel_tried_at = time.monotonic()
        try:
            key = await shared_key(f"presence/{self.name}")
            self.channel = await DatagramChannel.open(ray.util.get_node_ip_address(), key,
                                                      self._on_datagram)
        except (HerdError, RayError, OSError, RuntimeError) as exc:
            log.warning("presence_datagrams_unavailable", presence=self.name, error=repr(exc))

    def _payload(self, node_id: str) -> dict[str, Any]:
        payload = self.state.payload_for(self.acked.get(node_id))
        if self.channel is not None:
            payload["reply_to"] = self.channel.address
        return payload

    def _learn_address(self, payload: dict[str, Any]) -> None:
        reply_to = payload.get("reply_to")
        if reply_to is not None and payload["replica"] in self.peers:
            self.addresses[payload["replica"]] = (str(reply_to[0]), int(reply_to[1]))

    def _gossip_datagram(self, node_id: str, now: float) -> bool:
        """Send ``node_id`` its payload as a datagram; True when datagrams alone keep that peer
        up to date (its recent acknowledgements say they arrive)."""
        address = self.addresses.get(node_id)
        if self.channel is None or address is None:
            return False
        sent = self.channel.send(address, ("gossip", self._payload(node_id)))
        acked_at = self.datagram_acked_at.get(node_id, float("-inf"))
        return sent and now - acked_at < DATAGRAMS_TRUSTED_S

    def _on_datagram(self, message: Any, sender: Address) -> None:
        kind, body = message
        if kind == "gossip":
            self._learn_address(body)
            clock = self.state.apply(body)
            if self.channel is not None:
                self.channel.send(self.addresses.get(body["replica"], sender),
                                  ("ack", (self.node_id, clock)))
        elif kind == "ack":
            node_id, clock = body
            if node_id in self.peers:
                self.acked[node_id] = clock
                self.datagram_acked_at[node_id] = time.monotonic()

    # ------------------------------------------------------------------ clients
    async def track(self, pid: str, topic: str, key: str, meta: Any, update: bool,
                    node_id: str | None = None) -> str:
        """Track ``pid`` on the tracker of the node it runs on (``node_id`` when the caller
        knows it, e.g. a process tracking itself; otherwise asked of the GCS), forwarded there;
        returns that node's id."""
        await self.ready()
        if node_id is None:
            status = await actor_status(pid)
            if status.state == "DEAD":
                raise PresenceError(f"actor {pid} is dead: it cannot be tracked")
            node_id = status.node_id or self.node_id
        if node_id != self.node_id:
            peer = self.peers.get(node_id) or tracker_handle(self.name, node_id,
                                                             int(self.heartbeat_s * 1000))
            forwarded: str = await aget(peer.track.remote(pid, topic, key, meta, update, node_id),
                                        PEER_TIMEOUT_S * 10, "presence track")
            return forwarded
        (self.state.update if update else self.state.track)(pid, topic, key, meta)
        return self.node_id

    async def untrack(self, pid: str, topic: str | None, key: str | None) -> int:
        """Untrack ``pid`` wherever it is tracked (asks every peer)."""
        await self.ready()
        removed = self.state.untrack(pid, topic, key)
        if removed:
            return removed
        answers = await asyncio.gather(
            *(aget(peer.untrack_local.remote(pid, topic, key), PEER_TIMEOUT_S, "presence untrack")
              for peer in self.peers.values()), return_exceptions=True)
        return sum(a for a in answers if isinstance(a, int))

    async def untrack_local(self, pid: str, topic: str | None, key: str | None) -> int:
        return self.state.untrack(pid, topic, key)

    async def list(self, topic: str) -> dict[str, list[Any]]:
        await self.ready()
        return self.state.list(topic)

    async def digest(self) -> list[Any]:
        return sorted(self.state.digest())

    async def stats(self) -> dict[str, Any]:
        return {"node_id": self.node_id, "incarnation": self.state.own.incarnation,
                "version": self.state.own.version, "peers": sorted(self.peers),
                "acked": dict(self.acked), "down": sorted(self.state.down),
                "entries": sum(1 for _ in self.state.entries()), "diffs_sent": self.diffs_sent,
                "datagrams": dict(self.channel.counts) if self.channel else None}


def tracker_handle(name: str, node_id: str, heartbeat_ms: int) -> Any:
    """The tracker of presence ``name`` on ``node_id`` (created if it does not run yet)."""
    return PresenceTracker.options(**tracker_options(name, node_id)).remote(name, node_id,
                                                                            heartbeat_ms)
