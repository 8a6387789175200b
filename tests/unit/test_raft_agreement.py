"""6.824's agreement tests (2B) on the pure Raft core: the log reaches every member, commits
need a majority, divergent logs are repaired with fast backtracking, and batching keeps the
message count small."""

from __future__ import annotations

from raft_sim import Sim

from herd.consensus.raft import MessageType


def test_basic_agreement_in_log_order() -> None:
    sim = Sim(3, seed=11)
    sim.wait_leader()
    indexes = [sim.one(f"cmd-{i}", 3) for i in range(5)]
    assert indexes == sorted(indexes) and len(set(indexes)) == 5
    assert sim.machines["n1"] == sim.machines["n2"] == sim.machines["n3"]


def test_fail_agreement_a_disconnected_follower_catches_up() -> None:
    sim = Sim(3, seed=12)
    leader = sim.wait_leader()
    sim.one("a", 3)
    follower = next(n for n in sim.ids if n != leader)
    sim.cut = {follower}
    for command in ("b", "c", "d"):
        sim.one(command, 2)
    sim.heal()
    sim.one("e", 3)
    assert [d for _, d in sim.machines[follower]] == ["a", "b", "c", "d", "e"]


def test_no_agreement_without_a_majority() -> None:
    sim = Sim(5, seed=13)
    leader = sim.wait_leader()
    sim.one("a", 5)
    sim.cut = set([n for n in sim.ids if n != leader][:3])
    index = sim.nodes[leader].propose(["lost?"])
    assert index is not None
    sim.tick(5)
    assert sim.nodes[leader].log.commit < index[0], "committed without a majority"
    sim.heal()
    sim.one("b", 5)


def test_concurrent_starts_get_distinct_indexes() -> None:
    sim = Sim(3, seed=14)
    leader = sim.wait_leader()
    indexes = sim.nodes[leader].propose([f"c{i}" for i in range(20)])
    assert indexes is not None and len(set(indexes)) == 20
    sim.tick(5)
    assert [d for _, d in sim.machines[leader]][-20:] == [f"c{i}" for i in range(20)]


def test_rejoin_of_a_partitioned_leader_discards_its_uncommitted_entries() -> None:
    sim = Sim(3, seed=15)
    old = sim.wait_leader()
    sim.one(101, 3)
    sim.cut = {old}
    sim.nodes[old].propose([102, 103, 104])
    sim.process(old)
    sim.one(103, 2)
    new = sim.leader()
    sim.cut = {new}
    sim.tick(60)  # the old leader and the third member elect (the old one may win)
    sim.one(104, 2)
    sim.heal()
    sim.one(105, 3)
    assert [d for _, d in sim.machines[old]] == [101, 103, 104, 105]


def test_backup_a_leader_backs_up_quickly_over_many_wrong_entries() -> None:
    sim = Sim(5, seed=16)
    leader = sim.wait_leader()
    sim.one("start", 5)
    others = [n for n in sim.ids if n != leader]
    sim.partition({leader, others[0]}, set(others[1:]))
    sim.nodes[leader].propose([f"lost-{i}" for i in range(50)])
    sim.process(leader)
    sim.tick(60)
    for i in range(50):
        sim.propose(f"good-{i}")
    sim.tick(10)
    sim.heal()
    before = sim.sent
    sim.one("end", 5)
    assert all(not any(str(d).startswith("lost") for _, d in m) for m in sim.machines.values())
    assert sim.sent - before < 400, "fast backtracking, not one entry per round trip"


def test_rpc_count_stays_small_with_batching() -> None:
    sim = Sim(3, seed=17)
    leader = sim.wait_leader()
    before = sim.sent
    sim.nodes[leader].propose([f"x{i}" for i in range(200)])
    sim.process(leader)
    sim.deliver()
    appends = sim.sent - before
    assert appends <= 12, f"200 commands as a few batched appends, not {appends} messages"
    assert sim.nodes[leader].log.commit >= 200


def test_pipelining_keeps_several_appends_in_flight() -> None:
    sim = Sim(3, seed=18)
    leader = sim.wait_leader()
    sim.tick(2)
    node = sim.nodes[leader]
    for i in range(5):
        node.propose([f"p{i}"])
    sent = [m for m in node.ready().messages if m.type == MessageType.APPEND]
    assert len(sent) == 10, "each proposal goes out at once to both followers, unacknowledged"


def test_unreliable_agreement() -> None:
    sim = Sim(5, seed=19, drop=0.1, reorder=True)
    sim.wait_leader()
    for i in range(30):
        sim.propose(f"u{i}")
        sim.tick()
    sim.drop = 0.0
    sim.one("final", 5, rounds=500)
    sim.check_log_matching()
