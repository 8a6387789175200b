"""``RaftNode``: the whole pure Raft member. ``step(message)`` and ``tick()`` in; ``ready()``
out (what to persist, send, apply and answer). Proposals, ReadIndex and lease reads,
leadership transfer, single-server membership changes and log compaction are its other
inputs. Only the leader accepts proposals and reads: the host redirects clients."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from herd.consensus.raft.core import FROM_LEADER, VOTE_REQUESTS, PendingRead, Role
from herd.consensus.raft.messages import (
    ConfChange,
    Entry,
    EntryKind,
    HardState,
    Message,
    MessageType,
    ReadState,
    Ready,
    Snapshot,
)
from herd.consensus.raft.progress import Progress
from herd.consensus.raft.replication import Replicator

__all__ = ["NodeStatus", "RaftNode"]


@dataclass(frozen=True)
class NodeStatus:
    id: str
    role: Role
    term: int
    lead: str | None
    commit: int
    applied: int
    last_index: int
    first_index: int
    voters: tuple[str, ...]
    learners: tuple[str, ...]
    matches: dict[str, int]
    lease_ticks_left: int


class RaftNode(Replicator):
    # -- messages --------------------------------------------------------------------------
    def step(self, message: Message) -> None:
        if message.term > self.term:
            if message.type in VOTE_REQUESTS and not message.force and self.in_lease():
                return  # a live leader is known: do not let a rejoining member depose it
            if message.type == MessageType.PRE_VOTE or (
                    message.type == MessageType.PRE_VOTE_RESP and not message.reject):
                pass  # pre-votes never change terms
            else:
                lead = message.src if message.type in FROM_LEADER else None
                self.become_follower(message.term, lead)
        elif message.term < self.term:
            if message.type in (MessageType.APPEND, MessageType.HEARTBEAT):
                self.send(MessageType.APPEND_RESP, message.src)  # tells a stale leader the term
            elif message.type == MessageType.PRE_VOTE:
                self.send(MessageType.PRE_VOTE_RESP, message.src, reject=True)
            return
        if message.type in VOTE_REQUESTS:
            self.handle_vote_request(message)
        elif self.role == "leader":
            self.step_leader(message)
        elif message.type in FROM_LEADER:
            if self.role != "follower":
                self.become_follower(self.term, message.src)
            self.election_elapsed, self.lead = 0, message.src
            self.step_follower(message)
        elif message.type == MessageType.TIMEOUT_NOW and self.promotable():
            self.campaign(pre_vote=False, force=True)
        elif (message.type == MessageType.PRE_VOTE_RESP and self.role == "pre_candidate"
              or message.type == MessageType.VOTE_RESP and self.role == "candidate"):
            self.record_vote(message.src, granted=not message.reject)

    def step_leader(self, message: Message) -> None:
        if message.type == MessageType.APPEND_RESP:
            self.handle_append_response(message)
        elif message.type == MessageType.HEARTBEAT_RESP:
            self.handle_heartbeat_response(message)
            self.release_reads()

    def step_follower(self, message: Message) -> None:
        if message.type == MessageType.APPEND:
            self.handle_append(message)
        elif message.type == MessageType.HEARTBEAT:
            self.handle_heartbeat(message)
        else:
            self.handle_snapshot(message)

    # -- proposals -------------------------------------------------------------------------
    def propose(self, commands: Sequence[Any], kind: EntryKind = "normal") -> list[int] | None:
        """Append commands as one batch; their log indexes, or ``None`` when this member cannot
        take proposals now (not the leader, or a leadership transfer is under way)."""
        if self.role != "leader" or self.lead_transferee is not None:
            return None
        first = self.log.last_index() + 1
        entries = [Entry(self.term, first + offset, kind, command)
                   for offset, command in enumerate(commands)]
        self.append_entries(entries)
        self.broadcast_append()
        return [entry.index for entry in entries]

    def change_membership(self, change: ConfChange) -> int | None:
        """Propose one single-server change; ``None`` unless this leader has committed an entry
        of its term and no earlier change is still unapplied (one change at a time)."""
        if (self.role != "leader" or self.pending_conf_index > self.log.applied
                or not self.committed_in_term()):
            return None
        if change.op in ("add_voter", "promote") and change.node in self.membership.voters:
            return None
        indexes = self.propose([change], kind="conf")
        if indexes is None:
            return None
        self.pending_conf_index = indexes[0]
        return indexes[0]

    def apply_membership(self, change: ConfChange) -> None:
        self.membership = self.membership.apply(change)
        if self.role != "leader":
            return
        for member in self.membership.members - set(self.progress):
            self.progress[member] = Progress(next=self.log.last_index() + 1, recent_active=True)
        for member in set(self.progress) - self.membership.members:
            del self.progress[member]
        if self.id not in self.membership.voters:
            self.become_follower(self.term, None)
        elif self.maybe_commit():
            self.broadcast_append()

    def transfer_leadership(self, target: str) -> bool:
        if (self.role != "leader" or target == self.id
                or target not in self.membership.voters):
            return False
        self.lead_transferee, self.election_elapsed = target, 0
        if self.progress[target].match == self.log.last_index():
            self.send(MessageType.TIMEOUT_NOW, target)
        else:
            self.send_append(target)
        return True

    # -- reads -----------------------------------------------------------------------------
    def read_index(self, request: int, lease: bool = False) -> bool:
        """Ask to serve a linearizable read; a ``ReadState`` for ``request`` comes out of
        ``ready()`` once it is safe (False: not the leader)."""
        if self.role != "leader":
            return False
        if not self.committed_in_term():
            self.reads_before_commit.append(request)
        elif len(self.membership.voters) == 1 or (lease and self.lease_ticks_left() > 0):
            self.read_states.append(ReadState(request, self.log.commit))
        else:
            self.heartbeat_sequence += 1
            self.pending_reads.append(
                PendingRead(request, self.log.commit, self.heartbeat_sequence))
            self.broadcast_heartbeat(self.heartbeat_sequence)
        return True

    def on_commit_in_term(self) -> None:
        waiting, self.reads_before_commit = self.reads_before_commit, []
        for request in waiting:
            self.read_index(request)

    def acked(self, sequence: int) -> bool:
        count = sum(1 for member in self.membership.voters
                    if member == self.id or (member in self.progress
                                             and self.progress[member].acked_sequence >= sequence))
        return count >= self.membership.quorum()

    def release_reads(self) -> None:
        while self.pending_reads and self.acked(self.pending_reads[0].sequence):
            read = self.pending_reads.pop(0)
            self.read_states.append(ReadState(read.request, read.index))

    def lease_ticks_left(self) -> int:
        """Ticks left of the leader lease: a quorum answered a heartbeat sent at tick T, and no
        member of it grants a vote before ``election_ticks`` passed since (CheckQuorum)."""
        if self.role != "leader" or self.lead_transferee is not None:
            return 0
        sent = [self.ticks if member == self.id else
                self.sequence_ticks.get(self.progress[member].acked_sequence, -1)
                if member in self.progress else -1
                for member in self.membership.voters]
        start = sorted(sent, reverse=True)[self.membership.quorum() - 1]
        if start < 0:
            return 0
        lease = self.config.election_ticks - self.config.lease_margin_ticks
        return max(0, start + lease - self.ticks)

    # -- snapshots -------------------------------------------------------------------------
    def compact(self, data: Any) -> Snapshot:
        """Take the machine's state at the applied index as a snapshot and drop the log up to
        it; the host persists the returned snapshot."""
        index = self.log.applied
        term = self.log.term_at(index)
        snapshot = Snapshot(index, term if term is not None else 0, self.membership, data)
        self.log.compact(snapshot)
        return snapshot

    # -- output ----------------------------------------------------------------------------
    def ready(self) -> Ready:
        """Everything the host must do now; taking it hands the work over."""
        log = self.log
        committed = log.to_apply()
        log.applied = log.commit
        for entry in committed:
            if entry.kind == "conf":
                self.apply_membership(entry.data)
        ready = Ready(entries=log.unstable(), messages=self.outbox, reads=self.read_states,
                      dropped_reads=self.dropped_reads, snapshot=log.pending_snapshot,
                      committed=committed)
        log.pending_snapshot = None
        log.stable = log.last_index()
        state = HardState(self.term, self.vote, log.commit)
        previous = self.persisted_state
        if state != previous:
            ready.hard_state = self.persisted_state = state
        ready.must_sync = (bool(ready.entries) or ready.snapshot is not None
                           or (state.term, state.vote) != (previous.term, previous.vote))
        self.outbox, self.read_states, self.dropped_reads = [], [], []
        return ready

    def status(self) -> NodeStatus:
        return NodeStatus(
            self.id, self.role, self.term, self.lead, self.log.commit, self.log.applied,
            self.log.last_index(), self.log.first_index(), tuple(sorted(self.membership.voters)),
            tuple(sorted(self.membership.learners)),
            {member: progress.match for member, progress in self.progress.items()},
            self.lease_ticks_left())
