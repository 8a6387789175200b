"""Real partitions inside one cluster: ``LocalCluster(isolated_nodes=True)`` runs every worker
in a network namespace of its own, joined by a bridge; ``partition(node)`` cuts its link.

One module cluster (head + 2 workers, a third added later), health checks 1000/500/500/3 ms:

* nodes bind distinct addresses, each worker's processes live in a namespace of their own;
* a partitioned worker is declared dead by the GCS while its processes keep running; the
  dynamic supervisor's children on it run again exactly once on the survivors (registry,
  the children themselves, a ledger of starts, the GCS actor table); after ``heal`` the
  worker's raylet learns it was declared dead and exits, and its zombie children with it
  (the node does not rejoin: Ray gives a node declared dead no way back; add a new node);
* a zombie that lives on after the heal (its raylet held with SIGSTOP, so that the race with
  the raylet's exit cannot hide it) writes with its stale epoch and is refused by the fenced
  ledger; no zombie write is ever accepted after its replacement's first write;
* bad input (``partition`` on a normal cluster, an unknown node, the head) raises
  ``ClusterError``; shutdown leaves no namespace, device or process behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
from fenced_ledger import FencedLedger
from ray import cloudpickle

from herd.platform import rpc
from herd.platform.control_plane import pinned_options
from herd.platform.errors import ClusterError
from herd.platform.gcs import NodeInfo
from herd.platform.local.cluster import LocalCluster, LocalNode
from herd.platform.local.processes import session_of
from herd.platform.logging import get_logger
from herd.platform.waiting import wait_until
from herd.registry import Registry
from herd.supervisors import ChildSpec
from herd.supervisors.dynamic.spec import DynamicChildInfo
from herd.supervisors.dynamic.supervisor import DynamicSupervisor
from herd.supervisors.fencing import Superseded, check
from herd.supervisors.strategies import make_strategy, member_of

WAIT_S = 60.0
WRITE_EVERY_S = 0.1
ZOMBIES_GONE_WITHIN_S = 20.0

cloudpickle.register_pickle_by_value(sys.modules[__name__])
log = get_logger("tests.isolated_nodes")


class FencedWorker:
    """Reports its start, learns its epoch once (``fencing.check``) and then writes every
    100 ms with it as a fencing token, until the ledger refuses a write."""

    def __init__(self, ledger: Any, tag: str, name: str) -> None:
        self.ledger, self.tag, self.name = ledger, tag, name
        self.node = ray.get_runtime_context().get_node_id()
        self.epoch: int | None = None
        rpc.get(ledger.started.remote(tag, os.getpid(), self.node), timeout=10)
        threading.Thread(target=self._write_forever, daemon=True).start()

    def where(self) -> tuple[int, str, int | None]:
        return os.getpid(), self.node, self.epoch

    def _write_forever(self) -> None:
        deadline = time.monotonic() + WAIT_S
        while self.epoch is None and time.monotonic() < deadline:
            with contextlib.suppress(Superseded):  # not registered yet: ask again
                self.epoch = check(self.name)
        while self.epoch is not None:
            try:
                if not rpc.get(self.ledger.write.remote(self.tag, self.epoch, os.getpid()),
                               timeout=1.0):
                    return  # fenced: a newer incarnation has written
            except Exception:  # cut off: keep trying, as a zombie would
                pass
            time.sleep(WRITE_EVERY_S)


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    cluster = LocalCluster(nodes=3, isolated_nodes=True,
                           health_check={"initial_delay_ms": 1000, "period_ms": 500,
                                         "timeout_ms": 500, "failure_threshold": 3})
    try:
        cluster.connect(log_to_driver=False)
        yield cluster
    finally:
        if cluster.network is not None and cluster.network.started:
            cluster.shutdown()


@pytest.fixture(scope="module")
def ledger(cluster: LocalCluster) -> Any:
    return FencedLedger.options(**pinned_options(cluster.head.node_id)).remote()


# ---------------------------------------------------------------------------------- helpers
def children(sup: DynamicSupervisor) -> dict[str, DynamicChildInfo]:
    return {c.id: c for c in sup.which_children(timeout=WAIT_S)}


def recovered(sup: DynamicSupervisor, dead: str) -> dict[str, DynamicChildInfo] | None:
    now = children(sup)
    ok = all(c.status == "running" and c.handle is not None and c.node_id != dead
             for c in now.values())
    return now if ok else None


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


def node_alive_in_gcs(node_id: str) -> bool:
    return any(n["NodeID"] == node_id and n["Alive"] for n in ray.nodes())


def pid_alive(pid: int) -> bool:
    return session_of(pid) is not None  # zombies (exited, not reaped) count as gone


def alive_workers_of_class() -> int:
    table = ray._private.state.actors(actor_state_name="ALIVE")
    return sum("FencedWorker" in info["ActorClassName"] for info in table.values())


def ledger_report(ledger: Any) -> dict[str, Any]:
    report: dict[str, Any] = rpc.get(ledger.report.remote(), timeout=WAIT_S)
    return report


def writes_by(ledger: Any, pids: set[int]) -> int:
    return sum(pid in pids for _, _, pid, _ in ledger_report(ledger)["accepted"])


def raylet_pid(node: LocalNode) -> int:
    for pid in node.pids:
        with contextlib.suppress(OSError):
            if b"raylet/raylet" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
    raise AssertionError(f"no raylet among {node.name}'s processes")


def start_fenced(sup: DynamicSupervisor, ledger: Any, victim: LocalNode, survivor: LocalNode,
                 prefix: str) -> tuple[dict[str, DynamicChildInfo], dict[str, int]]:
    """Two children on each of victim and survivor, writing; the victim's children's pids."""
    for tag in placed_on(sup, [victim.node_id, survivor.node_id], prefix, 2):
        sup.start_child(ChildSpec(id=tag, actor=FencedWorker,
                                  args=(ledger, tag, f"{sup.name}/{tag}"), shutdown=2000),
                        timeout=WAIT_S)
    before = children(sup)
    on_victim = {k: rpc.get(c.handle.where.remote(), timeout=WAIT_S)[0]
                 for k, c in before.items() if c.node_id == victim.node_id}
    assert len(on_victim) == 2 and len(before) == 4
    wait_until(lambda: writes_by(ledger, set(on_victim.values())) >= 2 * len(on_victim),
               WAIT_S, what="children on the victim writing")
    return before, on_victim


def fail_over(cluster: LocalCluster, sup: DynamicSupervisor, ledger: Any, victim: LocalNode,
              before: dict[str, DynamicChildInfo],
              on_victim: dict[str, int]) -> dict[str, DynamicChildInfo]:
    """Partition ``victim``; check detection, that its processes run on, and exactly-once
    re-placement of its children. Returns the children after the failover."""
    pids = set(victim.pids)
    cut_at = time.monotonic()
    cluster.partition(victim)
    assert cluster.network is not None and cluster.network.is_cut(victim.name)
    wait_until(lambda: not node_alive_in_gcs(victim.node_id), WAIT_S, what="victim dead in GCS")
    detected_s = time.monotonic() - cut_at
    now = wait_until(lambda: recovered(sup, victim.node_id), WAIT_S, what="children re-placed")
    replaced_s = time.monotonic() - cut_at
    log.info("partition_failover", detected_s=round(detected_s, 2),
             replaced_s=round(replaced_s, 2))
    # The cut-off node's processes, the zombie children among them, all still run.
    assert set(victim.pids) == pids
    assert all(pid_alive(pid) for pid in on_victim.values())
    # Exactly once: one record and one live actor per child, each answering from its record's
    # node; moved children started once more under a higher epoch, the others were untouched.
    assert set(now) == set(before)
    starts = ledger_report(ledger)["starts"]
    for tag, info in now.items():
        pid, node, epoch = rpc.get(info.handle.where.remote(), timeout=WAIT_S)
        assert node == info.node_id != victim.node_id
        mine = [s for s in starts if s[0] == tag]
        assert mine[-1] == (tag, pid, node)
        if tag in on_victim:
            assert len(mine) == 2 and pid != on_victim[tag], mine
            assert info.incarnation == 2 and info.failovers == 1
            assert info.epoch > before[tag].epoch
            assert epoch is None or epoch > before[tag].epoch
        else:
            assert len(mine) == 1 and (info.incarnation, info.epoch) == (1, before[tag].epoch)
    assert alive_workers_of_class() == len(now)
    assert len(Registry.start().select(meta={"herd_dsup": sup.name})) == len(now)
    wait_until(lambda: writes_by(ledger, {rpc.get(now[t].handle.where.remote(),
                                                  timeout=WAIT_S)[0] for t in on_victim})
               >= 2 * len(on_victim), WAIT_S, what="replacements writing")
    return now


def check_no_late_zombie_write(ledger: Any, on_victim: dict[str, int]) -> list[Any]:
    """No write of an old incarnation was accepted after its replacement's first write; the
    accepted epochs never go down. Returns the zombies' refused writes."""
    report = ledger_report(ledger)
    for tag, old_pid in on_victim.items():
        accepted = [(epoch, pid, at) for key, epoch, pid, at in report["accepted"] if key == tag]
        first_new = min(at for _, pid, at in accepted if pid != old_pid)
        assert not [a for a in accepted if a[1] == old_pid and a[2] > first_new], tag
        assert all(a[0] <= b[0] for a, b in zip(accepted, accepted[1:], strict=False))
    return [r for r in report["refused"] if r[2] in set(on_victim.values())]


