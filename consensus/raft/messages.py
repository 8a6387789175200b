"""The values the pure Raft core takes in and hands out: log entries, messages between members,
the durable hard state, snapshots and the ``Ready`` batch of work for the host (etcd-raft's
shape: the core decides, the host persists, sends and applies)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal

__all__ = [
    "ConfChange", "Entry", "EntryKind", "HardState", "Membership", "Message", "MessageType",
    "ReadState", "Ready", "Snapshot",
]

EntryKind = Literal["normal", "conf", "noop"]


class MessageType(str, Enum):
    APPEND = "append"
    APPEND_RESP = "append_resp"
    VOTE = "vote"
    VOTE_RESP = "vote_resp"
    PRE_VOTE = "pre_vote"
    PRE_VOTE_RESP = "pre_vote_resp"
    HEARTBEAT = "heartbeat"
    HEARTBEAT_RESP = "heartbeat_resp"
    SNAPSHOT = "snapshot"
    TIMEOUT_NOW = "timeout_now"


@dataclass(frozen=True)
class ConfChange:
    """One single-server membership change."""

    op: Literal["add_learner", "promote", "add_voter", "remove"]
    node: str


@dataclass(frozen=True)
class Membership:
    """Voters decide elections and commits; learners only receive the log."""

    voters: frozenset[str]
    learners: frozenset[str] = frozenset()

    @property
    def members(self) -> frozenset[str]:
        return self.voters | self.learners

    def quorum(self) -> int:
        return len(self.voters) // 2 + 1

    def apply(self, change: ConfChange) -> Membership:
        voters, learners = set(self.voters), set(self.learners)
        if change.op == "add_learner":
            if change.node not in voters:
                learners.add(change.node)
        elif change.op in ("promote", "add_voter"):
            learners.discard(change.node)
            voters.add(change.node)
        else:
            voters.discard(change.node)
            learners.discard(change.node)
        return Membership(frozenset(voters), frozenset(learners))


@dataclass(frozen=True)
class Entry:
    term: int
    index: int
    kind: EntryKind = "normal"
    data: Any = None


@dataclass(frozen=True)
class Snapshot:
    """The state machine's state after applying ``index`` (of ``term``), with the membership in
    force at that point."""

    index: int
    term: int
    membership: Membership
    data: Any = None


@dataclass(frozen=True)
class HardState:
    """What must be durable before the member answers anyone."""

    term: int = 0
    vote: str | None = None
    commit: int = 0


@dataclass(frozen=True)
class Message:
    type: MessageType
    src: str
    dst: str
    term: int
    log_term: int = 0
    index: int = 0
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    reject: bool = False
    hint_index: int = 0
    hint_term: int = 0
    snapshot: Snapshot | None = None
    context: int = 0
    force: bool = False


@dataclass(frozen=True)
class ReadState:
    """A read may be served once the local state machine applied ``index``."""

    request: int
    index: int


@dataclass
class Ready:
    """Work for the host, in this order: persist ``hard_state``, ``snapshot`` and ``entries``
    (an entry replaces any stored entry of its index and every later one), then send
    ``messages``, restore ``snapshot`` into the machine, apply ``committed``, serve ``reads``;
    then call ``advance``. ``must_sync``: what is persisted must be durable (fsynced) before
    anything else; False when only the commit index moved (etcd's ``MustSync``: a commit index
    lost in a crash is learned again from the leader), so it may ride along with the next sync.
    """

    hard_state: HardState | None = None
    snapshot: Snapshot | None = None
    entries: list[Entry] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    committed: list[Entry] = field(default_factory=list)
    reads: list[ReadState] = field(default_factory=list)
    dropped_reads: list[int] = field(default_factory=list)
    must_sync: bool = False

    def empty(self) -> bool:
        return not (self.hard_state or self.snapshot or self.entries or self.messages
                    or self.committed or self.reads or self.dropped_reads)
