"""The state of one Raft member and its elections: terms, votes, roles, randomized election
timeouts, PreVote and CheckQuorum. Pure: the host feeds ticks and messages and reads the
outbox; randomness comes from a seeded generator so a run replays exactly."""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Literal

from herd.consensus.raft.log import RaftLog
from herd.consensus.raft.messages import (
    Entry,
    HardState,
    Membership,
    Message,
    MessageType,
    ReadState,
    Snapshot,
)
from herd.consensus.raft.progress import Progress

__all__ = ["RaftConfig", "RaftCore", "Role"]

Role = Literal["follower", "pre_candidate", "candidate", "leader"]
VOTE_REQUESTS = (MessageType.VOTE, MessageType.PRE_VOTE)
FROM_LEADER = (MessageType.APPEND, MessageType.HEARTBEAT, MessageType.SNAPSHOT)
#: After its leader is known gone, a surviving voter that is not the first in id order waits
#: this many ticks more per place before it campaigns (in case the first cannot win).
GONE_STAGGER_TICKS = 2


@dataclass(frozen=True)
class RaftConfig:
    """Timing in ticks. A follower starts an election after a random timeout in
    ``[election_ticks, 2 * election_ticks)``; a leader's lease lasts ``election_ticks -
    lease_margin_ticks`` after a quorum acknowledged it (bounded clock drift)."""

    election_ticks: int = 10
    heartbeat_ticks: int = 1
    max_entries_per_message: int = 512
    max_inflight: int = 64
    pre_vote: bool = True
    check_quorum: bool = True
    lease_margin_ticks: int = 2
    seed: int = 0


@dataclass(frozen=True)
class PendingRead:
    request: int
    index: int
    sequence: int


