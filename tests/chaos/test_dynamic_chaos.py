"""The dynamic supervisor while nodes die, hang and come back, on the shared cluster (head
us-east + 2 workers, tests/shared_cluster.py; nodes are added when a test needs more). Run in
this order, the module uses 5 nodes in all:

* a node is SIGKILLed, then a second one: every child runs again exactly once (registry,
  the children themselves, a ledger of starts, and the GCS actor table agree); the children are
  kept off the head (members="auto") until the last worker dies, then the head takes them;
* a size-based quorum supervisor loses its majority (local children stop, ``start_child``
  raises ``NoQuorum``) and gets it back when a node joins (every child runs again, once);
* a node holding children is paused (SIGSTOP) until the GCS declares it dead and its children
  run elsewhere, then resumed: the old incarnations are stopped and, writing through
  ``herd.supervisors.fencing``, make no side effect after the failover.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from typing import Any

import pytest
import ray
from fenced_ledger import FencedLedger
from ray import cloudpickle

from herd.platform import rpc
from herd.platform.cluster import LocalCluster
from herd.platform.control_plane import pinned_options
from herd.platform.errors import NoQuorum
from herd.platform.gcs import NodeInfo
from herd.platform.local.processes import session_of
from herd.platform.waiting import wait_until
from herd.registry import Registry
from herd.supervisors import ChildSpec
from herd.supervisors.dynamic.spec import DynamicChildInfo
from herd.supervisors.dynamic.supervisor import DynamicSupervisor
from herd.supervisors.errors import StartChildError
from herd.supervisors.fencing import Superseded, check
from herd.supervisors.strategies import make_strategy, member_of

WAIT_S = 60.0
WRITE_EVERY_S = 0.1

cloudpickle.register_pickle_by_value(sys.modules[__name__])


class ChaosWorker:
    """Reports its start; given its registry name (``fenced``), writes to the ledger every
    100 ms through a fencing check on it, and stops writing once superseded."""

    def __init__(self, ledger: Any, tag: str, fenced: str | None = None) -> None:
        self.ledger, self.tag, self.name = ledger, tag, fenced
        self.node = ray.get_runtime_context().get_node_id()
        rpc.get(ledger.started.remote(tag, os.getpid(), self.node), timeout=10)
        if fenced:
            threading.Thread(target=self._write_forever, daemon=True).start()

    def where(self) -> tuple[int, str]:
        return os.getpid(), self.node

    def _write_forever(self) -> None:
        while True:
            try:
                epoch = check(self.name)
            except Superseded:
                return
            except Exception:  # the registry is briefly unreachable: try again
                time.sleep(WRITE_EVERY_S)
                continue
            with contextlib.suppress(Exception):
                rpc.get(self.ledger.write.remote(self.tag, epoch, os.getpid()), timeout=10)
            time.sleep(WRITE_EVERY_S)


DISTURBS_CLUSTER = True  # it kills, pauses and adds nodes (see tests/shared_cluster.py)


@pytest.fixture(scope="module")
def chaos_cluster(cluster: LocalCluster) -> LocalCluster:
    """The shared 3-node, 2-region cluster (tests/conftest.py), replaced after this module."""
    return cluster


@pytest.fixture(scope="module")
def ledger(chaos_cluster: LocalCluster) -> Any:
    return FencedLedger.options(**pinned_options(chaos_cluster.head.node_id)).remote()


def start_sup(started: list[DynamicSupervisor], name: str, **options: Any) -> DynamicSupervisor:
    sup = DynamicSupervisor.start(name, reconcile_interval_s=0.5, timeout=WAIT_S, **options)
    started.append(sup)
    return sup


def spec(ledger: Any, tag: str, fenced: DynamicSupervisor | None = None) -> ChildSpec:
    name = f"{fenced.name}/{tag}" if fenced is not None else None
    return ChildSpec(id=tag, actor=ChaosWorker, args=(ledger, tag, name), shutdown=2000)


def with_workers(cluster: LocalCluster, count: int) -> list[Any]:
    """At least ``count`` live workers (adding nodes as needed)."""
    while len(cluster.worker_nodes) < count:
        cluster.add_node(region="us-west")
    return cluster.worker_nodes


def children(sup: DynamicSupervisor) -> dict[str, DynamicChildInfo]:
    return {c.id: c for c in sup.which_children(timeout=WAIT_S)}


def recovered(sup: DynamicSupervisor, dead: set[str]) -> dict[str, DynamicChildInfo] | None:
    now = children(sup)
    ok = all(c.status == "running" and c.handle is not None and c.node_id not in dead
             for c in now.values())
    return now if ok else None


def busiest(cluster: LocalCluster, sup: DynamicSupervisor) -> Any:
    now = children(sup)
    return max(cluster.worker_nodes,
               key=lambda n: sum(c.node_id == n.node_id for c in now.values()))


def placed_on(sup: DynamicSupervisor, node_ids: list[str], prefix: str,
              per_node: int) -> list[str]:
    """Child ids the supervisor's strategy puts ``per_node`` of on each of ``node_ids``."""
    members = [member_of(NodeInfo(m["node_id"], "", True, m["labels"], {}))
               for m in sup.members(timeout=WAIT_S)]
    strategy = make_strategy(sup.config.distribution, **sup.config.distribution_options)
    chosen: dict[str, list[str]] = {n: [] for n in node_ids}
    for i in range(1000):
        owner = strategy.choose(f"{prefix}-{i}", members).id
        if owner in chosen and len(chosen[owner]) < per_node:
            chosen[owner].append(f"{prefix}-{i}")
    return sorted(c for ids in chosen.values() for c in ids)


