"""Lightweight children under a DynamicSupervisor on a real 4-node cluster (head + 3 workers,
health checks 1000/500/500/3, members="auto").

Thousands of lightweight children are started in one ``start_children`` call; a worker node is
SIGKILLed and then a host actor's process is SIGKILLed, and every child must be back exactly
once: a census through the registry (one record per name, naming a live owner, its epoch and
incarnation bumped exactly for the children that moved), by asking every child its
incarnation (a fresh value per constructor run) through ``via``, and by counting the children
every host runs (no name twice). Then a mixed tree (actor and lightweight children under one
supervisor) and bad input (an unimportable class, a raising constructor, a full host).
"""

from __future__ import annotations

import os
import signal
import sys
import types
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import ray
from ray import cloudpickle

from herd.platform import rpc
from herd.platform.cluster import LocalCluster
from herd.platform.errors import HerdTimeoutError
from herd.platform.waiting import wait_until
from herd.registry import Registry, via
from herd.supervisors import ChildSpec
from herd.supervisors.dynamic.member import member_handle
from herd.supervisors.dynamic.spec import DynamicChildInfo
from herd.supervisors.dynamic.supervisor import DynamicSupervisor
from herd.supervisors.errors import StartChildError

WAIT_S = 60.0
CHILDREN = 1500
FAILOVER_S = 30.0
HEALTH_CHECK = {"initial_delay_ms": 1000, "period_ms": 500, "timeout_ms": 500,
                "failure_threshold": 3}

cloudpickle.register_pickle_by_value(sys.modules[__name__])


class Light:
    """A lightweight child: ``ident`` is new in every incarnation."""

    def __init__(self, tag: str) -> None:
        self.tag, self.ident_, self.n = tag, uuid.uuid4().hex, 0

    def ident(self) -> str:
        return self.ident_

    def node(self) -> str:
        return ray.get_runtime_context().get_node_id()

    def incr(self) -> int:
        self.n += 1
        return self.n

    def crash(self) -> None:
        raise RuntimeError("crash")

    def handoff(self) -> int:
        return self.n

    def restore(self, state: int) -> None:
        self.n = state


class Heavy(Light):
    """The same class, started as an actor child."""


class Broken:
    def __init__(self) -> None:
        raise ValueError("nope")


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    c = LocalCluster(nodes=4, regions=["us-east"], health_check=HEALTH_CHECK)
    try:
        c.connect(log_to_driver=False)
        yield c
    finally:
        c.shutdown()


def start_sup(started: list[DynamicSupervisor], name: str, **options: Any) -> DynamicSupervisor:
    options.setdefault("reconcile_interval_s", 0.5)
    sup = DynamicSupervisor.start(name, timeout=WAIT_S, **options)
    started.append(sup)
    return sup


def light(i: int, **kw: Any) -> ChildSpec:
    return ChildSpec(id=f"c{i}", actor=Light, args=(f"c{i}",), kind="lightweight",
                     shutdown="brutal_kill", **kw)


def census(sup: DynamicSupervisor) -> dict[str, DynamicChildInfo]:
    return {c.name: c for c in sup.which_children(timeout=WAIT_S)}


def settled(sup: DynamicSupervisor, count: int, avoid: str | None = None
            ) -> dict[str, DynamicChildInfo]:
    """Every child running with a holder, none owned by ``avoid``."""
    seen: dict[str, Any] = {}

    def probe() -> dict[str, DynamicChildInfo] | None:
        now = census(sup)
        bad = [c for c in now.values() if c.status != "running" or c.handle is None
               or c.node_id == avoid]
        seen["bad"] = [(c.id, c.status, c.node_id and c.node_id[:8]) for c in bad[:5]]
        seen["count"] = len(now)
        return now if len(now) == count and not bad else None

    try:
        return wait_until(probe, FAILOVER_S, interval=0.2, what="children back")
    except HerdTimeoutError as exc:
        raise AssertionError(f"{exc}; {seen}") from None


def idents(infos: dict[str, DynamicChildInfo]) -> dict[str, str]:
    """Every child's incarnation, asked through the handle its record names, all at once."""
    names = sorted(infos)
    refs = [infos[name].handle.ident.remote() for name in names]
    return dict(zip(names, rpc.get(refs, timeout=WAIT_S, what="idents"), strict=True))


def via_idents(names: set[str]) -> dict[str, str]:
    """The same, one by one by name (``via``: the registry's cached lookup)."""
    return {name: via(name, timeout=WAIT_S).ident.call() for name in sorted(names)}


