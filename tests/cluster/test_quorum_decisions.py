"""Quorum decisions and quorum reads/writes on a real 3-node cluster, with worker nodes paused
(SIGSTOP) so their votes miss the deadline: a failed or late call is a missing vote, never a vote.

The cluster of this module uses slow GCS health checks (~22 s before a silent node is declared
dead) so that the few seconds a node is paused here never get it declared dead."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import ray

from herd.platform import rpc
from herd.platform.cluster import LocalCluster
from herd.platform.control_plane import pinned_options
from herd.platform.errors import ConfigError
from herd.platform.quorum import (
    QuorumNotAchieved,
    QuorumNotReached,
    QuorumTimeout,
    ReplicaQuorum,
    make_decision,
    quorum_read,
    quorum_write,
)

SLOW_HEALTH_CHECKS = {"period_ms": 2000, "timeout_ms": 2000, "failure_threshold": 10}
TIMEOUT_S = 20.0  # for calls that must succeed: generous on a loaded 2-core machine
LATE_S = 3.0  # deadline of a decision that a paused node must miss
MARGIN_S = 3.0  # how late past its deadline a decision may return on a loaded machine
# Health checks too slow to notice this module's short pauses (the shared `cluster` fixture).
CLUSTER_OPTIONS = {"health_check": SLOW_HEALTH_CHECKS}


@ray.remote(num_cpus=0, max_restarts=0, max_task_retries=0)
class Member:
    """A voter and a versioned key-value replica."""

    def __init__(self) -> None:
        self.data: dict[str, tuple[int, str]] = {}
        self.refusing = False

    def node(self) -> str:
        return ray.get_runtime_context().get_node_id()

    def vote(self) -> str:
        return "blue"

    def echo(self, value: Any) -> Any:
        return value

    def broken(self) -> str:
        raise RuntimeError("this member cannot vote")

    def refuse_writes(self, refusing: bool) -> None:
        self.refusing = refusing

    def write(self, key: str, version: int, value: str) -> bool:
        if self.refusing:
            raise RuntimeError(f"replica refuses writes of {key!r}")
        if version > self.data.get(key, (0, ""))[0]:
            self.data[key] = (version, value)
        return True

    def read(self, key: str) -> tuple[int, str]:
        return self.data.get(key, (0, ""))


@pytest.fixture(scope="module")
def members(cluster: LocalCluster) -> list[Any]:
    """One Member actor per node, in the order of ``cluster.nodes`` (head first)."""
    handles = [Member.options(**pinned_options(node.node_id)).remote() for node in cluster.nodes]
    assert rpc.get([h.node.remote() for h in handles], timeout=60, what="members ready") == \
        [node.node_id for node in cluster.nodes]
    return handles


def node_ids(cluster: LocalCluster) -> list[str]:
    return [node.node_id for node in cluster.nodes]  # type: ignore[misc]


# Module-level vote functions are @ray.remote functions (make_decision takes those as they are):
# plain module-level functions would be pickled by reference to this test module, which the
# workers cannot import. fails_on returns a plain (nested) function, pickled by value.
@ray.remote
def blue() -> str:
    return "blue"


@ray.remote
def where() -> str:
    return ray.get_runtime_context().get_node_id()


def fails_on(node_id: str) -> Callable[[], str]:
    """A plain function voting "blue" everywhere except on ``node_id``, where it raises."""
    def vote() -> str:
        if ray.get_runtime_context().get_node_id() == node_id:
            raise ValueError(f"node {node_id[:8]} refuses to vote")
        return "blue"
    return vote


@contextlib.contextmanager
def paused(cluster: LocalCluster, *nodes: Any) -> Iterator[None]:
    """SIGSTOP ``nodes`` for the block; resume them whatever happens, then check they answer."""
    try:
        for node in nodes:
            cluster.pause_node(node)
        yield
    finally:
        for node in nodes:
            cluster.resume_node(node)
    answers = rpc.get([where.options(num_cpus=0, **pinned_options(node.node_id)).remote()
                       for node in nodes],
                      timeout=TIMEOUT_S, what="resumed nodes answer")
    assert answers == [node.node_id for node in nodes]


def test_all_three_nodes_vote_the_same_value(cluster: LocalCluster) -> None:
    nodes = node_ids(cluster)
    everyone = make_decision(nodes, blue, TIMEOUT_S, needed=3)
    assert (everyone.value, everyone.count, everyone.needed) == ("blue", 3, 3)
    assert everyone.votes == dict.fromkeys(nodes, "blue") and everyone.missing == {}

    majority = make_decision(nodes, blue, TIMEOUT_S)  # may return before the third vote
    assert (majority.value, majority.needed) == ("blue", 2) and majority.count >= 2
    assert set(majority.votes) | set(majority.missing) == set(nodes)
    assert all(r.startswith("not awaited") for r in majority.missing.values())


def test_node_and_actor_targets_both_work(cluster: LocalCluster, members: list[Any]) -> None:
    nodes = node_ids(cluster)
    by_actor = make_decision(members, "vote", TIMEOUT_S, needed=3)
    assert by_actor.value == "blue" and by_actor.votes == dict.fromkeys(members, "blue")
    by_call = make_decision(members, lambda m: m.echo.remote({"v": 1}), TIMEOUT_S, needed=3)
    assert by_call.value == {"v": 1} and by_call.count == 3

    # Every target votes differently: a three-way tie at 1 vote, broken canonically (the
    # smallest node id), identically for node and actor targets.
    tie_nodes = make_decision(nodes, where, TIMEOUT_S, needed=1)
    tie_actors = make_decision(members, "node", TIMEOUT_S, needed=1)
    assert tie_nodes.value == tie_actors.value == min(nodes)
    assert tie_nodes.votes == {n: n for n in nodes} and tie_nodes.count == 1
    # ... and three different values are no majority, known without waiting for the deadline.
    started = time.monotonic()
    with pytest.raises(QuorumNotAchieved) as split:
        make_decision(nodes, where, TIMEOUT_S)
    assert time.monotonic() - started < TIMEOUT_S / 2
    assert split.value.needed == 2 and split.value.votes == {n: n for n in nodes}

    with pytest.raises(ConfigError, match="no method 'missing'"):
        make_decision(members, "missing", TIMEOUT_S)


def test_failed_calls_are_missing_votes_never_votes(cluster: LocalCluster,
                                                    members: list[Any]) -> None:
    nodes = node_ids(cluster)
    head = cluster.head.node_id
    decision = make_decision(nodes, fails_on(head), TIMEOUT_S)
    assert (decision.value, decision.count) == ("blue", 2)
    assert head not in decision.votes and head in decision.missing  # failed, or not awaited
    started = time.monotonic()
    with pytest.raises(QuorumNotAchieved) as failed:  # a failure makes 3 of 3 impossible
        make_decision(nodes, fails_on(head), TIMEOUT_S, needed=3)
    assert time.monotonic() - started < TIMEOUT_S / 2
    assert "ValueError: node" in failed.value.missing[head] and head not in failed.value.votes

    # A node id that is not (or no longer) in the cluster cannot vote either.
    gone = "0" * 56
    decision = make_decision(nodes[1:] + [gone], blue, TIMEOUT_S)
    assert decision.count == 2 and gone in decision.missing and gone not in decision.votes

    dead = Member.remote()
    rpc.get(dead.vote.remote(), timeout=TIMEOUT_S)
    ray.kill(dead)  # asynchronous: wait until the actor is really gone, or it may still vote
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        try:
            ray.get(dead.__ray_ready__.remote(), timeout=TIMEOUT_S)
        except ray.exceptions.RayActorError:
            break
        assert time.monotonic() < deadline, "the killed actor kept answering"
        time.sleep(0.05)
    decision = make_decision(members[:2] + [dead], "vote", TIMEOUT_S)
    assert decision.count == 2 and dead in decision.missing and dead not in decision.votes
    with pytest.raises(QuorumNotAchieved) as unanimous:  # needs the dead one: awaited, failed
        make_decision(members[:2] + [dead], "vote", TIMEOUT_S, needed=3)
    assert "Actor" in unanimous.value.missing[dead] and dead not in unanimous.value.votes

    # Two failures out of three: no quorum, as soon as that is certain.
    started = time.monotonic()
    with pytest.raises(QuorumNotAchieved) as failed:
        make_decision([nodes[0], gone, nodes[2]], fails_on(nodes[2]), TIMEOUT_S)
    assert time.monotonic() - started < TIMEOUT_S / 2
    assert failed.value.needed == 2 and "refuses to vote" in failed.value.missing[nodes[2]]
    assert gone in failed.value.missing and set(failed.value.votes) <= {nodes[0]}
    # the head's vote may not even have been awaited: it could not have changed the outcome
    assert failed.value.votes.get(nodes[0], "blue") == "blue"
    with pytest.raises(QuorumNotAchieved):
        make_decision(members, "broken", TIMEOUT_S)


def test_a_paused_node_misses_the_vote(cluster: LocalCluster, members: list[Any]) -> None:
    nodes = node_ids(cluster)
    victim = cluster.worker_nodes[0]
    with paused(cluster, victim):
        started = time.monotonic()
        early = make_decision(nodes, blue, LATE_S)
        assert time.monotonic() - started < LATE_S  # two agreeing votes of three settle it
        assert (early.value, early.count) == ("blue", 2)
        assert early.missing == {victim.node_id: "not awaited: the outcome was settled "
                                                 "without it"}
        by_actor = make_decision(members, "vote", LATE_S)
        assert by_actor.count == 2 and members[nodes.index(victim.node_id)] in by_actor.missing

        # A tie at needed=1 must wait for every vote: the paused one misses the deadline.
        started = time.monotonic()
        late = make_decision(nodes, where, LATE_S, needed=1)
        elapsed = time.monotonic() - started
        assert LATE_S <= elapsed < LATE_S + MARGIN_S
        alive = [n for n in nodes if n != victim.node_id]
        assert late.value == min(alive) and late.votes == {n: n for n in alive}
        assert late.missing == {victim.node_id: f"no answer within {LATE_S:.1f} s"}


def test_two_paused_nodes_leave_no_quorum(cluster: LocalCluster) -> None:
    nodes = node_ids(cluster)
    victims = cluster.worker_nodes[:2]
    with paused(cluster, *victims):
        started = time.monotonic()
        with pytest.raises(QuorumNotAchieved) as info:
            make_decision(nodes, blue, LATE_S)
        elapsed = time.monotonic() - started
    assert LATE_S <= elapsed < LATE_S + MARGIN_S  # only the deadline can settle it
    assert info.value.needed == 2 and info.value.votes == {cluster.head.node_id: "blue"}
    assert info.value.missing == {v.node_id: f"no answer within {LATE_S:.1f} s"
                                  for v in victims}


def test_quorum_writes_and_reads_with_a_paused_replica(cluster: LocalCluster,
                                                       members: list[Any]) -> None:
    rq = ReplicaQuorum.majority(3)
    newest = max

    def write(version: int) -> Any:
        return quorum_write([m.write.remote("k", version, f"v{version}") for m in members], rq,
                            TIMEOUT_S)

    def read() -> Any:
        return quorum_read([m.read.remote("k") for m in members], rq, TIMEOUT_S, resolve=newest)

    assert write(1).reached
    head, a, b = members
    node_a, node_b = (cluster.node_by_id(rpc.get(m.node.remote(), timeout=TIMEOUT_S))
                      for m in (a, b))
    with paused(cluster, node_a):
        started = time.monotonic()
        acked = write(2)
        assert sorted(acked.successes) == [0, 2] and acked.pending == [1]
        got = read()
        assert time.monotonic() - started < TIMEOUT_S / 2
        assert got.value == (2, "v2") and got.answered == 2
    # Replica a applied version 2 once resumed (its calls were only delayed). Now it misses
    # version 3, and a read that reaches it and the head still sees version 3: R + W > N.
    rpc.get(a.refuse_writes.remote(True), timeout=TIMEOUT_S)
    try:
        assert write(3).reached
        with paused(cluster, node_b):
            got = read()
        assert sorted(got.replies) == [(2, "v2"), (3, "v3")] and got.value == (3, "v3")

        rpc.get(b.refuse_writes.remote(True), timeout=TIMEOUT_S)
        with pytest.raises(QuorumNotReached) as refused:  # failed writes are not acks
            write(4)
        assert set(refused.value.result.failures) == {1, 2}
    finally:
        rpc.get([m.refuse_writes.remote(False) for m in (a, b)], timeout=TIMEOUT_S)

    with paused(cluster, node_a, node_b):
        started = time.monotonic()
        with pytest.raises(QuorumTimeout):
            quorum_read([m.read.remote("k") for m in members], rq, LATE_S)
        assert LATE_S <= time.monotonic() - started < LATE_S + MARGIN_S
