"""Head-node fault tolerance on a real cluster (head + 2 workers, fast health checks, GCS fault
tolerance on by default): the head is SIGKILLed and started again on the same port and RocksDB
storage. The control plane (membership, registry shards, restarted on the new head) answers again
with its state; children on the workers -- of a dynamic supervisor and of a root OTP supervisor --
keep running through the outage (same pids, same incarnations and epochs, no duplicates); calls
made while the head is down fail with ``ClusterUnavailable`` within their timeout. A cluster
started without fault tolerance refuses ``restart_head()``."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import pytest
import ray
from ray import cloudpickle

from herd.platform import kv, rpc
from herd.platform.cluster import LocalCluster
from herd.platform.config import ClusterConfig
from herd.platform.control_plane import HERD_NAMESPACE, get_named, pinned_options
from herd.platform.errors import ClusterError, ClusterUnavailable, HerdTimeoutError
from herd.platform.gcs import nodes
from herd.platform.logging import get_logger
from herd.platform.membership import Membership
from herd.platform.waiting import wait_until
from herd.registry import Registry
from herd.registry.models import actor_id
from herd.supervisors import ChildSpec, Supervisor
from herd.supervisors.dynamic.supervisor import DynamicSupervisor

WAIT_S = 90.0
OWN_CLUSTER = True  # it restarts the head: no other module shares this cluster
OUTAGE_CALL_S = 3.0
# A call during the outage may take its timeout plus the GCS probe (0.5 s) and scheduling slack
# on a loaded 2-core machine.
OUTAGE_SLACK_S = 3.0
LEDGER = "ft-ledger"
DYNAMIC = "ft-dyn"
ROOT = "ft-root"
DYNAMIC_IDS = [f"dyn-{i}" for i in range(3)]

log = get_logger("tests.head_restart")

cloudpickle.register_pickle_by_value(sys.modules[__name__])


@ray.remote(num_cpus=0)
class StartLedger:
    """Every start of every child: (tag, pid). Detached and on a worker, so it outlives the head
    restart and the driver's reconnect."""

    def __init__(self) -> None:
        self.starts: list[tuple[str, int]] = []

    def started(self, tag: str, pid: int) -> None:
        self.starts.append((tag, pid))

    def report(self) -> list[tuple[str, int]]:
        return list(self.starts)


class FtChild:
    def __init__(self, tag: str) -> None:
        ledger = ray.get_actor(LEDGER, namespace=HERD_NAMESPACE)
        rpc.get(ledger.started.remote(tag, os.getpid()), timeout=30)
        self.node = ray.get_runtime_context().get_node_id()

    def where(self) -> tuple[int, str]:
        return os.getpid(), self.node


@ray.remote(num_cpus=0)
class AsyncCaller:
    """On a worker: the asyncio faces (``rpc.aget``, ``kv.aget``) during the outage."""

    def __init__(self) -> None:
        self.membership = ray.get_actor("herd/membership", namespace=HERD_NAMESPACE)

    async def outage_calls(self, timeout: float) -> list[tuple[str, str, float]]:
        """(call, error class, seconds) of a membership call and a KV read."""
        found = []
        calls = (("rpc.aget", lambda: rpc.aget(self.membership.nodes.remote(), timeout)),
                 ("kv.aget", lambda: kv.aget("ft/anything", timeout=timeout)))
        for what, call in calls:
            began = time.monotonic()
            try:
                await call()
                error = "none"
            except Exception as exc:
                error = type(exc).__name__
            found.append((what, error, time.monotonic() - began))
        return found


@ray.remote(num_cpus=0)
class Holder:
    def ping(self) -> int:
        return os.getpid()


def ledger_starts() -> list[tuple[str, int]]:
    ledger = ray.get_actor(LEDGER, namespace=HERD_NAMESPACE)
    return rpc.get(ledger.report.remote(), timeout=WAIT_S)


def dynamic_view(sup: DynamicSupervisor) -> dict[str, tuple[int, str, int, int]]:
    """id -> (pid, node, incarnation, epoch) of every running child, asking each child."""
    view = {}
    for info in sup.which_children(timeout=WAIT_S):
        assert info.status == "running" and info.handle is not None, info
        pid, node = rpc.get(info.handle.where.remote(), timeout=WAIT_S)
        assert node == info.node_id
        view[info.id] = (pid, node, info.incarnation, info.epoch)
    return view


def root_view(sup: Supervisor) -> tuple[int, str]:
    (child,) = sup.which_children(timeout=WAIT_S)
    assert child.status == "running" and child.handle is not None
    pid, node = rpc.get(child.handle.where.remote(), timeout=WAIT_S)
    assert (pid, node) == (child.pid, child.node_id)
    return pid, node


def outage_call(what: str, call: Any) -> float:
    """Run ``call`` while the head is down: it must raise ``ClusterUnavailable`` within its
    timeout (OUTAGE_CALL_S) plus slack; returns how long it took."""
    began = time.monotonic()
    with pytest.raises(ClusterUnavailable):
        call()
    took = time.monotonic() - began
    assert took < OUTAGE_CALL_S + OUTAGE_SLACK_S, f"{what} took {took:.1f} s"
    log.info("outage_call", what=what, seconds=round(took, 3))
    return took


def control_plane_answers(holder_id: str, head_id: str) -> bool:
    try:
        members = Membership.start().nodes(timeout=5)
        if head_id not in {node.node_id for node in members}:
            return False
        found = Registry.get().lookup("ft-holder", fresh=True, timeout=5)
        return found is not None and actor_id(found) == holder_id
    except (HerdTimeoutError, ray.exceptions.RayActorError):
        return False