def alive_workers_of_class() -> int:
    """Live ChaosWorker actors in the GCS actor table: duplicates would show here."""
    table = ray._private.state.actors(actor_state_name="ALIVE")
    return sum("ChaosWorker" in info["ActorClassName"] for info in table.values())


def check_exactly_once(sup: DynamicSupervisor, ledger: Any, before: dict[str, DynamicChildInfo],
                       now: dict[str, DynamicChildInfo], moved: set[str],
                       starts_before: dict[str, int]) -> None:
    """No loss, no duplicate: every child has one record and one live actor, answering from
    the record's node; moved children started once more (a new incarnation), others did not
    start again and kept their pid."""
    assert set(now) == set(before)
    starts = rpc.get(ledger.report.remote(), timeout=WAIT_S)["starts"]
    for child_id, info in now.items():
        pid, node = rpc.get(info.handle.where.remote(), timeout=WAIT_S)
        assert node == info.node_id
        mine = [s for s in starts if s[0] == child_id]
        assert mine[-1] == (child_id, pid, node)
        if child_id in moved:
            assert len(mine) == starts_before[child_id] + 1, mine
            assert info.incarnation == before[child_id].incarnation + 1
            assert info.failovers == before[child_id].failovers + 1
        else:
            assert len(mine) == starts_before[child_id], mine
            assert (info.incarnation, info.epoch) == (before[child_id].incarnation,
                                                     before[child_id].epoch)
    assert alive_workers_of_class() == len(now)


