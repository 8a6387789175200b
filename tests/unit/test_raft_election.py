"""6.824's election tests (2A) on the pure Raft core, plus PreVote and CheckQuorum."""

from __future__ import annotations

from raft_sim import Sim

from herd.consensus.raft import Message, MessageType


def test_initial_election_elects_one_leader_and_keeps_it() -> None:
    sim = Sim(3, seed=1)
    leader = sim.wait_leader()
    term = sim.nodes[leader].term
    sim.tick(100)
    assert sim.leader() == leader and sim.nodes[leader].term == term, "no reason to re-elect"
    assert {n.lead for n in sim.nodes.values()} == {leader}


def test_re_election_after_the_leader_is_cut_off_and_rejoins() -> None:
    sim = Sim(3, seed=2)
    first = sim.wait_leader()
    sim.cut = {first}
    sim.tick(60)
    second = sim.leader()
    assert second not in (None, first)
    sim.heal()
    sim.tick(30)
    assert sim.leader() == second and sim.nodes[first].role == "follower"
    others = [n for n in sim.ids if n != second]
    sim.cut = {second, others[0]}
    sim.tick(60)
    assert all(sim.nodes[n].role != "leader" or n == second for n in sim.ids)
    assert sim.nodes[second].role != "leader", "CheckQuorum: a leader without a quorum steps down"
    sim.heal()
    assert sim.wait_leader() is not None


def test_many_elections_with_random_cuts_keep_one_leader_per_term() -> None:
    sim = Sim(7, seed=3)
    sim.wait_leader()
    for _ in range(10):
        sim.cut = set(sim.random.sample(sim.ids, 3))
        sim.tick(40)
        sim.heal()
        assert sim.wait_leader() is not None  # Sim raises on two leaders of one term


def test_pre_vote_a_rejoining_member_does_not_depose_a_healthy_leader() -> None:
    sim = Sim(3, seed=4)
    leader = sim.wait_leader()
    follower = next(n for n in sim.ids if n != leader)
    term = sim.nodes[leader].term
    sim.cut = {follower}
    sim.tick(100)  # its elections fail: with PreVote its term does not grow
    assert sim.nodes[follower].term == term
    sim.heal()
    sim.tick(30)
    assert sim.leader() == leader and sim.nodes[leader].term == term


def test_votes_are_ignored_while_a_leader_is_known() -> None:
    sim = Sim(3, seed=5)
    leader = sim.wait_leader()
    node = sim.nodes[next(n for n in sim.ids if n != leader)]
    term = node.term
    node.step(Message(MessageType.VOTE, "n3", node.id, term=term + 5,
                      index=node.log.last_index() + 10, log_term=term + 5))
    assert not [m for m in node.ready().messages if m.type == MessageType.VOTE_RESP]
    assert node.term == term
    node.step(Message(MessageType.VOTE, "n3", node.id, term=term + 5, force=True,
                      index=node.log.last_index() + 10, log_term=term + 5))
    granted = [m for m in node.ready().messages if m.type == MessageType.VOTE_RESP]
    assert node.term == term + 5 and granted and not granted[0].reject, "a transfer forces it"


def test_single_member_elects_itself() -> None:
    sim = Sim(1, seed=6)
    leader = sim.wait_leader()
    assert leader == "n1"
    assert sim.one("x", 1) >= 1