def test_head_restart_keeps_worker_children_and_the_control_plane(cluster: LocalCluster) -> None:
    workers = {node.node_id for node in cluster.worker_nodes}
    assert len(workers) == 2
    worker = cluster.worker_nodes[0].node_id
    StartLedger.options(name=LEDGER, namespace=HERD_NAMESPACE, lifetime="detached",
                        **pinned_options(worker)).remote()
    holder = Holder.options(name="ft-holder-actor", namespace=HERD_NAMESPACE,
                            lifetime="detached", **pinned_options(worker)).remote()
    holder_pid = rpc.get(holder.ping.remote(), timeout=WAIT_S)
    registry = Registry.start()
    registry.register("ft-holder", holder, timeout=WAIT_S)
    dynamic = DynamicSupervisor.start(DYNAMIC, reconcile_interval_s=0.5, timeout=WAIT_S)
    for child_id in DYNAMIC_IDS:
        dynamic.start_child(ChildSpec(id=child_id, actor=FtChild, args=(child_id,)),
                            timeout=WAIT_S)
    root = Supervisor.start(ROOT, [ChildSpec(id="solo", actor=FtChild, args=("solo",))],
                            timeout=WAIT_S)
    before = dynamic_view(dynamic)
    root_before = root_view(root)
    assert {node for _, node, _, _ in before.values()} <= workers, "children on the head"
    assert root_before[1] in workers, "the root supervisor's child is on the head"
    starts_before = sorted(ledger_starts())
    assert len(starts_before) == len(DYNAMIC_IDS) + 1
    old_head = cluster.head.node_id
    membership = Membership.start()
    caller = AsyncCaller.options(**pinned_options(worker)).remote()
    rpc.get(caller.outage_calls.remote(OUTAGE_CALL_S), timeout=WAIT_S)  # reached before

    # ---- the outage: the head is SIGKILLed; workers' children keep answering.
    cluster.kill_node(cluster.head)
    outage_call("membership", lambda: membership.nodes(timeout=OUTAGE_CALL_S))
    outage_call("registry lookup",
                lambda: registry.lookup("no-such-name", fresh=True, timeout=OUTAGE_CALL_S))
    outage_call("kv get", lambda: kv.get("ft/anything", timeout=OUTAGE_CALL_S))
    assert rpc.get(holder.ping.remote(), timeout=10) == holder_pid  # reached before: still up
    for what, error, took in rpc.get(caller.outage_calls.remote(OUTAGE_CALL_S), timeout=WAIT_S):
        assert error == "ClusterUnavailable", f"{what} raised {error}"
        assert took < OUTAGE_CALL_S + OUTAGE_SLACK_S, f"{what} took {took:.1f} s"

    # ---- the restart: same port and storage, a new head node id.
    began = time.monotonic()
    registered_s = cluster.restart_head()
    assert cluster.head.node_id not in (None, old_head)
    assert LocalCluster.attach(cluster.run_dir).head_process.args == cluster.head_process.args
    holder = ray.get_actor("ft-holder-actor", namespace=HERD_NAMESPACE)
    wait_until(lambda: control_plane_answers(actor_id(holder), cluster.head.node_id),
               WAIT_S, what="the control plane answering after the head restart")
    answered_s = time.monotonic() - began
    log.info("head_restart_measured", registered_s=round(registered_s, 3),
             control_plane_s=round(answered_s, 3))
    print(f"\nhead restart: new head registered {registered_s:.2f} s after the kill; control "
          f"plane answered {answered_s:.2f} s after restart_head() was called")

    # ---- nothing on the workers was restarted, nothing duplicated, state reloaded.
    assert rpc.get(holder.ping.remote(), timeout=WAIT_S) == holder_pid
    dynamic = DynamicSupervisor.get(DYNAMIC)
    root = Supervisor.get(ROOT)
    assert wait_until(lambda: dynamic_view(dynamic) == before, WAIT_S,
                      what="the dynamic children as before the restart")
    assert dynamic.count_children(timeout=WAIT_S)["active"] == len(DYNAMIC_IDS)
    assert root_view(root) == root_before
    assert sorted(ledger_starts()) == starts_before, "a child was started again"
    records = Registry.get().select(prefix=f"{DYNAMIC}/", timeout=WAIT_S)
    assert [record.key for record in records] == [f"{DYNAMIC}/{i}" for i in DYNAMIC_IDS]
    alive = [node for node in nodes() if node.alive]
    assert sorted(n.node_id for n in alive) == sorted(workers | {cluster.head.node_id})

    dynamic.stop(timeout=WAIT_S)
    root.stop(timeout=WAIT_S)
    for name in (LEDGER, "ft-holder-actor"):
        handle = get_named(name)
        if handle is not None:
            ray.kill(handle)


def test_restart_head_without_fault_tolerance_is_refused(cluster: LocalCluster) -> None:
    """The opt-out of a ClusterConfig reaches the cluster; restart_head() then refuses at once
    and kills nothing."""
    config = ClusterConfig.from_dict({"mode": "local", "gcs_fault_tolerance": False})
    with LocalCluster.from_config(config) as plain:
        assert not plain.head_process.fault_tolerant
        assert not plain.head_process.storage_path.exists()
        pids = plain.head.pids
        with pytest.raises(ClusterError, match="gcs_fault_tolerance=False"):
            plain.restart_head()
        assert plain.head.pids == pids
