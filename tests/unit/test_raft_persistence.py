"""6.824's persistence tests (2C) on the pure Raft core: members crash and restart from what
they persisted; Figure 8 (an entry of an old term is never committed by counting replicas) in
its reliable and unreliable versions; churn."""

from __future__ import annotations

from raft_sim import Sim, Storage

from herd.consensus.raft import Entry, HardState, MessageType, RaftConfig


def test_persist_1_everyone_restarts() -> None:
    sim = Sim(3, seed=21)
    sim.wait_leader()
    sim.one(11, 3)
    for node_id in list(sim.nodes):
        sim.crash(node_id)
    for node_id in sim.ids:
        sim.restart(node_id)
    sim.one(12, 3)
    leader = sim.leader()
    assert leader is not None
    sim.crash(leader)
    sim.restart(leader)
    sim.one(13, 3)
    assert [d for _, d in sim.machines["n1"]] == [11, 12, 13]


def test_persist_2_repeated_crashes_of_minorities() -> None:
    sim = Sim(5, seed=22)
    sim.wait_leader()
    for round_ in range(5):
        sim.one(round_ * 10, 5)
        leader = sim.leader()
        assert leader is not None
        victims = [leader, sim.ids[(sim.ids.index(leader) + 1) % 5]]
        for victim in victims:
            sim.crash(victim)
        sim.one(round_ * 10 + 1, 3)
        for victim in victims:
            sim.restart(victim)
    sim.one(999, 5)


def test_persist_3_a_crashed_leader_rejoins_behind() -> None:
    sim = Sim(3, seed=23)
    leader = sim.wait_leader()
    sim.one(101, 3)
    sim.crash(leader)
    sim.one(102, 2)
    sim.restart(leader)
    sim.one(103, 3)
    assert [d for _, d in sim.machines[leader]] == [101, 102, 103]


def test_figure_8_old_term_entries_are_not_committed_by_counting() -> None:
    """Raft Figure 8 (c): S1 leads term 4 with an entry of term 2 at index 2 that reaches a
    majority (S1, S3, S4), while its own term-4 entry does not. Committing index 2 by counting
    would let S5 (last entry of term 3) be elected and overwrite it."""
    config = RaftConfig(election_ticks=10, max_entries_per_message=1, seed=24)
    sim = Sim(5, seed=24, config=config)
    base, old, other = Entry(1, 1, data="a"), Entry(2, 2, data="old"), Entry(3, 2, data="s5")
    logs = {"n1": [base, old], "n2": [base, old], "n3": [base], "n4": [base], "n5": [base, other]}
    for node_id, entries in logs.items():
        sim.storage[node_id] = Storage(HardState(term=3), None, entries)
        sim.start(node_id, sim.membership)
    sim.cut = {"n5"}
    sim.keep = lambda m: not (m.type == MessageType.APPEND and m.src == "n1" and (
        m.dst == "n2" or (m.entries and sim.nodes[m.dst].log.last_index() >= 2)))
    sim.nodes["n1"].campaign(pre_vote=False)
    sim.process("n1")
    sim.deliver()
    leader = sim.nodes["n1"]
    assert leader.role == "leader" and leader.term == 4
    assert leader.progress["n3"].match == 2 and leader.progress["n4"].match == 2
    assert leader.log.commit < 2, "an entry of term 2 was committed by counting its replicas"
    sim.crash("n1")
    sim.heal()
    sim.keep = lambda m: True
    for _ in range(2):  # term 4 is taken; it wins term 5 (forced: past the followers' leases)
        sim.nodes["n5"].campaign(pre_vote=False, force=True)
        sim.process("n5")
        sim.deliver()
    assert sim.nodes["n5"].role == "leader", "S5 may win: index 2 was never committed"
    sim.restart("n1")
    sim.one("after", 5)
    assert [d for _, d in sim.machines["n1"]] == ["a", "s5", "after"]