# ------------------------------------------------------------------------------------ tests
def test_nodes_have_distinct_addresses_and_namespaces(cluster: LocalCluster) -> None:
    network = cluster.network
    assert network is not None
    assert cluster.address.startswith(f"{network.head_address}:")
    expected = {n.node_id: network.address_of(n.name) for n in cluster.nodes}
    assert len(set(expected.values())) == len(cluster.nodes) == 3
    seen = {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]}
    assert seen == expected
    own = os.readlink("/proc/self/ns/net")
    spaces = {n.name: {os.readlink(f"/proc/{pid}/ns/net") for pid in n.pids}
              for n in cluster.worker_nodes}
    assert all(len(s) == 1 and own not in s for s in spaces.values()), spaces
    assert len(set.union(*spaces.values())) == len(spaces)


def test_partition_fails_over_exactly_once_and_zombies_stop_on_heal(
        cluster: LocalCluster, ledger: Any, dynamic_sups: list[DynamicSupervisor]) -> None:
    victim, survivor = cluster.worker_nodes[:2]
    sup = DynamicSupervisor.start("iso-heal", reconcile_interval_s=0.5, timeout=WAIT_S)
    dynamic_sups.append(sup)
    before, on_victim = start_fenced(sup, ledger, victim, survivor, "heal")
    now = fail_over(cluster, sup, ledger, victim, before, on_victim)

    healed_at = time.monotonic()
    cluster.heal(victim)
    assert not cluster.network.is_cut(victim.name)  # type: ignore[union-attr]
    # The raylet learns it was declared dead and exits; `ray start` and the zombies follow.
    wait_until(lambda: not any(pid_alive(p) for p in on_victim.values()),
               ZOMBIES_GONE_WITHIN_S, what="zombie children gone after heal")
    zombies_gone_s = time.monotonic() - healed_at
    wait_until(lambda: not victim.pids, ZOMBIES_GONE_WITHIN_S, what="victim's processes gone")
    log.info("partition_healed", zombies_gone_s=round(zombies_gone_s, 2),
             node_gone_s=round(time.monotonic() - healed_at, 2))
    assert not victim.alive and not node_alive_in_gcs(victim.node_id)  # no rejoin
    time.sleep(1.0)  # anything a zombie could still have sent has arrived by now
    refused = check_no_late_zombie_write(ledger, on_victim)
    log.info("zombie_writes_refused_after_heal", count=len(refused))
    after = children(sup)  # the heal moved nothing again
    assert {k: (c.node_id, c.incarnation, c.status) for k, c in after.items()} == {
        k: (c.node_id, c.incarnation, "running") for k, c in now.items()}


