"""A deterministic simulated network for the pure Raft core (the 6.824 test plan's harness):
members with durable storage that survives a crash, a seeded network that can drop, delay
(reorder) and partition messages, and the Raft safety properties checked on every step."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from herd.consensus.raft import (
    ConfChange,
    Entry,
    HardState,
    Membership,
    Message,
    RaftConfig,
    RaftNode,
    Ready,
    Snapshot,
)


@dataclass
class Storage:
    hard_state: HardState = field(default_factory=HardState)
    snapshot: Snapshot | None = None
    entries: list[Entry] = field(default_factory=list)

    #: A commit-only change the member buffered without an fsync (``must_sync`` False): lost
    #: in a crash unless a later synced write carried it, as in herd's write-ahead log.
    unsynced: HardState | None = None

    def persist(self, ready: Ready) -> None:
        if not ready.must_sync:
            self.unsynced = ready.hard_state or self.unsynced
            return
        if self.unsynced is not None:
            self.hard_state, self.unsynced = self.unsynced, None
        if ready.hard_state is not None:
            self.hard_state = ready.hard_state
        if ready.snapshot is not None:
            self.snapshot, self.entries = ready.snapshot, []
        if ready.entries:
            first = ready.entries[0].index
            self.entries = [e for e in self.entries if e.index < first] + ready.entries


class SafetyViolation(AssertionError):
    pass


class Sim:
    def __init__(self, size: int = 3, seed: int = 0, *, drop: float = 0.0,
                 reorder: bool = False, config: RaftConfig | None = None,
                 learners: tuple[str, ...] = ()) -> None:
        self.ids = [f"n{i}" for i in range(1, size + 1)]
        self.membership = Membership(frozenset(self.ids), frozenset(learners))
        self.config = config or RaftConfig(election_ticks=10, seed=seed)
        self.random = random.Random(seed)
        self.drop, self.reorder = drop, reorder
        self.storage: dict[str, Storage] = {}
        self.nodes: dict[str, RaftNode] = {}
        self.machines: dict[str, list[tuple[int, Any]]] = {}
        self.queue: list[Message] = []
        self.cut: set[str] = set()           # members cut off from everyone
        self.groups: list[set[str]] | None = None  # a partition into sides
        self.committed: dict[int, Entry] = {}  # every applied entry, by index
        self.leaders: dict[int, str] = {}       # term -> the one leader of it
        self.commit_terms: dict[int, int] = {}  # index -> newest leader term when first applied
        self.sent = 0
        self.keep: Callable[[Message], bool] = lambda message: True  # False drops a message
        self.reads: dict[str, list[tuple[int, int]]] = {}
        for node_id in self.ids + list(learners):
            self.add_member(node_id)

    # -- members ---------------------------------------------------------------------------
    def add_member(self, node_id: str, membership: Membership | None = None) -> None:
        self.storage.setdefault(node_id, Storage())
        self.machines[node_id] = []
        self.reads.setdefault(node_id, [])
        self.start(node_id, membership or self.membership)

    def start(self, node_id: str, membership: Membership) -> None:
        store = self.storage[node_id]
        self.nodes[node_id] = RaftNode(node_id, membership, self.config, store.hard_state,
                                       store.snapshot, list(store.entries))
        self.machines[node_id] = list(store.snapshot.data) if store.snapshot else []

    def crash(self, node_id: str) -> None:
        del self.nodes[node_id]
        self.storage[node_id].unsynced = None
        self.queue = [m for m in self.queue if m.dst != node_id and m.src != node_id]

    def restart(self, node_id: str) -> None:
        self.start(node_id, self.membership)
        self.process(node_id)

    # -- network ---------------------------------------------------------------------------
    def connected(self, a: str, b: str) -> bool:
        if a in self.cut or b in self.cut:
            return False
        if self.groups is None:
            return True
        return any(a in side and b in side for side in self.groups)

    def partition(self, *sides: set[str]) -> None:
        self.groups = [set(side) for side in sides]

    def heal(self) -> None:
        self.groups, self.cut = None, set()

    def process(self, node_id: str) -> Ready:
        node = self.nodes[node_id]
        ready = node.ready()
        self.storage[node_id].persist(ready)
        for message in ready.messages:
            self.sent += 1
            if self.drop and self.random.random() < self.drop:
                continue
            self.queue.append(message)
        if ready.snapshot is not None:
            self.machines[node_id] = list(ready.snapshot.data)
        for entry in ready.committed:
            self.apply(node_id, entry)
        self.reads[node_id].extend((read.request, read.index) for read in ready.reads)
        if node.role == "leader":
            if node.term not in self.leaders:
                self.check_leader_completeness(node)
            holder = self.leaders.setdefault(node.term, node_id)
            if holder != node_id:
                raise SafetyViolation(f"two leaders in term {node.term}: {holder}, {node_id}")
        return ready

    def apply(self, node_id: str, entry: Entry) -> None:
        self.commit_terms.setdefault(entry.index, max(self.leaders, default=0))
        known = self.committed.setdefault(entry.index, entry)
        if known != entry:
            raise SafetyViolation(f"{node_id} applied {entry} where {known} was applied")
        if entry.kind == "normal":
            self.machines[node_id].append((entry.index, entry.data))

    def check_leader_completeness(self, leader: RaftNode) -> None:
        """Every entry committed in an earlier term is in a new leader's log."""
        for index, entry in self.committed.items():
            if self.commit_terms[index] >= leader.term or index <= leader.log.snapshot_index:
                continue
            if leader.log.term_at(index) != entry.term:
                raise SafetyViolation(f"leader {leader.id} lacks committed {entry}")

    def check_log_matching(self) -> None:
        logs = {node_id: {e.index: e for e in node.log.entries}
                for node_id, node in self.nodes.items()}
        ids = sorted(logs)
        for position, a in enumerate(ids):
            for b in ids[position + 1:]:
                common = sorted(set(logs[a]) & set(logs[b]), reverse=True)
                agreed = False
                for index in common:
                    if logs[a][index].term == logs[b][index].term:
                        agreed = True
                    if agreed and logs[a][index] != logs[b][index]:
                        raise SafetyViolation(f"logs of {a} and {b} differ at {index}")

    def deliver(self, limit: int = 10_000) -> None:
        """Deliver queued messages (in a seeded random order when reordering) until quiet."""
        for _ in range(limit):
            if not self.queue:
                return
            position = self.random.randrange(len(self.queue)) if self.reorder else 0
            message = self.queue.pop(position)
            if (message.dst in self.nodes and self.connected(message.src, message.dst)
                    and self.keep(message)):
                self.nodes[message.dst].step(message)
                self.process(message.dst)

    def tick(self, rounds: int = 1) -> None:
        for _ in range(rounds):
            for node_id in sorted(self.nodes):
                self.nodes[node_id].tick()
                self.process(node_id)
            self.deliver()

    # -- clients ---------------------------------------------------------------------------
    def leader(self) -> str | None:
        leaders = [n.id for n in self.nodes.values() if n.role == "leader"]
        return max(leaders, key=lambda i: self.nodes[i].term, default=None)

    def wait_leader(self, rounds: int = 200) -> str:
        for _ in range(rounds):
            self.tick()
            leader = self.leader()
            if leader is not None and self.nodes[leader].committed_in_term():
                return leader
        raise AssertionError("no leader elected")

    def propose(self, command: Any) -> int | None:
        leader = self.leader()
        if leader is None:
            return None
        indexes = self.nodes[leader].propose([command])
        self.process(leader)
        return indexes[0] if indexes else None

    def applied_count(self, command: Any) -> int:
        return sum(1 for machine in self.machines.values()
                   if any(data == command for _, data in machine))

    def one(self, command: Any, expected: int, rounds: int = 300) -> int:
        """6.824's ``one()``: submit until ``expected`` members applied ``command``."""
        for round_ in range(rounds):
            if self.applied_count(command) >= expected:
                return next(i for i, d in self.machines[self.any_holder(command)] if d == command)
            if round_ % 30 == 0 and self.applied_count(command) == 0:
                self.propose(command)
            self.tick()
        raise AssertionError(f"{command!r} reached {self.applied_count(command)} < {expected}")

    def any_holder(self, command: Any) -> str:
        return next(node_id for node_id, machine in self.machines.items()
                    if any(data == command for _, data in machine))

    def change(self, change: ConfChange, rounds: int = 200) -> None:
        for _ in range(rounds):
            leader = self.leader()
            if leader is not None and self.nodes[leader].change_membership(change) is not None:
                self.process(leader)
                self.tick(5)
                return
            self.tick()
        raise AssertionError(f"membership change {change} not accepted")
