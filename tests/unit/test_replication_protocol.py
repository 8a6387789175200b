"""The pure replication core under random schedules: writes at several replicas, message loss,
duplication, reordering, partitions and heals, restarts that lose everything volatile (buffer,
acks, sequence numbers) but keep what was made durable, and garbage injected on the wire.
After healing and syncing, every replica must hold the same state, and every acknowledged
write must be there per the CRDT's semantics (an oracle records each ack)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from herd.replication.core import CoreConfig, ReplicaCore

REGIONS = ("a", "b", "c")


@dataclass
class Node:
    """A replica plus what survives its crash: its durable journal."""

    config: CoreConfig
    core: ReplicaCore
    durable: list[dict[str, Any]] = field(default_factory=list)
    epoch: int = 1

    def persist(self) -> None:
        self.durable.extend(self.core.take_journal())

    def restart(self) -> None:
        self.epoch += 1
        self.core = ReplicaCore.restore(self.config, self.epoch, None, list(self.durable))

    def replace(self) -> None:
        """Restarted on another node with ``durability="file"``: nothing survives."""
        self.durable = []
        self.restart()


@dataclass
class Oracle:
    """Acknowledged writes and what they oblige."""

    added: set[tuple[str, str]] = field(default_factory=set)
    removed: set[tuple[str, str]] = field(default_factory=set)
    counters: dict[str, int] = field(default_factory=dict)
    written: dict[str, set[Any]] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)


class World:
    def __init__(self, kind: str, max_entries: int = 200_000) -> None:
        self.nodes = {r: Node(CoreConfig("s", r, REGIONS, kind, 64 * 1024, max_entries),
                              ReplicaCore(CoreConfig("s", r, REGIONS, kind, 64 * 1024,
                                                     max_entries), 1))
                      for r in REGIONS}
        self.wire: list[tuple[str, str, bytes]] = []
        self.cut: set[frozenset[str]] = set()
        self.oracle = Oracle()
        self.counter = 0

    def deliver(self, index: int, now_ms: int = 0) -> None:
        src, dst, raw = self.wire.pop(index % len(self.wire))
        if frozenset((src, dst)) in self.cut:
            return  # lost in the partition
        node = self.nodes[dst]
        reply = node.core.handle(raw, now_ms)
        node.persist()  # durable before the reply (the ack) leaves
        if reply is not None:
            self.wire.append((dst, src, reply))

    def write(self, region: str, action: int, key: int) -> None:
        node = self.nodes[region]
        self.counter += 1
        name = f"k{key}"
        if node.core.config.kind == "lww_map" or action == 0:
            value = f"{region}-{self.counter}"
            node.core.write("put", f"r{key}", value)
            self.oracle.written.setdefault(f"r{key}", set()).add(value)
        elif action == 1:
            element = f"{region}-{self.counter}"
            node.core.write("add", f"s{key}", element)
            self.oracle.added.add((f"s{key}", element))
        elif action == 2:
            present = node.core.state.get(f"s{key}") or set()
            if present:
                element = sorted(present)[0]
                node.core.write("discard", f"s{key}", element)
                self.oracle.removed.add((f"s{key}", element))
        elif action == 3:
            node.core.write("incr", name, self.counter % 7 - 3)
            self.oracle.counters[name] = self.oracle.counters.get(name, 0) + self.counter % 7 - 3
        else:
            node.core.write("delete", f"r{key}")
            self.oracle.deleted.add(f"r{key}")
        node.persist()  # acknowledged from here on

    def settle(self) -> None:
        """Heal, deliver what is in flight, then let every replica push to every peer until
        none has anything left to send. Only the pushes (delta intervals, and the digest
        exchanges they fall back to), no extra anti-entropy: they alone must converge."""
        self.cut.clear()
        while self.wire:
            self.deliver(0)
        for _ in range(100):
            sent = False
            for src in REGIONS:
                for dst in REGIONS:
                    message = None if src == dst else self.nodes[src].core.next_message(dst)
                    if message is not None:
                        sent = True
                        self.wire.append((src, dst, message))
                        while self.wire:
                            self.deliver(0)
            if not sent:
                return
        raise AssertionError("pushes did not quiesce")

    def check(self) -> None:
        states = {r: n.core.state.items() for r, n in self.nodes.items()}
        first = states["a"]
        for region, items in states.items():
            assert items == first, (region, items, first)
        payloads = [n.core.state.payload() for n in self.nodes.values()]
        assert all(p == payloads[0] for p in payloads)
        oracle = self.oracle
        for key, element in oracle.added - oracle.removed:
            assert element in first.get(key, set()), (key, element)
        for key, total in oracle.counters.items():
            assert first.get(key, 0) == total, (key, total)
        for key, values in oracle.written.items():
            if key not in oracle.deleted:
                assert first.get(key) in values, (key, first.get(key), values)
            elif key in first:
                assert first[key] in values


ACTIONS = st.lists(st.tuples(st.integers(0, 9), st.integers(0, 2), st.integers(0, 4),
                             st.integers(0, 3), st.integers(0, 1000)), max_size=200)


def run(world: World, schedule: list[tuple[int, int, int, int, int]]) -> None:
    rnd = random.Random(0)
    world.settle()  # every replica knows every peer: later writes travel as delta intervals
    for kind, region_i, action, key, pick in schedule:
        region = REGIONS[region_i]
        other = REGIONS[(region_i + 1 + pick % 2) % 3]
        if kind <= 2:
            world.write(region, action, key)
        elif kind == 3:
            message = world.nodes[region].core.next_message(other)
            if message is not None:
                world.wire.append((region, other, message))
        elif kind == 4 and world.wire:
            world.deliver(pick)
        elif kind == 5 and world.wire:
            world.wire.append(world.wire[pick % len(world.wire)])  # duplicate
        elif kind == 6 and world.wire:
            world.wire.pop(pick % len(world.wire))  # loss
        elif kind == 7:
            link = frozenset((region, other))
            world.cut.symmetric_difference_update({link})  # partition or heal
        elif kind == 8 and pick % 4 == 0:
            world.nodes[region].restart()
        elif kind == 8 and pick % 4 == 1:
            node = world.nodes[region]
            if all(node.core.pending(r) == 0 for r in node.core.peers):
                node.replace()  # every write of it is held by both peers (an 'all' ack)
        elif kind == 8:
            world.wire.append((region, other, world.nodes[region].core.sync_message(other)))
        elif kind == 9 and world.wire:
            src, dst, raw = world.wire[pick % len(world.wire)]
            cut = rnd.randrange(len(raw))
            world.wire.append((src, dst, raw[:cut]))  # truncated: must be rejected
    world.settle()
    world.check()


@settings(max_examples=400)
@given(ACTIONS)
def test_ormap_converges_and_keeps_acknowledged_writes(schedule: list[Any]) -> None:
    run(World("ormap"), schedule)


@settings(max_examples=200)
@given(ACTIONS)
def test_lww_map_converges_and_keeps_acknowledged_writes(schedule: list[Any]) -> None:
    run(World("lww_map"), schedule)


@settings(max_examples=200)
@given(ACTIONS)
def test_truncated_buffers_fall_back_to_digests(schedule: list[Any]) -> None:
    run(World("ormap", max_entries=3), schedule)


# ------------------------------------------------------------------------------ fixed cases

def pair() -> tuple[ReplicaCore, ReplicaCore]:
    world = World("lww_map")
    world.settle()
    return world.nodes["a"].core, world.nodes["b"].core


def test_deltas_flow_with_sequence_numbers_and_acks() -> None:
    a, b = pair()
    a.write("put", "k", 1)
    a.write("put", "j", 2)
    delta = a.next_message("b")
    assert delta is not None and b"delta" in delta
    ack = b.handle(delta, 0)
    assert ack is not None and a.handle(ack, 0) is None
    assert b.state.items() == {"k": 1, "j": 2} and a.pending("b") == 0
    assert b.handle(delta, 0) is not None and b.rejected["stale_seq"] == 1  # replayed
    assert a.next_message("b") is None


def test_gap_and_unknown_epoch_ask_for_a_digest_exchange() -> None:
    a, b = pair()
    a.write("put", "k", 1)
    first = a.next_message("b")
    a.peers["b"].acked = 1  # pretend "b" acknowledged the first: the next delta skips it
    a.write("put", "j", 2)
    gap = a.next_message("b")
    assert first is not None and gap is not None
    reply = b.handle(gap, 0)
    assert reply is not None and b"need_sync" in reply and b"gap" in reply
    state = a.handle(reply, 0)
    assert state is not None and b'"kind":"state"' in state
    assert a.handle(b.handle(state, 0) or b"", 0) is None
    assert b.state.items() == {"k": 1, "j": 2}


def test_bad_messages_are_rejected_with_reasons_and_never_merged() -> None:
    a, b = pair()
    a.write("put", "k", 1)
    good = a.next_message("b")
    assert good is not None
    cases = {
        "malformed": [good[:-5], b"\xff\xfe", b"[]", good.replace(b'"first":', b'"frist":')],
        "oversized": [good + b" " * (64 * 1024)],
        "version": [good.replace(b'"v":1', b'"v":2')],
        "wrong_store": [good.replace(b'"store":"s"', b'"store":"t"')],
        "wrong_target": [good.replace(b'"target":"b"', b'"target":"c"')],
        "unknown_origin": [good.replace(b'"origin":"a"', b'"origin":"z"')],
        "stale_epoch": [good.replace(b'"epoch":1,', b'"epoch":0,')],
        "wrong_epoch": [good.replace(b'"target_epoch":1', b'"target_epoch":9')],
        "bad_payload": [good.replace(b'"type":"AWLWWMap"', b'"type":"ORSet"')],
    }
    for reason, messages in cases.items():
        for raw in messages:
            reply = b.handle(raw, 0)
            assert reply is not None and b'"kind":"reject"' in reply, (reason, reply)
    assert b.state.items() == {}
    assert b.rejected["malformed"] >= 4
    for reason in cases:
        if reason != "stale_epoch":  # epoch 0 fails validation (epochs start at 1)
            assert b.rejected[reason] >= 1, reason
    ack = b.handle(good, 0)
    assert ack is not None and b.state.items() == {"k": 1}


def _exchange(sender: ReplicaCore, receiver: ReplicaCore, now_ms: int) -> None:
    """Push the sender's next message to the receiver and the replies back, until quiet."""
    message = sender.next_message(receiver.config.region)
    ends = (sender, receiver)
    turn = 1
    while message is not None:
        message = ends[turn].handle(message, now_ms)
        turn = 1 - turn


def test_lag_counts_only_while_a_peer_is_owed_deltas() -> None:
    config = {r: CoreConfig("s", r, ("a", "b"), "lww_map") for r in ("a", "b")}
    a, b = ReplicaCore(config["a"], 1), ReplicaCore(config["b"], 1)
    a.write("put", "k", 1)
    for _ in range(3):  # sync, then the delta and its ack
        _exchange(a, b, 1_000)
    peer = a.status(61_000)["peers"]["b"]
    assert peer["pending"] == 0 and peer["lag_ms"] == 0 and peer["ms_since_ack"] == 60_000
    a.write("put", "k", 2)
    peer = a.status(61_000)["peers"]["b"]
    assert peer["pending"] == 1 and peer["lag_ms"] == 60_000