def test_zombie_alive_after_heal_is_fenced(cluster: LocalCluster, ledger: Any,
                                          dynamic_sups: list[DynamicSupervisor]) -> None:
    while len(cluster.worker_nodes) < 2:
        cluster.add_node()  # an isolated node of its own, too
    victim, survivor = cluster.worker_nodes[-1], cluster.worker_nodes[0]
    sup = DynamicSupervisor.start("iso-fence", reconcile_interval_s=0.5, timeout=WAIT_S)
    dynamic_sups.append(sup)
    before, on_victim = start_fenced(sup, ledger, victim, survivor, "fence")
    now = fail_over(cluster, sup, ledger, victim, before, on_victim)

    raylet = raylet_pid(victim)
    os.kill(raylet, signal.SIGSTOP)  # it cannot learn it was declared dead: zombies live on
    try:
        cluster.heal(victim)
        refused = wait_until(lambda: check_no_late_zombie_write(ledger, on_victim),
                             WAIT_S, what="a zombie's write refused by the fenced ledger")
        assert {r[0] for r in refused} <= set(on_victim)
        assert all(r[1] < rpc.get(now[r[0]].handle.where.remote(), timeout=WAIT_S)[2]
                   for r in refused)
    finally:
        os.kill(raylet, signal.SIGCONT)
    wait_until(lambda: not any(pid_alive(p) for p in on_victim.values()),
               ZOMBIES_GONE_WITHIN_S, what="zombie children gone once the raylet runs")
    wait_until(lambda: not victim.pids, ZOMBIES_GONE_WITHIN_S, what="victim's processes gone")
    check_no_late_zombie_write(ledger, on_victim)


def test_bad_input_raises_cluster_error(cluster: LocalCluster) -> None:
    plain = LocalCluster(nodes=1, start=False)
    for operation in (plain.partition, plain.heal):
        with pytest.raises(ClusterError, match="isolated_nodes=True"):
            operation("head")
    for operation in (cluster.partition, cluster.heal):
        with pytest.raises(ClusterError, match="no node named"):
            operation("worker-99")
        with pytest.raises(ClusterError, match="head node cannot be partitioned"):
            operation(cluster.head)
    assert not cluster.network.is_cut(cluster.head.name)  # type: ignore[union-attr]


def test_shutdown_leaves_no_namespace_link_or_process(cluster: LocalCluster) -> None:
    network = cluster.network
    assert network is not None
    worker = cluster.worker_nodes[0]
    cluster.partition(worker)  # a cut link at shutdown is released too
    holders = [link.netns.holder for link in network.nodes.values()]
    spaces = {os.readlink(link.netns.path) for link in network.nodes.values()}
    leaders = [n.leader_pid for n in cluster.nodes]
    cluster.shutdown()
    assert not network.started and not network.nodes
    assert {name for _, name in socket.if_nameindex()} == {"lo"}
    assert all(holder.poll() is not None for holder in holders)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                assert os.readlink(f"/proc/{entry}/ns/net") not in spaces, entry
    assert not [leader for leader in leaders if session_of(leader) is not None]