def host_children(sup: DynamicSupervisor, cluster: LocalCluster) -> list[str]:
    """The names every host of ``sup`` runs (a child running twice shows twice)."""
    names: list[str] = []
    for node in cluster.nodes:
        member = member_handle(sup.name, node.node_id) if node.alive else None
        if member is None:
            continue
        status = rpc.get(member.lightweight_status.remote(), timeout=WAIT_S, what="status")
        names += [child["key"] for child in status.get("by_child", ())]
    return names


def assert_exactly_once(sup: DynamicSupervisor, cluster: LocalCluster,
                        before: dict[str, DynamicChildInfo], before_idents: dict[str, str],
                        moved: set[str], after: dict[str, DynamicChildInfo]) -> dict[str, str]:
    """Exactly the children in ``moved`` were started again, once each; their idents now."""
    assert after.keys() == before.keys()
    for name, info in after.items():
        old = before[name]
        if name in moved:
            assert info.incarnation == old.incarnation + 1, (name, old, info)
            assert info.epoch > old.epoch
        else:
            assert (info.incarnation, info.epoch, info.node_id) == (old.incarnation, old.epoch,
                                                                    old.node_id)
    now = idents(after)
    changed = {name for name in now if now[name] != before_idents[name]}
    assert changed == moved
    assert via_idents(moved) == {name: now[name] for name in moved}
    running = host_children(sup, cluster)
    assert sorted(running) == sorted(after)  # each child runs once, on one host
    return now


# ------------------------------------------------------------------------------ failover
def test_node_kill_and_host_kill_bring_every_child_back_exactly_once(
        cluster: LocalCluster, dynamic_sups: list[DynamicSupervisor]) -> None:
    sup = start_sup(dynamic_sups, "lwd-failover")
    results = sup.start_children([light(i) for i in range(CHILDREN)], timeout=120)
    errors = [r for r in results if not isinstance(r, DynamicChildInfo)]
    assert not errors, errors[:3]
    before = settled(sup, CHILDREN)
    assert {c.kind for c in before.values()} == {"lightweight"}
    workers = {n.node_id for n in cluster.worker_nodes}
    assert {c.node_id for c in before.values()} == workers  # spread, never on the head
    before_idents = idents(before)
    assert len(set(before_idents.values())) == CHILDREN

    # A worker node dies: its children come back on the survivors' running hosts.
    victim = cluster.worker_nodes[0].node_id
    moved = {name for name, c in before.items() if c.node_id == victim}
    cluster.kill_node(cluster.node_by_id(victim))
    after = settled(sup, CHILDREN, avoid=victim)
    after_idents = assert_exactly_once(sup, cluster, before, before_idents, moved, after)
    assert all(after[name].failovers == 1 for name in moved)
    # The dead node's member (detached, pinned there) is ended, not left pending forever.
    wait_until(lambda: member_handle(sup.name, victim) is None, WAIT_S,
               what="the dead node's member retired")

    # A host's process dies: its children come back on a new host on the same node.
    node = sorted(workers - {victim})[0]
    stats = rpc.get(member_handle(sup.name, node).stats.remote(), timeout=WAIT_S, what="stats")
    os.kill(stats["host"]["pid"], signal.SIGKILL)
    hosted = {name for name, c in after.items() if c.node_id == node}
    wait_until(lambda: all(c.incarnation > after[n].incarnation
                           for n, c in census(sup).items() if n in hosted),
               FAILOVER_S, interval=0.2, what="children of the killed host restarted")
    final = settled(sup, CHILDREN)
    assert_exactly_once(sup, cluster, after, after_idents, hosted, final)
    assert all(final[name].node_id == node for name in hosted)
    assert all(final[name].restarts == after[name].restarts + 1 for name in hosted)
    new_pid = rpc.get(member_handle(sup.name, node).stats.remote(), timeout=WAIT_S,
                      what="stats")["host"]["pid"]
    assert new_pid != stats["host"]["pid"]


