"""ReadIndex and lease reads on the pure core, and the Raft safety properties (election safety,
log matching, leader completeness, state-machine safety) over hypothesis-driven schedules of
crashes, restarts, cuts, partitions, drops and proposals."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from raft_sim import Sim


def test_read_index_waits_for_a_quorum_heartbeat() -> None:
    sim = Sim(3, seed=41)
    leader = sim.wait_leader()
    sim.one("w", 3)
    node = sim.nodes[leader]
    assert node.read_index(7)
    ready = node.ready()
    assert not ready.reads, "not before a quorum answered"
    sim.queue.extend(ready.messages)
    sim.deliver()
    assert sim.reads[leader][-1] == (7, node.log.commit)


def test_read_index_of_a_deposed_leader_is_dropped_not_served() -> None:
    sim = Sim(3, seed=42)
    leader = sim.wait_leader()
    sim.one("w", 3)
    sim.cut = {leader}
    node = sim.nodes[leader]
    node.read_index(8)
    sim.process(leader)
    sim.tick(40)
    assert (8, node.log.commit) not in sim.reads[leader]
    assert node.role != "leader"


def test_lease_read_is_served_at_once_within_the_lease_and_not_after() -> None:
    sim = Sim(3, seed=43)
    leader = sim.wait_leader()
    sim.tick(2)
    node = sim.nodes[leader]
    assert node.lease_ticks_left() > 0
    node.read_index(9, lease=True)
    assert [r.request for r in node.ready().reads] == [9], "no round trip"
    sim.cut = {leader}
    for _ in range(node.config.election_ticks):
        node.tick()
        node.ready()
    assert node.lease_ticks_left() == 0
    node.read_index(10, lease=True)
    assert not node.ready().reads, "an expired lease falls back to ReadIndex"


def test_followers_refuse_reads_and_proposals() -> None:
    sim = Sim(3, seed=44)
    leader = sim.wait_leader()
    follower = sim.nodes[next(n for n in sim.ids if n != leader)]
    assert not follower.read_index(1)
    assert follower.propose(["x"]) is None


operation = st.one_of(
    st.tuples(st.just("propose"), st.integers(0, 4)),
    st.tuples(st.just("tick"), st.integers(1, 15)),
    st.tuples(st.just("crash"), st.integers(0, 4)),
    st.tuples(st.just("restart"), st.integers(0, 4)),
    st.tuples(st.just("cut"), st.integers(0, 4)),
    st.tuples(st.just("split"), st.integers(1, 2)),
    st.tuples(st.just("heal"), st.just(0)),
    st.tuples(st.just("compact"), st.integers(0, 4)),
)


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 1000), schedule=st.lists(operation, min_size=5, max_size=40),
       drop=st.sampled_from([0.0, 0.1]))
def test_safety_properties_hold_under_any_schedule(seed: int, schedule: list[tuple[str, int]],
                                                   drop: float) -> None:
    sim = Sim(5, seed=seed, drop=drop, reorder=drop > 0)
    counter = 0
    for kind, arg in schedule:
        node_id = sim.ids[arg % 5]
        if kind == "propose":
            counter += 1
            sim.propose(f"op-{counter}")
        elif kind == "tick":
            sim.tick(arg)
        elif kind == "crash" and node_id in sim.nodes and len(sim.nodes) > 1:
            sim.crash(node_id)
        elif kind == "restart" and node_id not in sim.nodes:
            sim.restart(node_id)
        elif kind == "cut":
            sim.cut = {node_id}
        elif kind == "split":
            sim.partition(set(sim.ids[:arg + 1]), set(sim.ids[arg + 1:]))
        elif kind == "heal":
            sim.heal()
        elif kind == "compact" and node_id in sim.nodes:
            node = sim.nodes[node_id]
            if node.log.applied > node.log.snapshot_index:
                snapshot = node.compact(tuple(sim.machines[node_id]))
                store = sim.storage[node_id]
                store.snapshot = snapshot
                store.entries = [e for e in store.entries if e.index > snapshot.index]
        sim.check_log_matching()  # election and state-machine safety are checked on each step
    sim.heal()
    sim.drop = 0.0
    for node_id in sim.ids:
        if node_id not in sim.nodes:
            sim.restart(node_id)
    sim.one("final", 5, rounds=800)
    sim.check_log_matching()
    machines = list(sim.machines.values())
    assert all(m == machines[0] for m in machines), "every member applied the same log"