def start_counts(ledger: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for tag, _, _ in rpc.get(ledger.report.remote(), timeout=WAIT_S)["starts"]:
        counts[tag] = counts.get(tag, 0) + 1
    return counts


# --------------------------------------------------------------------------------- kills
def test_node_kills_every_child_back_exactly_once(chaos_cluster: LocalCluster, ledger: Any,
                                                  dynamic_sups: list) -> None:
    cluster = chaos_cluster
    with_workers(cluster, 2)
    sup = start_sup(dynamic_sups, "chaos-kill")
    tags = placed_on(sup, [n.node_id for n in cluster.worker_nodes], "kill", 2)
    for tag in tags:
        sup.start_child(spec(ledger, tag), timeout=WAIT_S)
    assert cluster.head.node_id not in {c.node_id for c in children(sup).values()}
    dead: set[str] = set()
    for _ in range(len(cluster.worker_nodes)):  # kill every worker, one after the other
        before = children(sup)
        victim = busiest(cluster, sup)
        moved = {k for k, c in before.items() if c.node_id == victim.node_id}
        assert moved, "the busiest worker holds children"
        counts = start_counts(ledger)
        late = placed_on(sup, [victim.node_id], "late", 1)[0] if not dead else None
        cluster.kill_node(victim)
        dead.add(victim.node_id)
        if late is not None:  # a start sent to the dead node's member: started by a survivor
            start_late(sup, ledger, late)  # or a typed error, never Ray's own
        now = wait_until(lambda: recovered(sup, dead), WAIT_S, what="children failed over")
        check_exactly_once(sup, ledger, before, now, moved, counts)
    # The last worker is gone: the head, kept free while workers lived, holds them all.
    assert {c.node_id for c in now.values()} == {cluster.head.node_id}
    assert len(Registry.start().select(meta={"herd_dsup": "chaos-kill"})) == len(tags)


def start_late(sup: DynamicSupervisor, ledger: Any, child_id: str) -> None:
    """Start ``child_id`` (placed on a node just killed) and, if it started, terminate it."""
    try:
        sup.start_child(spec(ledger, child_id), timeout=WAIT_S)
    except StartChildError:
        return
    sup.terminate_child(child_id, timeout=WAIT_S)


# ------------------------------------------------------------------------------- quorum
def test_quorum_loss_and_recovery(chaos_cluster: LocalCluster, ledger: Any,
                                  dynamic_sups: list) -> None:
    cluster = chaos_cluster
    workers = with_workers(cluster, 1)
    live = 1 + len(workers)
    # A majority of ``size`` with every live node, and none once one node is lost.
    sup = start_sup(dynamic_sups, "chaos-quorum", distribution="quorum", members="all",
                    distribution_options={"size": 2 * live - 1})
    victim = workers[0]
    tags = placed_on(sup, [cluster.head.node_id, victim.node_id], "quorum", 2)
    for tag in tags:
        sup.start_child(spec(ledger, tag), timeout=WAIT_S)
    before = children(sup)
    local = {k: rpc.get(c.handle.where.remote(), timeout=WAIT_S)[0]
             for k, c in before.items() if c.node_id == cluster.head.node_id}
    assert local and len(local) < len(tags)
    counts = start_counts(ledger)

    cluster.kill_node(victim)
    wait_until(lambda: not sup.has_quorum(), WAIT_S, what="quorum lost")
    wait_until(lambda: not any(_pid_alive(p) for p in local.values()), WAIT_S,
               what="local children stopped without quorum")
    with pytest.raises(NoQuorum):
        sup.start_child(spec(ledger, "quorum-late"), timeout=WAIT_S)
    with pytest.raises(NoQuorum):
        sup.wait_for_quorum(timeout=0.5)
    wait_until(lambda: all(c.handle is None for c in children(sup).values()), WAIT_S,
               what="no child registered as running")

    cluster.add_node(region="us-west")
    sup.wait_for_quorum(timeout=WAIT_S)
    now = wait_until(lambda: recovered(sup, {victim.node_id}), WAIT_S,
                     what="children running again with quorum")
    assert set(now) == set(tags)
    after = start_counts(ledger)
    assert {t: after[t] - counts[t] for t in tags} == {t: 1 for t in tags}  # once each
    for tag, info in now.items():
        pid, node = rpc.get(info.handle.where.remote(), timeout=WAIT_S)
        assert node == info.node_id and pid != local.get(tag)
    assert alive_workers_of_class() == len(tags)


# ------------------------------------------------------------------------------ fencing
def test_paused_node_is_fenced_after_failover(chaos_cluster: LocalCluster, ledger: Any,
                                              dynamic_sups: list) -> None:
    cluster = chaos_cluster
    victim = with_workers(cluster, 1)[0]
    sup = start_sup(dynamic_sups, "chaos-fence", members="all")
    tags = placed_on(sup, [victim.node_id, cluster.head.node_id], "fence", 2)
    for tag in tags:
        sup.start_child(spec(ledger, tag, fenced=sup), timeout=WAIT_S)
    before = children(sup)
    frozen = {k: rpc.get(c.handle.where.remote(), timeout=WAIT_S)[0]
              for k, c in before.items() if c.node_id == victim.node_id}
    assert frozen, "children on the node to pause"

    def writes_by(pids: set[int]) -> int:
        report = rpc.get(ledger.report.remote(), timeout=WAIT_S)
        return sum(pid in pids for _, _, pid, _ in report["accepted"])

    wait_until(lambda: writes_by(set(frozen.values())) >= 2 * len(frozen), WAIT_S,
               what="old incarnations writing")
    cluster.pause_node(victim)
    try:
        now = wait_until(lambda: recovered(sup, {victim.node_id}), WAIT_S,
                         what="paused node's children failed over")
        new_pids = {k: rpc.get(now[k].handle.where.remote(), timeout=WAIT_S)[0]
                    for k in frozen}
        wait_until(lambda: writes_by(set(new_pids.values())) >= 2 * len(frozen), WAIT_S,
                   what="new incarnations writing")
    finally:
        resumed_at = time.time()
        cluster.resume_node(victim)
    wait_until(lambda: not any(_pid_alive(p) for p in frozen.values()), WAIT_S,
               what="old incarnations gone after resume")
    time.sleep(1.0)  # anything the old ones could still have sent has arrived by now
    report = rpc.get(ledger.report.remote(), timeout=WAIT_S)
    for tag, old_pid in frozen.items():
        accepted = [(e, p, t) for k, e, p, t in report["accepted"] if k == tag]
        first_new = min(t for _, p, t in accepted if p == new_pids[tag])
        assert not [a for a in accepted if a[1] == old_pid and a[2] > first_new], (
            f"{tag}: a superseded incarnation wrote after its replacement")
        assert all(a[0] <= b[0] for a, b in zip(accepted, accepted[1:], strict=False))
        late = [r for r in report["refused"] if r[0] == tag and r[3] > resumed_at]
        assert len(late) <= 1, f"{tag}: the old incarnation kept trying after resume: {late}"
        assert now[tag].incarnation == 2 and now[tag].node_id != victim.node_id
    for tag in set(before) - set(frozen):
        assert now[tag].epoch == before[tag].epoch  # not disturbed
    if victim.alive:  # its raylet exits on its own once it learns it was declared dead
        cluster.kill_node(victim)


def _pid_alive(pid: int) -> bool:
    return session_of(pid) is not None  # zombies count as gone