class RaftCore(ABC):
    def __init__(self, node_id: str, membership: Membership, config: RaftConfig | None = None,
                 hard_state: HardState | None = None, snapshot: Snapshot | None = None,
                 entries: tuple[Entry, ...] | list[Entry] = ()) -> None:
        self.id = node_id
        self.config = config or RaftConfig()
        self.random = random.Random(f"{self.config.seed}/{node_id}")
        state = hard_state or HardState()
        self.term, self.vote = state.term, state.vote
        self.log = RaftLog(snapshot, entries)
        self.log.commit = min(max(state.commit, self.log.commit), self.log.last_index())
        self.membership = snapshot.membership if snapshot else membership
        self.role: Role = "follower"
        self.lead: str | None = None
        self.progress: dict[str, Progress] = {}
        self.votes: dict[str, bool] = {}
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.ticks = 0
        self.randomized_timeout = self.config.election_ticks
        self.lead_transferee: str | None = None
        self.pending_conf_index = 0
        self.outbox: list[Message] = []
        self.heartbeat_sequence = 0
        self.sequence_ticks: dict[int, int] = {}
        self.pending_reads: list[PendingRead] = []
        self.reads_before_commit: list[int] = []
        self.read_states: list[ReadState] = []
        self.dropped_reads: list[int] = []
        self.persisted_state = state
        self.reset_timeout()

    # -- helpers ---------------------------------------------------------------------------
    def send(self, kind: MessageType, to: str, **fields: object) -> None:
        fields.setdefault("term", self.term)
        self.outbox.append(Message(kind, self.id, to, **fields))  # type: ignore[arg-type]

    def promotable(self) -> bool:
        return self.id in self.membership.voters

    def peers(self) -> list[str]:
        return sorted(self.membership.members - {self.id})

    def reset_timeout(self) -> None:
        low = self.config.election_ticks
        self.randomized_timeout = self.random.randrange(low, 2 * low)

    def in_lease(self) -> bool:
        """Has this member heard from a live leader within the minimum election timeout?"""
        return (self.config.check_quorum and self.lead is not None
                and self.election_elapsed < self.config.election_ticks)

    def committed_in_term(self) -> bool:
        return self.log.term_at(self.log.commit) == self.term

    # -- roles -----------------------------------------------------------------------------
    def reset(self, term: int) -> None:
        if term != self.term:
            self.term, self.vote = term, None
        self.lead = None
        self.election_elapsed = self.heartbeat_elapsed = 0
        self.reset_timeout()
        self.votes = {}
        self.lead_transferee = None
        self.dropped_reads.extend(read.request for read in self.pending_reads)
        self.dropped_reads.extend(self.reads_before_commit)
        self.pending_reads, self.reads_before_commit = [], []

    def become_follower(self, term: int, lead: str | None) -> None:
        self.reset(term)
        self.role, self.lead = "follower", lead

    def become_pre_candidate(self) -> None:
        self.role, self.lead, self.votes = "pre_candidate", None, {}

    def become_candidate(self) -> None:
        self.reset(self.term + 1)
        self.role, self.vote = "candidate", self.id

    def become_leader(self) -> None:
        self.reset(self.term)
        self.role, self.lead = "leader", self.id
        last = self.log.last_index()
        self.progress = {member: Progress(next=last + 1, recent_active=True)
                         for member in self.membership.members}
        self.pending_conf_index = last
        self.append_entries([Entry(self.term, last + 1, "noop")])
        self.broadcast_append()

    # -- elections -------------------------------------------------------------------------
    def tick(self) -> None:
        self.ticks += 1
        if self.role == "leader":
            self.tick_leader()
            return
        self.election_elapsed += 1
        if self.promotable() and self.election_elapsed >= self.randomized_timeout:
            self.election_elapsed = 0
            self.campaign(pre_vote=self.config.pre_vote)

    def tick_leader(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.config.election_ticks:
            self.election_elapsed = 0
            if self.config.check_quorum and not self.quorum_active():
                self.become_follower(self.term, None)
                return
            self.lead_transferee = None
        if self.heartbeat_elapsed >= self.config.heartbeat_ticks:
            self.heartbeat_elapsed = 0
            self.broadcast_heartbeat()

    def quorum_active(self) -> bool:
        active = 0
        for member in self.membership.voters:
            progress = self.progress.get(member)
            if member == self.id or (progress is not None and progress.recent_active):
                active += 1
        for progress in self.progress.values():
            progress.recent_active = False
        return active >= self.membership.quorum()

    def campaign(self, pre_vote: bool, force: bool = False) -> None:
        if pre_vote:
            self.become_pre_candidate()
            kind, term = MessageType.PRE_VOTE, self.term + 1
        else:
            self.become_candidate()
            kind, term = MessageType.VOTE, self.term
        self.record_vote(self.id, granted=True)
        if self.role not in ("pre_candidate", "candidate"):
            return  # a single voter won at once
        for peer in sorted(self.membership.voters - {self.id}):
            self.send(kind, peer, term=term, index=self.log.last_index(),
                      log_term=self.log.last_term(), force=force)

    def leader_gone(self, peer: str) -> None:
        """The host learned that ``peer``, this follower's leader, has stopped for good (its
        process died): elect a successor without waiting out the election timeout. The first
        surviving voter in id order campaigns at once, forced past the other voters' leases
        (the leader that held them is gone); the others drop the leader and campaign
        ``GONE_STAGGER_TICKS`` ticks later per place, in case the first cannot win."""
        if self.role != "follower" or self.lead != peer or not self.promotable():
            return
        survivors = sorted(self.membership.voters - {peer})
        place = survivors.index(self.id)
        if place == 0:
            self.campaign(pre_vote=False, force=True)
        else:
            self.lead = None
            self.randomized_timeout = self.election_elapsed + place * GONE_STAGGER_TICKS

    def record_vote(self, voter: str, granted: bool) -> None:
        self.votes.setdefault(voter, granted)
        voters = self.membership.voters
        yes = sum(1 for member, vote in self.votes.items() if vote and member in voters)
        no = sum(1 for member, vote in self.votes.items() if not vote and member in voters)
        if yes >= self.membership.quorum():
            if self.role == "pre_candidate":
                self.campaign(pre_vote=False)
            else:
                self.become_leader()
        elif no > len(voters) - self.membership.quorum():
            self.become_follower(self.term, None)

    def handle_vote_request(self, message: Message) -> None:
        pre = message.type == MessageType.PRE_VOTE
        can_vote = (self.vote == message.src or (self.vote is None and self.lead is None)
                    or (pre and message.term > self.term))
        reply = MessageType.PRE_VOTE_RESP if pre else MessageType.VOTE_RESP
        up_to_date = self.log.up_to_date(message.index, message.log_term)
        if can_vote and up_to_date:
            self.send(reply, message.src, term=message.term)
            if not pre:
                self.election_elapsed = 0
                self.vote = message.src
            return
        self.send(reply, message.src, reject=True)
        if message.force and not pre and not up_to_date and self.promotable():
            # A forced candidate (its leader gone, or a transfer) that cannot win for its
            # shorter log: this voter's log is longer, so it takes over at once.
            self.campaign(pre_vote=False, force=True)

    # -- replication (consensus/raft/replication.py) -------------------------------------
    @abstractmethod
    def append_entries(self, entries: list[Entry]) -> None: ...

    @abstractmethod
    def broadcast_append(self) -> None: ...

    @abstractmethod
    def broadcast_heartbeat(self) -> None: ...
