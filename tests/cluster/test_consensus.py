"""Consensus groups on a real cluster whose workers each live in a network namespace of their
own (real partitions): commands and reads; bad input; the leader cut off (the majority elects
and commits, the heal deposes nobody); the leader SIGKILLed (a new leader commits, the member
is restarted on its node from its log) and SIGSTOPped; the head restarted; ``herd consensus
status``; a member's node killed (the group replaces the member by itself). After each fault:
every acknowledged write is read back, and the members' logs agree."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import ray
from ray import cloudpickle

from herd.consensus import (
    KV,
    CommandInvalid,
    Counter,
    Group,
    Lock,
    MachineInvalid,
    NotLockHolder,
)
from herd.consensus.hosting import NAMESPACE, load_record
from herd.consensus.lock_client import LockClient
from herd.platform import rpc
from herd.platform.errors import ConfigError
from herd.platform.local.cluster import LocalCluster
from herd.platform.waiting import wait_until

pytestmark = pytest.mark.cluster
cloudpickle.register_pickle_by_value(sys.modules[__name__])

HEALTH = {"initial_delay_ms": 1000, "period_ms": 1000, "timeout_ms": 1000,
          "failure_threshold": 5}
WAIT_S = 30.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    c = LocalCluster(nodes=4, regions=["us-east"], health_check=HEALTH, isolated_nodes=True)
    try:
        c.connect(log_to_driver=False)
        yield c
    finally:
        c.shutdown()


@pytest.fixture(scope="module")
def kv(cluster: LocalCluster) -> Iterator[Group]:
    group = Group.start("kv", machine=KV, replicas=3, members="auto")  # the three workers
    yield group
    group.stop()


def leader_of(group: Group) -> dict[str, Any]:
    return wait_until(group.leader_status, WAIT_S, what=f"a leader of {group.name}")


def member_pid(group: Group, member_id: str) -> int:
    return rpc.get(group.handle(member_id).where.remote(), timeout=5)[1]


def logs_agree(group: Group) -> bool:
    statuses = [s for s in group.status() if s["role"] != "unreachable"]
    return len({(s["applied"], s["commit"]) for s in statuses}) == 1 and len(statuses) == 3


def check_acknowledged(group: Group, written: dict[str, int]) -> None:
    for key, value in written.items():
        assert group.query(("get", key), timeout=10)["value"] == value, key


def write_some(group: Group, written: dict[str, int], prefix: str, count: int) -> None:
    for i in range(count):
        group.command(("put", f"{prefix}-{i % 3}", i), timeout=10)
        written[f"{prefix}-{i % 3}"] = i


def test_commands_queries_locks_and_counters(cluster: LocalCluster, kv: Group) -> None:
    assert kv.command(("put", "flags/beta", True)) == {"version": 1, "revision": 1}
    assert kv.command(("cas", "flags/beta", 1, False))["ok"] is True
    assert kv.command(("cas", "flags/beta", 1, True))["ok"] is False
    for consistency in ("linearizable", "lease", "stale"):
        assert kv.query(("get", "flags/beta"), consistency=consistency)["value"] is False
    assert kv.query(("range", "flags/")) == {"flags/beta": False}
    locks = Group.start("locks", machine=Lock, replicas=3, members="auto")
    try:
        first, second = LockClient(locks, "L", "a"), LockClient(locks, "L", "b")
        token = first.acquire(ttl=5)
        assert token == 1 and second.acquire(ttl=5) is None
        with pytest.raises(NotLockHolder):
            second.release()
        first.release()
        assert second.acquire(ttl=5) == 2, "fencing tokens only grow"
    finally:
        locks.stop()


def test_bad_input_is_refused_and_creates_nothing(cluster: LocalCluster) -> None:
    class NoApply:
        def snapshot(self) -> None: ...

        def restore(self, state: object) -> None: ...

    with pytest.raises(ConfigError, match="odd"):
        Group.start("even", machine=KV, replicas=4)
    with pytest.raises(ConfigError, match="distinct nodes"):
        Group.start("many", machine=KV, replicas=5)
    with pytest.raises(MachineInvalid, match="apply"):
        Group.start("noapply", machine=NoApply)
    for name in ("even", "many", "noapply"):
        assert load_record(name) is None
        with pytest.raises(ValueError):
            ray.get_actor(f"herd/consensus/{name}/m1", namespace=NAMESPACE)
    counters = Group.start("counters", machine=Counter, replicas=1)
    try:
        with pytest.raises(CommandInvalid, match="name"):
            counters.command(("add", "", 1))
        assert [counters.command(("next", "ids")) for _ in range(3)] == [1, 2, 3]
    finally:
        counters.stop()


def test_leader_cut_off_majority_commits_heal_deposes_nobody(cluster: LocalCluster,
                                                            kv: Group) -> None:
    written: dict[str, int] = {}
    write_some(kv, written, "before-cut", 5)
    old = leader_of(kv)
    node = cluster.node_by_id(old["node_id"])
    cluster.partition(node)
    try:
        began = time.monotonic()
        write_some(kv, written, "during-cut", 1)
        elected_s = time.monotonic() - began
        write_some(kv, written, "during-cut", 3)
        new = leader_of(kv)
        assert new["member"] != old["member"] and new["term"] > old["term"]
    finally:
        cluster.heal(node)
    time.sleep(1.0)  # a few election timeouts: with PreVote the rejoined member stays quiet
    after = leader_of(kv)
    assert (after["member"], after["term"]) == (new["member"], new["term"]), "heal disrupted"
    wait_until(lambda: logs_agree(kv), WAIT_S, what="the rejoined member caught up")
    check_acknowledged(kv, written)
    print(f"\npartition: the majority committed {elected_s:.2f} s after the cut")


def test_leader_sigkill_new_leader_commits_and_member_restarts(cluster: LocalCluster,
                                                               kv: Group) -> None:
    """Twice: the second time a survivor is the member restarted after the first kill (its
    peers must answer its new process, not the dead one)."""
    written: dict[str, int] = {}
    write_some(kv, written, "before-kill", 5)
    took = []
    for round_ in range(2):
        old = leader_of(kv)
        os.kill(member_pid(kv, old["member"]), signal.SIGKILL)
        killed = time.monotonic()
        kv.command(("put", "after-kill", round_), timeout=10)
        took.append(time.monotonic() - killed)
        written["after-kill"] = round_
        assert leader_of(kv)["member"] != old["member"]
        wait_until(lambda: logs_agree(kv), WAIT_S, what="the killed member restarted from its log")
        check_acknowledged(kv, written)
    print(f"\nleader SIGKILL: first commit on the new leader after "
          f"{', '.join(f'{t:.2f}' for t in took)} s")


def test_leader_sigstop_new_leader_commits_old_one_steps_down(cluster: LocalCluster,
                                                              kv: Group) -> None:
    written: dict[str, int] = {}
    old = leader_of(kv)
    pid = member_pid(kv, old["member"])
    os.kill(pid, signal.SIGSTOP)
    try:
        write_some(kv, written, "during-stop", 3)
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_until(lambda: logs_agree(kv), WAIT_S, what="the resumed member caught up")
    resumed = next(s for s in kv.status() if s["member"] == old["member"])
    assert resumed["role"] == "follower"
    check_acknowledged(kv, written)


def test_head_restart_the_group_keeps_its_state_and_commits(cluster: LocalCluster,
                                                            kv: Group) -> None:
    written: dict[str, int] = {}
    write_some(kv, written, "before-head", 3)
    before = leader_of(kv)
    cluster.restart_head()  # the members run on the workers; the driver reconnects
    kv.handles.clear()
    write_some(kv, written, "after-head", 3)
    check_acknowledged(kv, written)
    after = leader_of(kv)
    assert after["commit"] > before["commit"]
    assert {s["member"] for s in kv.status() if s["role"] != "unreachable"} == set(
        before["voters"]), "no member was lost or replaced"


def test_cli_status_lists_members(cluster: LocalCluster, kv: Group) -> None:
    env = {**os.environ, **cluster.env()}
    found = subprocess.run(
        [sys.executable, "-m", "herd.cli.main", "consensus", "status", "kv", "--address",
         cluster.address, "--json"], capture_output=True, text=True, timeout=60, env=env)
    assert found.returncode == 0, found.stderr
    rows = json.loads(found.stdout)
    assert sorted(r["role"] for r in rows) == ["follower", "follower", "leader"]
    assert all(r["lag"] == 0 or r["role"] == "leader" or r["lag"] < 10 for r in rows)


def test_a_dead_members_node_is_replaced_by_the_group(cluster: LocalCluster) -> None:
    group = Group.start("repl", machine=KV, replicas=3, members="all")
    try:
        written: dict[str, int] = {}
        write_some(group, written, "before-node-death", 5)
        leader = leader_of(group)
        victim = next(s for s in group.status() if s["member"] != leader["member"]
                      and s["node_id"] != cluster.head.node_id)
        cluster.kill_node(cluster.node_by_id(victim["node_id"]))
        killed = time.monotonic()
        write_some(group, written, "after-node-death", 3)

        def replaced() -> bool:
            status = group.leader_status()
            return (status is not None and victim["member"] not in status["voters"]
                    and len(status["voters"]) == 3 and not status["learners"]
                    and logs_agree(group))

        wait_until(replaced, 60.0, what="the dead member replaced")
        print(f"\nnode death: member replaced {time.monotonic() - killed:.1f} s after the kill")
        check_acknowledged(group, written)
        nodes = {s["node_id"] for s in group.status()}
        assert len(nodes) == 3 and victim["node_id"] not in nodes
    finally:
        group.stop()
