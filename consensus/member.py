"""The member actor: a thin asyncio shell around the pure ``RaftNode``. One loop per member
ticks the core, steps the messages that arrived, proposes the commands queued since the last
round as one batch, persists what ``ready()`` says with one fsync (its write-ahead log on this
node's disk), then sends, applies and answers. Messages to peers are one-way actor calls
(nothing waits on them, ``peers.Peers``); clients wait on futures with their deadline."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import itertools
import os
import time
from pathlib import Path
from typing import Any

import ray

from herd.consensus.hosting import GroupRecord, create_member
from herd.consensus.machine import Envelope, MachineHost
from herd.consensus.peers import Peers
from herd.consensus.raft import (
    ConfChange,
    Entry,
    Membership,
    Message,
    MessageType,
    RaftNode,
    Ready,
)
from herd.consensus.reconcile import Reconciler
from herd.consensus.spec import GroupOptions
from herd.consensus.wal import WriteAheadLog
from herd.platform.logging import get_logger

__all__ = ["MemberActor", "RaftMember"]

log = get_logger("herd.consensus")

LEADER_MESSAGES = (MessageType.APPEND, MessageType.HEARTBEAT, MessageType.SNAPSHOT)
RECONCILE_EVERY_S = 0.5


class RaftMember:
    def __init__(self, options: GroupOptions, machine: Any, member_id: str, node_id: str,
                 membership: Membership, uid: str) -> None:
        self.options, self.machine_class = options, machine
        self.id, self.node_id = member_id, node_id
        self.key = f"{options.name}/{member_id}"
        self.wal = WriteAheadLog(Path(options.wal_dir) / node_id,
                                 f"{options.name}.{uid}.{member_id}.wal")
        state = self.wal.state(self.key)
        self.node = RaftNode(member_id, membership, options.raft_config(member_id),
                             state.hard_state, state.snapshot, list(state.entries))
        self.host = MachineHost(machine)
        if state.snapshot is not None:
            self.host.restore(state.snapshot.data)
        self.durable_vote = (state.hard_state.term, state.hard_state.vote)
        self.io = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="raft-wal")
        self.inbox: list[Message] = []
        self.proposals: list[tuple[Envelope, asyncio.Future[tuple[str, Any]]]] = []
        self.waiting: dict[int, tuple[Any, asyncio.Future[tuple[str, Any]]]] = {}
        self.reads: dict[int, asyncio.Future[tuple[str, Any]]] = {}
        self.read_ids = itertools.count(1)
        self.greeting: asyncio.Task[None] | None = None
        self.wake = asyncio.Event()
        self.stopping = asyncio.Event()
        self.peers = Peers(options.name, member_id, self.node, self.wake.set)
        self.next_tick = time.monotonic()
        self.reconciler = Reconciler(self)
        self.loop_task: asyncio.Task[None] | None = None
        log.info("member_started", group=options.name, member=member_id, node_id=node_id,
                 term=state.hard_state.term, entries=len(state.entries))

    # -- the loop --------------------------------------------------------------------------
    async def start(self) -> str:
        """Start the loop (once); answers the member's node."""
        if self.loop_task is None:
            self.peers.incarnation = ray.get_runtime_context().get_actor_id() or ""
            self.greeting = asyncio.get_running_loop().create_task(
                self.peers.greet(self.node.peers()))
            self.loop_task = asyncio.get_running_loop().create_task(self.run())
        return self.node_id

    async def run(self) -> None:
        next_reconcile = time.monotonic() + RECONCILE_EVERY_S
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.wake.wait(),
                                       max(0.0, self.next_tick - time.monotonic()))
            self.wake.clear()
            now = time.monotonic()
            self.advance_clock(now)
            inbox, self.inbox = self.inbox, []
            for message in inbox:
                self.node.step(message)
            self.propose_queued()
            try:
                await self.handle_ready(self.node.ready())
                self.maybe_compact()
                self.peers.watch_leader()
                if now >= next_reconcile and self.node.role == "leader":
                    next_reconcile = now + RECONCILE_EVERY_S
                    self.reconciler.start_round()
            except Exception as exc:  # keep the member alive; the log says why
                log.exception("member_round_failed", group=self.options.name, member=self.id,
                              error=repr(exc))

    def advance_clock(self, now: float) -> None:
        """Tick once per ``tick_s`` that has passed, not once per round: a member whose
        process was paused (SIGSTOP, a long GC) or starved of CPU must see its leader lease
        expire and its election timer run out by the time it looks, not a tick later. At most
        two election timeouts' worth of ticks at once: after that nothing changes."""
        due = int((now - self.next_tick) / self.options.tick_s) + 1 if now >= self.next_tick else 0
        for _ in range(min(due, 2 * self.options.election_ticks + 1)):
            self.node.tick()
        if due:
            self.next_tick = now + self.options.tick_s

    def propose_queued(self) -> None:
        while self.proposals:
            batch = self.proposals[:self.options.max_batch]
            del self.proposals[:len(batch)]
            indexes = self.node.propose([envelope for envelope, _ in batch])
            for position, (envelope, future) in enumerate(batch):
                if indexes is None:
                    future.done() or future.set_result(("redirect", self.node.lead))
                else:
                    self.waiting[indexes[position]] = (envelope, future)

    async def handle_ready(self, ready: Ready) -> None:
        messages = ready.messages
        state = ready.hard_state
        early: list[Message] = []
        if state is None or (state.term, state.vote) == self.durable_vote:
            # a leader replicates while it persists (Raft thesis 10.2.1): it counts itself only
            # once its own write is durable, as follower answers are stepped after this sync
            early = [m for m in messages if m.type in LEADER_MESSAGES]
            messages = [m for m in messages if m.type not in LEADER_MESSAGES]
        syncing = None
        if self.wal.record_ready(self.key, ready) and ready.must_sync:
            syncing = asyncio.get_running_loop().run_in_executor(self.io, self.wal.sync)
        self.peers.send(early)  # while the fsync runs
        if ready.snapshot is None:
            # Committed entries are durable on a majority already: apply them, and answer
            # their clients, while this round's own writes are synced.
            self.finish(ready)
        if syncing is not None:
            await syncing
        if state is not None:
            self.durable_vote = (state.term, state.vote)
        self.peers.send(messages)
        if ready.snapshot is not None:
            self.host.restore(ready.snapshot.data)
            self.finish(ready)

    def finish(self, ready: Ready) -> None:
        """Apply ``ready``'s committed entries and serve its reads."""
        for entry in ready.committed:
            self.apply(entry)
        for read in ready.reads:
            future = self.reads.pop(read.request, None)
            if future is not None and not future.done():
                future.set_result(("ok", read.index))
        for request in ready.dropped_reads:
            future = self.reads.pop(request, None)
            if future is not None and not future.done():
                future.set_result(("redirect", self.node.lead))

    def apply(self, entry: Entry) -> None:
        result: tuple[str, Any] = ("ok", None)
        if entry.kind == "normal":
            try:
                result = ("ok", self.host.apply(entry.index, entry.data))
            except Exception as exc:  # the machine refused it (the same on every member)
                result = ("error", f"{type(exc).__name__}: {exc}")
        waiting = self.waiting.pop(entry.index, None)
        if waiting is None:
            return
        proposed, future = waiting
        if future.done():
            return
        if proposed == entry.data:
            future.set_result(result)
        else:  # another leader's entry took that index: this command was never applied
            future.set_result(("redirect", self.node.lead))

    def maybe_compact(self) -> None:
        log_ = self.node.log
        if log_.applied - log_.snapshot_index < self.options.snapshot_every:
            return
        snapshot = self.node.compact(self.host.snapshot())
        self.wal.record(self.key, "compact", snapshot)
        if self.wal.needs_rewrite(0):
            self.io.submit(self.wal.rewrite)

    # -- peers ---------------------------------------------------------------------------
    async def watch(self) -> None:
        """Answers only when this member is stopped (``destroy``); fails the caller's wait when
        this member's process dies: that failure is the followers' news of its death."""
        await self.stopping.wait()

    async def hello(self, peer: str, sender: str) -> None:
        self.peers.heard(peer, sender)

    async def receive(self, messages: list[Message], sender: str = "") -> None:
        """Messages of one peer; ``sender`` is its actor id (``Peers.heard``)."""
        if messages:
            self.peers.heard(messages[0].src, sender)
        self.inbox.extend(messages)
        self.wake.set()

    # -- clients ---------------------------------------------------------------------------
    async def command(self, envelope: Envelope, timeout: float) -> tuple[str, Any]:
        """``("ok", result)``, ``("error", why)`` (the machine refused it), ``("redirect",
        leader)`` (not appended here: send it to the leader) or ``("unknown", None)``."""
        if self.node.role != "leader" or self.node.lead_transferee is not None:
            return "redirect", self.node.lead
        envelope = dataclasses.replace(envelope, time=time.time())  # the leader's clock
        future: asyncio.Future[tuple[str, Any]] = asyncio.get_running_loop().create_future()
        self.proposals.append((envelope, future))
        self.wake.set()
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except asyncio.TimeoutError:
            return "unknown", None

    async def commands(self, envelopes: list[Envelope],
                       timeout: float) -> list[tuple[str, Any]]:
        """Many clients' commands in one call (a client process coalesces what its clients
        have in flight); answers in order, each as ``command`` would."""
        if not envelopes:
            return []
        if self.node.role != "leader" or self.node.lead_transferee is not None:
            return [("redirect", self.node.lead)] * len(envelopes)
        now, loop = time.time(), asyncio.get_running_loop()
        futures: list[asyncio.Future[tuple[str, Any]]] = []
        for envelope in envelopes:
            future = loop.create_future()
            self.proposals.append((dataclasses.replace(envelope, time=now), future))
            futures.append(future)
        self.wake.set()
        await asyncio.wait(futures, timeout=timeout)  # one waiter for all of them
        return [f.result() if f.done() else ("unknown", None) for f in futures]

    async def query(self, query: Any, consistency: str, timeout: float) -> tuple[str, Any]:
        if consistency == "stale":
            return "ok", self.host.query(query)
        if consistency == "lease":
            self.advance_clock(time.monotonic())  # a lease counted in ticks must be current
        if self.node.role != "leader":
            return "redirect", self.node.lead
        request = next(self.read_ids)
        future: asyncio.Future[tuple[str, Any]] = asyncio.get_running_loop().create_future()
        self.reads[request] = future
        self.node.read_index(request, lease=consistency == "lease")
        self.wake.set()
        try:
            status, _ = await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            self.reads.pop(request, None)
            return "timeout", None
        if status != "ok":
            return status, self.node.lead
        return "ok", self.host.query(query)

    async def change(self, change: ConfChange, timeout: float) -> tuple[str, Any]:
        index = self.node.change_membership(change)
        if index is None:
            return "busy", self.node.lead
        future: asyncio.Future[tuple[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiting[index] = (change, future)
        self.wake.set()
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except asyncio.TimeoutError:
            return "unknown", None

    async def transfer_leadership(self, target: str) -> bool:
        moved = self.node.transfer_leadership(target)
        self.wake.set()
        return moved

    async def status(self) -> dict[str, Any]:
        status = self.node.status()
        return {"member": self.id, "node_id": self.node_id, "role": status.role,
                "term": status.term, "leader": status.lead, "commit": status.commit,
                "applied": status.applied, "last_index": status.last_index,
                "first_index": status.first_index, "voters": list(status.voters),
                "learners": list(status.learners), "matches": status.matches,
                "lease_s": status.lease_ticks_left * self.options.tick_s,
                "wal_syncs": self.wal.syncs}

    async def where(self) -> tuple[str, int]:
        return self.node_id, os.getpid()

    async def destroy(self) -> None:
        """Stop and delete this member's log (the group is being stopped)."""
        self.stopping.set()
        if self.loop_task is not None:
            self.loop_task.cancel()
        await asyncio.get_running_loop().run_in_executor(self.io, self.wal.close)
        self.wal.path.unlink(missing_ok=True)
        ray.actor.exit_actor()

    # -- used by the reconciler ------------------------------------------------------------
    def spawn(self, record: GroupRecord, member_id: str, node_id: str,
              membership: Membership) -> Any:
        return create_member(MemberActor, record, member_id, node_id, membership)


MemberActor = ray.remote(RaftMember)