def _figure_8_run(sim: Sim, rounds: int) -> None:
    sim.wait_leader()
    alive = set(sim.ids)
    for round_ in range(rounds):
        leader = sim.leader()
        if leader is not None:
            sim.nodes[leader].propose([f"f8-{round_}"])
            sim.process(leader)
        sim.tick(sim.random.choice([1, 3, 13]))
        leader = sim.leader()
        if leader is not None and sim.random.random() < 0.5:
            sim.crash(leader)
            alive.discard(leader)
        if len(alive) < 3:
            back = sim.random.choice(sorted(set(sim.ids) - alive))
            sim.restart(back)
            alive.add(back)
    for node_id in sorted(set(sim.ids) - alive):
        sim.restart(node_id)
    sim.drop, sim.reorder = 0.0, False
    sim.one("f8-end", 5, rounds=600)
    sim.check_log_matching()


def test_figure_8_randomized_crashes() -> None:
    _figure_8_run(Sim(5, seed=25), rounds=60)


def test_figure_8_unreliable() -> None:
    _figure_8_run(Sim(5, seed=26, drop=0.1, reorder=True), rounds=60)


def test_churn_random_crashes_cuts_and_restarts() -> None:
    sim = Sim(5, seed=27, drop=0.05, reorder=True)
    sim.wait_leader()
    for round_ in range(80):
        sim.propose(f"churn-{round_}")
        choice = sim.random.random()
        node_id = sim.random.choice(sim.ids)
        if choice < 0.2 and node_id in sim.nodes:
            sim.crash(node_id)
        elif choice < 0.5 and node_id not in sim.nodes:
            sim.restart(node_id)
        elif choice < 0.6:
            sim.cut = {node_id}
        elif choice < 0.7:
            sim.heal()
        sim.tick(2)
    sim.heal()
    sim.drop = 0.0
    for node_id in sim.ids:
        if node_id not in sim.nodes:
            sim.restart(node_id)
    sim.one("churn-end", 5, rounds=600)
    sim.check_log_matching()
    machines = [m for m in sim.machines.values()]
    assert all(m == machines[0] for m in machines)


def test_only_a_moved_commit_index_needs_no_fsync() -> None:
    """etcd's MustSync: new entries, a new term or vote must be durable before anything is
    sent; a commit index that moved alone may ride along with the next sync (a member that
    loses it in a crash learns it again from the leader, as the restarts above show)."""
    sim = Sim(3, seed=25)
    leader = sim.wait_leader()
    node = sim.nodes[leader]
    node.propose([41])
    proposed = node.ready()
    assert proposed.entries and proposed.must_sync
    sim.storage[leader].persist(proposed)
    sim.queue.extend(proposed.messages)
    sim.deliver()  # the followers' answers commit the entry
    assert sim.storage[leader].unsynced is not None  # the commit moved, no fsync asked
    commit = sim.storage[leader].unsynced.commit
    assert commit >= proposed.entries[-1].index > sim.storage[leader].hard_state.commit
    sim.crash(leader)
    sim.restart(leader)
    sim.one(42, 3)
    assert [d for _, d in sim.machines[leader]][-2:] == [41, 42]


def test_a_commit_sends_no_empty_appends() -> None:
    """Followers learn a new commit index from the next append or heartbeat: the leader
    answers an append response that commits with no message of its own when it has nothing
    new to send."""
    sim = Sim(3, seed=26)
    leader = sim.wait_leader()
    sim.one(7, 3)
    node = sim.nodes[leader]
    node.propose([8])
    ready = node.ready()
    follower = next(i for i in sim.ids if i != leader)
    append = next(m for m in ready.messages if m.dst == follower)
    sim.nodes[follower].step(append)
    answer = next(m for m in sim.nodes[follower].ready().messages if m.dst == leader)
    node.step(answer)
    after = node.ready()
    assert after.committed and [e.data for e in after.committed] == [8]
    assert not [m for m in after.messages if m.type == MessageType.APPEND]
