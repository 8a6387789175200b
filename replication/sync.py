"""The replica's pushers: one asyncio task per peer region that ships delta intervals soon
after a change (batched for at most ``batch_ms``, at once for quorum writes), retries after
failures, and runs an anti-entropy ``Sync`` every ``sync_interval_ms`` when nothing is pending.
It also answers "which peers hold my change ``seq``" for quorum writes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from herd.platform.errors import HerdError
from herd.platform.logging import get_logger
from herd.replication.core import ReplicaCore

log = get_logger("herd.replication.sync")

SEND_TIMEOUT_S = 2.0
MAX_CONVERSATION = 8


@dataclass
class PeerState:
    """The pusher's view of one peer."""

    wake: asyncio.Event = field(default_factory=asyncio.Event)
    urgent: bool = False
    inflight_since: float | None = None
    last_error: str | None = None
    last_ok: float | None = None
    synced_at: tuple[int, int | None] | None = None  # (my changes, peer recv) when in sync


class PeerSync:
    """Runs the pushers of one replica. ``send(region, payload, timeout_s)`` is the transport;
    ``commit()`` makes the core's journal durable (awaited before the next message goes out,
    so nothing this replica acknowledges or forwards is volatile)."""

    def __init__(self, core: ReplicaCore, send: Callable[[str, bytes, float], Awaitable[bytes]],
                 commit: Callable[[], Awaitable[None]], batch_ms: int, sync_interval_ms: int
                 ) -> None:
        self.core = core
        self.send = send
        self.commit = commit
        self.batch_s = batch_ms / 1000
        self.sync_interval_s = sync_interval_ms / 1000
        self.peers = {region: PeerState() for region in core.peers}
        self.acked = asyncio.Condition()
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self.tasks = [asyncio.create_task(self._run(region)) for region in self.peers]

    def stop(self) -> None:
        for task in self.tasks:
            task.cancel()

    def kick(self, urgent: bool = False) -> None:
        """A change happened: push it to every peer (``urgent``: without batching)."""
        for peer in self.peers.values():
            peer.urgent = peer.urgent or urgent
            peer.wake.set()

    # ---------------------------------------------------------------- quorum support

    def reachable(self) -> dict[str, bool]:
        """Peers that answered their last exchange and have none stuck in flight."""
        now = time.monotonic()
        limit = max(1.0, 2 * self.batch_s)
        return {region: peer.last_error is None and (
                    peer.inflight_since is None or now - peer.inflight_since < limit)
                for region, peer in self.peers.items()}

    def holders(self, seq: int) -> list[str]:
        """Peers that acknowledged this replica's changes up to and including ``seq``."""
        return [r for r, link in self.core.peers.items()
                if link.acked is not None and link.acked > seq]

    async def wait_holders(self, seq: int, count: int, timeout_s: float) -> list[str]:
        """Wait until ``count`` peers hold change ``seq`` (or the timeout); returns them."""
        deadline = time.monotonic() + timeout_s
        async with self.acked:
            while len(self.holders(seq)) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    await asyncio.wait_for(self.acked.wait(), left)
                except asyncio.TimeoutError:
                    break
            return self.holders(seq)

    async def _notify_acked(self) -> None:
        async with self.acked:
            self.acked.notify_all()

    # ---------------------------------------------------------------- pushers

    async def _run(self, region: str) -> None:
        peer = self.peers[region]
        while True:
            try:
                await asyncio.wait_for(peer.wake.wait(), self.sync_interval_s)
            except asyncio.TimeoutError:
                await self._anti_entropy(region)
                continue
            peer.wake.clear()
            if not peer.urgent and self.batch_s:
                await asyncio.sleep(self.batch_s)
            peer.urgent = False
            await self._push(region)

    async def _push(self, region: str) -> None:
        for _ in range(1000):
            message = self.core.next_message(region)
            if message is None or not await self.converse(region, message):
                return
        self.peers[region].wake.set()  # a long backlog: yield, continue on the next round

    async def _anti_entropy(self, region: str) -> None:
        peer = self.peers[region]
        link = self.core.peers[region]
        if self.core.pending(region) != 0:
            await self._push(region)
            return
        if peer.synced_at == (self.core.changes, link.recv) and peer.last_error is None:
            return
        if await self.converse(region, self.core.sync_message(region)):
            peer.synced_at = (self.core.changes, link.recv)

    async def probe(self, timeout_s: float) -> dict[str, bool]:
        """Reachability, after one anti-entropy exchange (bounded by ``timeout_s``) with each
        peer now marked unreachable: a peer that recovered is found at once."""
        down = [region for region, ok in self.reachable().items() if not ok]
        await asyncio.gather(*(self.converse(region, self.core.sync_message(region), timeout_s)
                               for region in down))
        return self.reachable()

    async def converse(self, region: str, message: bytes,
                       timeout_s: float = SEND_TIMEOUT_S) -> bool:
        """Send ``message`` and follow the exchange to its end; False when the peer could not
        be reached (it is retried on the next wake-up or anti-entropy round)."""
        peer = self.peers[region]
        now_ms = int(time.time() * 1000)
        for _ in range(MAX_CONVERSATION):
            peer.inflight_since = time.monotonic()
            try:
                reply = await self.send(region, message, timeout_s)
            except HerdError as exc:
                peer.last_error = str(exc)[:200]
                peer.inflight_since = None
                log.info("replication_peer_unreachable", store=self.core.config.store,
                         region=self.core.config.region, peer=region, error=peer.last_error)
                return False
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a transport bug must not kill the pusher
                peer.last_error = f"{type(exc).__name__}: {exc}"[:200]
                peer.inflight_since = None
                log.warning("replication_send_failed", peer=region, error=peer.last_error)
                return False
            peer.inflight_since = None
            peer.last_error = None
            peer.last_ok = time.monotonic()
            if not reply:
                break
            changes_before = self.core.changes
            follow_up = self.core.handle(reply, now_ms)
            await self.commit()
            if self.core.changes != changes_before:
                self.kick()
            await self._notify_acked()
            if follow_up is None:
                break
            message = follow_up
        return True

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        return {region: {"reachable": ok, "last_error": self.peers[region].last_error,
                         "s_since_ok": None if self.peers[region].last_ok is None
                         else round(now - self.peers[region].last_ok, 3)}
                for region, ok in self.reachable().items()}