# ---------------------------------------------------------------------------- mixed tree
def test_mixed_tree_of_actor_and_lightweight_children(
        cluster: LocalCluster, dynamic_sups: list[DynamicSupervisor]) -> None:
    sup = start_sup(dynamic_sups, "lwd-mixed")
    heavy = sup.start_child(ChildSpec(id="heavy", actor=Heavy, args=("heavy",),
                                      options={"num_cpus": 0}), timeout=WAIT_S)
    results = sup.start_children([light(i) for i in range(3)], timeout=WAIT_S)
    assert [r.name for r in results if isinstance(r, DynamicChildInfo)] == [
        "lwd-mixed/c0", "lwd-mixed/c1", "lwd-mixed/c2"]
    assert [via(f"lwd-mixed/{c}").incr.call() for c in ("heavy", "c0", "c0")] == [1, 1, 2]
    assert rpc.get(results[1].handle.incr.remote(), timeout=WAIT_S) == 1  # type: ignore[union-attr]
    old = via("lwd-mixed/c0").ident.call()
    with pytest.raises(RuntimeError, match="crash"):
        via("lwd-mixed/c0").crash.call()
    wait_until(lambda: census(sup)["lwd-mixed/c0"].incarnation == 2 and
               census(sup)["lwd-mixed/c0"].handle is not None, WAIT_S, what="c0 restarted")
    assert via("lwd-mixed/c0").ident.call() != old
    assert via("lwd-mixed/c0").incr.call() == 1
    infos = census(sup)
    assert infos["lwd-mixed/heavy"].kind == "actor" and infos["lwd-mixed/heavy"].calls is None
    assert infos["lwd-mixed/heavy"].handle is not None and heavy.incarnation == 1
    c0, c1 = infos["lwd-mixed/c0"], infos["lwd-mixed/c1"]
    assert c0.kind == "lightweight" and c0.restarts == 1 and c0.calls == 2  # ident, incr
    assert c1.calls == 1 and 0 < (c1.memory_bytes or 0) < 100_000
    assert rpc.get(c1.handle.node.remote(), timeout=WAIT_S) == c1.node_id
    sup.terminate_child("c1", timeout=WAIT_S)
    assert "lwd-mixed/c1" not in census(sup)
    assert sorted(host_children(sup, cluster)) == ["lwd-mixed/c0", "lwd-mixed/c2"]


# ------------------------------------------------------------------------------ drain
def test_drain_moves_lightweight_children_with_their_state(
        cluster: LocalCluster, dynamic_sups: list[DynamicSupervisor]) -> None:
    """Draining a node moves its lightweight children to another host (started together, in
    one batch) with the state their old incarnation handed off; the others stay put."""
    sup = start_sup(dynamic_sups, "lwd-drain")
    results = sup.start_children([light(i) for i in range(6)], timeout=WAIT_S)
    assert all(isinstance(r, DynamicChildInfo) for r in results), results
    for result in results:
        for _ in range(3):
            rpc.get(result.handle.incr.remote(), timeout=WAIT_S)  # type: ignore[union-attr]
    before = settled(sup, 6)
    node = before["lwd-drain/c0"].node_id
    moved = {name for name, c in before.items() if c.node_id == node}
    sup.drain_node(node, timeout=WAIT_S)
    after = settled(sup, 6, avoid=node)
    for name, info in after.items():
        assert info.incarnation == before[name].incarnation + (name in moved), name
    assert {name: via(name, timeout=WAIT_S).incr.call() for name in sorted(after)} == {
        name: 4 for name in sorted(after)}  # 3 before the move, kept by handoff/restore


# ----------------------------------------------------------------------------- bad input
def test_bad_lightweight_starts_fail_with_the_cause_and_leave_no_record(
        cluster: LocalCluster, dynamic_sups: list[DynamicSupervisor]) -> None:
    sup = start_sup(dynamic_sups, "lwd-bad", lightweight={"max_children_per_host": 1})
    registry = Registry.start("default")
    with pytest.raises(StartChildError, match="child 'broken' failed to start: its "
                                              "constructor raised ValueError: nope"):
        sup.start_child(ChildSpec(id="broken", actor=Broken, kind="lightweight"),
                        timeout=WAIT_S)
    ghost_module = types.ModuleType("herd_ghost_module")
    ghost = type("Ghost", (), {"__module__": "herd_ghost_module"})
    ghost_module.Ghost = ghost  # type: ignore[attr-defined]
    sys.modules["herd_ghost_module"] = ghost_module
    try:
        with pytest.raises(StartChildError, match="Ghost cannot be imported"):
            sup.start_child(ChildSpec(id="ghost", actor=ghost, kind="lightweight"),
                            timeout=WAIT_S)
    finally:
        del sys.modules["herd_ghost_module"]
    # One child per host: with one member per live worker, one more child than workers
    # overflows a host, whichever way the ring places them.
    members = len(sup.members(timeout=WAIT_S))
    outcomes = sup.start_children([light(i) for i in range(members + 1)], timeout=WAIT_S)
    full = [o for o in outcomes if isinstance(o, StartChildError)]
    assert full and all("max_children_per_host=1" in str(o) for o in full)
    started = {o.name for o in outcomes if isinstance(o, DynamicChildInfo)}
    assert set(census(sup)) == started
    for gone in ("broken", "ghost", *(f"c{i}" for i in range(members + 1))):
        if f"lwd-bad/{gone}" not in started:
            assert registry.entry(f"lwd-bad/{gone}", fresh=True) is None
    assert sorted(host_children(sup, cluster)) == sorted(started)
