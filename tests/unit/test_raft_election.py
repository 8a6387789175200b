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


def _gone(sim: Sim, dead: str) -> None:
    """``dead`` crashes and the survivors hear of it (as members hear from Ray)."""
    sim.crash(dead)
    for node_id in sorted(sim.nodes):
        sim.nodes[node_id].leader_gone(dead)
        sim.process(node_id)
    sim.deliver()


def test_a_leader_known_gone_is_replaced_without_waiting_for_a_timeout() -> None:
    sim = Sim(3, seed=7)
    leader = sim.wait_leader()
    term = sim.nodes[leader].term
    sim.one("before", 1)
    _gone(sim, leader)
    new = sim.leader()
    assert new == min(n for n in sim.ids if n != leader), "the first survivor, in one round trip"
    assert sim.nodes[new].term == term + 1
    sim.tick(1)
    assert sim.nodes[new].committed_in_term()
    assert sim.one("after", 2) >= 1


def test_leader_gone_is_ignored_unless_it_names_this_followers_leader() -> None:
    sim = Sim(3, seed=8)
    leader = sim.wait_leader()
    follower = next(n for n in sim.ids if n != leader)
    other = next(n for n in sim.ids if n not in (leader, follower))
    term = sim.nodes[leader].term
    sim.nodes[follower].leader_gone(other)  # not its leader: news of someone else
    sim.nodes[leader].leader_gone(follower)  # a leader has no leader to lose
    for node_id in sim.ids:
        sim.process(node_id)
    sim.deliver()
    assert sim.leader() == leader and sim.nodes[leader].term == term


def test_a_voter_with_a_longer_log_takes_over_from_a_forced_candidate_it_refuses() -> None:
    sim = Sim(3, seed=9)
    leader = sim.wait_leader()
    first, second = sorted(n for n in sim.ids if n != leader)
    sim.cut = {first}  # the first survivor misses the last entry
    sim.one("only-on-two", 2)
    sim.heal()
    _gone(sim, leader)
    assert sim.leader() == second, "the refusing voter with the longer log won at once"
    sim.tick(2)
    assert sim.one("after", 2) >= 1
    for survivor in (first, second):
        assert [d for _, d in sim.machines[survivor]].count("only-on-two") == 1
