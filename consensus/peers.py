"""A member's view of its peers: their actor handles (looked up by name, again when a peer
has been silent or speaks from another process), one-way message sends, and the watch on the
leader's process. A follower holds one call open on its leader (``watch``): it fails the moment
the leader's process dies, and Ray's word that the leader is gone starts the election at once
instead of after the election timeout (``RaftNode.leader_gone``)."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from ray.exceptions import ActorDiedError, RayActorError

from herd.consensus.hosting import member_handle
from herd.consensus.raft import Message, RaftNode
from herd.platform import rpc
from herd.platform.logging import get_logger

__all__ = ["Peers"]

log = get_logger("herd.consensus")

HANDLE_RETRY_S = 1.0
WATCH_RETRY_S = 0.5


class Peers:
    def __init__(self, group: str, member_id: str, node: RaftNode,
                 on_leader_gone: Callable[[], None]) -> None:
        self.group, self.member_id, self.node = group, member_id, node
        self.on_leader_gone = on_leader_gone
        self.incarnation = ""  # this member's actor id, sent with every message batch
        self.handles: dict[str, tuple[Any, float]] = {}
        self.resolving: set[str] = set()
        self.last_heard: dict[str, float] = {}
        self.started = time.monotonic()
        self.watches: dict[str, tuple[Any, asyncio.Task[None]]] = {}

    # -- handles ---------------------------------------------------------------------------
    def send(self, messages: list[Message]) -> None:
        batches: dict[str, list[Message]] = defaultdict(list)
        for message in messages:
            batches[message.dst].append(message)
        for peer, batch in batches.items():
            handle = self.handle(peer)
            if handle is not None:
                handle.receive.remote(batch, self.incarnation)

    def handle(self, peer: str) -> Any:
        """The peer's handle; looked up again (at most once a second) while there is none or
        the peer has been silent for a second (it may have been restarted)."""
        handle, retry_at = self.handles.get(peer, (None, 0.0))
        now = time.monotonic()
        if now >= retry_at and (handle is None or self.silent_for(peer) > HANDLE_RETRY_S):
            self.handles[peer] = (handle, now + HANDLE_RETRY_S)
            self.start_resolve(peer)
        return handle

    def silent_for(self, peer: str) -> float:
        """Seconds since ``peer`` last sent a message (since this member started if never)."""
        return time.monotonic() - self.last_heard.get(peer, self.started)

    def forget(self, peer: str) -> None:
        """Drop the handle held for ``peer`` (it was just restarted)."""
        self.handles.pop(peer, None)

    def start_resolve(self, peer: str) -> None:
        if peer not in self.resolving:
            self.resolving.add(peer)
            asyncio.get_running_loop().create_task(self.resolve(peer))

    async def resolve(self, peer: str) -> None:
        try:
            handle = await rpc.blocking(member_handle, self.group, peer)
        except ValueError:
            handle = None
        finally:
            self.resolving.discard(peer)
        self.handles[peer] = (handle, time.monotonic() + HANDLE_RETRY_S)

    async def greet(self, peers: Iterable[str]) -> None:
        """Look every peer up now (a first message to one is not dropped) and tell it this
        member's actor id: a peer still holding the handle of this member's previous process
        would send its answers there, and lose them."""
        for peer in peers:
            await self.resolve(peer)
            handle = self.handles[peer][0]
            if handle is not None:
                handle.hello.remote(self.member_id, self.incarnation)

    def heard(self, peer: str, sender: str) -> None:
        """A message batch (or a greeting) came from ``peer``, whose actor id is ``sender``:
        look the peer up again if the handle held for it is another actor."""
        self.last_heard[peer] = time.monotonic()
        handle = self.handles.get(peer, (None, 0.0))[0]
        if sender and (handle is None or handle._actor_id.hex() != sender):
            self.start_resolve(peer)

    # -- the leader's death ----------------------------------------------------------------
    def watch_leader(self) -> None:
        """Hold one ``watch`` call open on this follower's leader (one per peer handle)."""
        node = self.node
        lead = node.lead
        if node.role != "follower" or lead is None or lead == self.member_id:
            return
        handle = self.handle(lead)
        watched = self.watches.get(lead)
        if handle is None or (watched is not None and watched[0] is handle):
            return
        task = asyncio.get_running_loop().create_task(self.await_death(lead, handle, node.term))
        self.watches[lead] = (handle, task)

    async def await_death(self, peer: str, handle: Any, term: int) -> None:
        try:
            await handle.watch.remote()
            return
        except ActorDiedError:
            pass
        except RayActorError:  # unreachable for now, not known dead: watch it again later
            await asyncio.sleep(WATCH_RETRY_S)
            self.watches.pop(peer, None)
            return
        if not self.still_led_by(peer, term):
            return
        try:
            current = await rpc.blocking(member_handle, self.group, peer)
        except ValueError:
            current = None
        if current is not None and current._actor_id != handle._actor_id:
            self.handles[peer] = (current, time.monotonic() + HANDLE_RETRY_S)
            self.watches.pop(peer, None)
            return  # the dead one was an older incarnation: the leader is another process
        if self.still_led_by(peer, term):
            log.info("leader_gone", group=self.group, member=self.member_id, leader=peer,
                     term=term)
            self.node.leader_gone(peer)
            self.on_leader_gone()

    def still_led_by(self, peer: str, term: int) -> bool:
        return self.node.term == term and self.node.lead == peer
