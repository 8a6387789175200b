"""Snapshots (2D: compaction, InstallSnapshot to a member behind the log, restart from a
snapshot), single-server membership changes with learners, and leadership transfer."""

from __future__ import annotations

from raft_sim import Sim

from herd.consensus.raft import ConfChange, Membership, MessageType


def compact_all(sim: Sim) -> None:
    for node_id, node in sim.nodes.items():
        if node.log.applied > node.log.snapshot_index:
            snapshot = node.compact(tuple(sim.machines[node_id]))
            store = sim.storage[node_id]
            store.snapshot = snapshot
            store.entries = [e for e in store.entries if e.index > snapshot.index]


def test_install_snapshot_to_a_member_behind_the_compacted_log() -> None:
    sim = Sim(3, seed=31)
    leader = sim.wait_leader()
    behind = next(n for n in sim.ids if n != leader)
    sim.crash(behind)
    for i in range(100):
        sim.propose(i)
    sim.tick(5)
    compact_all(sim)
    assert sim.nodes[leader].log.first_index() > 50
    sim.restart(behind)
    sim.one("after", 3)
    assert [d for _, d in sim.machines[behind]][-101:] == list(range(100)) + ["after"]
    assert sim.storage[behind].snapshot is not None, "it caught up by a snapshot"


def test_restart_from_a_snapshot_and_the_rest_of_the_log() -> None:
    sim = Sim(3, seed=32)
    sim.wait_leader()
    for i in range(20):
        sim.one(i, 3)
    compact_all(sim)
    sim.one(20, 3)
    for node_id in sim.ids:
        sim.crash(node_id)
    for node_id in sim.ids:
        sim.restart(node_id)
    sim.one(21, 3)
    assert [d for _, d in sim.machines["n2"]] == list(range(22))


def test_snapshots_under_an_unreliable_network() -> None:
    sim = Sim(3, seed=33, drop=0.1, reorder=True)
    sim.wait_leader()
    for round_ in range(30):
        sim.propose(round_)
        sim.tick(2)
        if round_ % 10 == 9:
            compact_all(sim)
            victim = sim.random.choice(sim.ids)
            sim.crash(victim)
            sim.tick(3)
            sim.restart(victim)
    sim.drop = 0.0
    sim.one("done", 3, rounds=600)
    machines = list(sim.machines.values())
    assert all(m == machines[0] for m in machines)


def test_a_learner_catches_up_without_voting_then_is_promoted() -> None:
    sim = Sim(3, seed=34)
    sim.wait_leader()
    for i in range(30):
        sim.propose(i)
    sim.tick(3)
    sim.change(ConfChange("add_learner", "n4"))
    sim.add_member("n4", Membership(frozenset(sim.ids), frozenset({"n4"})))
    sim.tick(10)
    leader = sim.nodes[sim.leader() or ""]
    assert leader.membership.learners == {"n4"} and len(leader.membership.voters) == 3
    assert sim.nodes["n4"].log.last_index() == leader.log.last_index()
    assert sim.nodes["n4"].role == "follower"
    sim.change(ConfChange("promote", "n4"))
    assert sim.nodes[sim.leader() or ""].membership.voters == {"n1", "n2", "n3", "n4"}
    sim.ids.append("n4")
    sim.one("four", 4)


def test_remove_a_voter_and_the_rest_keep_committing() -> None:
    sim = Sim(3, seed=35)
    leader = sim.wait_leader()
    victim = next(n for n in sim.ids if n != leader)
    sim.crash(victim)
    sim.change(ConfChange("remove", victim))
    assert sim.nodes[leader].membership.voters == set(sim.ids) - {victim}
    survivor = next(n for n in sim.ids if n not in (leader, victim))
    sim.cut = {survivor}
    index = sim.nodes[leader].propose(["alone?"])
    sim.tick(3)
    assert index is not None and sim.nodes[leader].log.commit < index[0], "2 voters: quorum 2"
    sim.heal()
    sim.tick(5)
    assert sim.nodes[leader].log.commit >= index[0]


def test_removing_the_leader_makes_it_step_down() -> None:
    sim = Sim(3, seed=36)
    leader = sim.wait_leader()
    sim.change(ConfChange("remove", leader))
    sim.tick(60)
    new = sim.leader()
    assert new not in (None, leader)
    assert leader not in sim.nodes[new].membership.voters


def test_one_membership_change_at_a_time() -> None:
    sim = Sim(3, seed=37)
    leader = sim.nodes[sim.wait_leader()]
    assert leader.change_membership(ConfChange("add_learner", "n4")) is not None
    assert leader.change_membership(ConfChange("add_learner", "n5")) is None


def test_leadership_transfer_to_an_up_to_date_follower() -> None:
    sim = Sim(3, seed=38)
    leader = sim.wait_leader()
    sim.one("x", 3)
    target = next(n for n in sim.ids if n != leader)
    assert sim.nodes[leader].transfer_leadership(target)
    assert sim.nodes[leader].propose(["during"]) is None, "no proposals while transferring"
    sim.process(leader)
    sim.deliver()
    assert sim.leader() == target
    sim.one("y", 3)


def test_leadership_transfer_to_a_lagging_follower_catches_it_up_first() -> None:
    sim = Sim(3, seed=39)
    leader = sim.wait_leader()
    target = next(n for n in sim.ids if n != leader)
    sim.cut = {target}
    for i in range(10):
        sim.one(i, 2)
    sim.heal()
    sim.nodes[leader].transfer_leadership(target)
    sim.process(leader)
    sim.tick(5)
    assert sim.leader() == target
    assert sim.nodes[target].log.last_index() >= sim.nodes[leader].log.last_index()


def test_timeout_now_is_the_only_vote_that_overrides_leader_stickiness() -> None:
    sim = Sim(3, seed=40)
    leader = sim.wait_leader()
    target = next(n for n in sim.ids if n != leader)
    sim.nodes[leader].transfer_leadership(target)
    messages = sim.nodes[leader].ready().messages
    assert [m.type for m in messages] == [MessageType.TIMEOUT_NOW]
    sim.queue.extend(messages)
    sim.deliver()
    assert sim.nodes[target].role == "leader"
