"""``herd bench lightweight`` parts (c) and (d), on a cluster of their own.

(c) Failover of ``failover_children`` lightweight children after a node SIGKILL. A dynamic
supervisor with members in region us-west starts them all on the only us-west worker with one
``start_children`` call (its rate is a row too); a second us-west worker joins (passive: nothing
moves; its member creates its host as soon as it sees lightweight records), then the first is
SIGKILLed. Timed from the kill: ``detect_s`` until ``ray.nodes()`` shows it dead, ``claimed_s``
until the registry names the survivor's host as the holder of every child's name
(``keys_of``), ``answer_s`` until every child has answered a call by name through that holder
(batched: ``call_children``, ``PING_CHUNK`` names a call). The split: detection, claims
(claimed - detected), restarts (answered - claimed). Then, untimed, every record is checked
(one per child, naming the survivor and its host), and ``via_ping_all_s`` times one call per
child from the driver as ``via`` makes it (10 000 Ray calls: the driver's own cost, not
failover).

(d) Registry write throughput in the same run: ``register`` one name at a time vs
``register_many`` (one batch) vs ``compare_and_set_many``, names per second.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import ray

from herd.cli.bench.report import bench_cluster
from herd.platform.cluster import LocalCluster
from herd.platform.errors import HerdError, HerdTimeoutError
from herd.platform.gcs import nodes
from herd.platform.rpc import get
from herd.platform.waiting import wait_until
from herd.registry import Registration, Registry
from herd.registry.models import actor_id
from herd.supervisors.dynamic.member import member_handle
from herd.supervisors.dynamic.spec import DynamicChildInfo
from herd.supervisors.dynamic.supervisor import DynamicSupervisor
from herd.supervisors.otp.spec import ChildSpec

REGION = "us-west"
DEADLINE_S = 300.0
#: Poll of the records while timing (each poll reads every record: not too often).
POLL_S = 0.25
#: Poll of the names the standby's host holds while waiting for the claims (names only).
CLAIM_POLL_S = 0.05
#: Children per batched ping call (``call_children``).
PING_CHUNK = 1000
SUP = "bench-lw-failover"
#: The hosts' loop-lag watchdog threshold: above the default 1 s, since on a loaded 2-core
#: machine a host starting thousands of children can miss its loop for a second.
LAG_THRESHOLD_S = 3.0


@ray.remote(num_cpus=0)
class Holder:
    """Holds the names of the registry benchmark."""

    def ping(self) -> int:
        return 1


def run(idle: type, failover_children: int, single_registers: int,
        batch_registers: int) -> list[dict[str, Any]]:
    """The rows of parts (c) and (d); ``idle``: the benchmark's child class."""
    with bench_cluster(nodes=2, regions=["us-east", REGION]) as cluster:
        rows = _failover(cluster, idle, failover_children)
        rows += _registry(single_registers, batch_registers)
    return rows


# ------------------------------------------------------------------------------ failover
def _failover(cluster: LocalCluster, idle: type, n: int) -> list[dict[str, Any]]:
    sup = DynamicSupervisor.start(SUP, members={"region": REGION}, reconcile_interval_s=0.5,
                                  lightweight={"max_children_per_host": n + 10,
                                               "lag_threshold_s": LAG_THRESHOLD_S},
                                  timeout=DEADLINE_S)
    try:
        specs = [ChildSpec(id=f"c{i}", actor=idle, kind="lightweight", shutdown="brutal_kill")
                 for i in range(n)]
        began = time.perf_counter()
        results = sup.start_children(specs, timeout=DEADLINE_S)
        spawn_s = time.perf_counter() - began
        failed = [r for r in results if not isinstance(r, DynamicChildInfo)]
        if failed:
            raise HerdError(f"{len(failed)} children failed to start: {failed[0]}")
        victim = next(node for node in cluster.worker_nodes if node.region == REGION)
        standby = cluster.add_node(region=REGION)
        wait_until(lambda: _standby_ready(standby.node_id, n), DEADLINE_S,
                   what="the standby member's host and specs")
        registry = Registry.start()
        if {_owner(r) for r in _records(registry)} != {victim.node_id}:
            raise HerdError("the children are not all on the victim node")
        times = _kill_and_time(cluster, victim, registry, n)
    finally:
        sup.stop(timeout=DEADLINE_S)
    split = {"detection_s": times["detect_s"],
             "claims_s": times["claimed_s"] - times["detect_s"],
             "restarts_s": times["answer_s"] - times["claimed_s"]}
    return [{"case": "spawn", "kind": "lightweight (DynamicSupervisor.start_children)",
             "n": n, "seconds": spawn_s, "per_s": n / spawn_s},
            {"case": "failover", "kind": "lightweight (node SIGKILL)", "n": n, **times,
             **split, "after_detect_s": times["answer_s"] - times["detect_s"]}]


def _standby_ready(node_id: str, n: int) -> bool:
    """The standby member runs its host and has read the specs ahead (as it would have had
    time to in a cluster that has run for a while)."""
    member = member_handle(SUP, node_id)
    if member is None:
        return False
    try:
        stats = get(member.stats.remote(), timeout=5, what="member stats")
    except Exception:  # not up yet
        return False
    return stats["host"] is not None and stats["specs_cached"] >= n


def _records(registry: Registry) -> list[Registration]:
    return registry.select(prefix=f"{SUP}/", timeout=DEADLINE_S)


def _owner(reg: Registration) -> str:
    return str(reg.meta["owner"])


def _kill_and_time(cluster: LocalCluster, victim: Any, registry: Registry,
                   n: int) -> dict[str, float]:
    times: dict[str, float] = {}
    done = threading.Event()
    standby = next(node for node in cluster.worker_nodes
                   if node.region == REGION and node.node_id != victim.node_id)
    host = get(member_handle(SUP, standby.node_id).lightweight_host.remote(), timeout=30,
               what="the standby's host")

    def watch_ray() -> None:
        while not done.is_set():
            if any(node.node_id == victim.node_id and not node.alive for node in nodes()):
                times["detect_s"] = time.time() - killed_at
                return
            time.sleep(0.02)

    watcher = threading.Thread(target=watch_ray, daemon=True)
    killed_at = time.time()
    watcher.start()
    try:
        cluster.kill_node(victim)
        deadline = time.monotonic() + DEADLINE_S
        # Claims name the standby's host as holder: poll the names it holds (cheap), not
        # every record (which would load the registry the failover is waiting on).
        while len(names := registry.keys_of(host, timeout=DEADLINE_S)) < n:
            if time.monotonic() > deadline:
                raise HerdTimeoutError("the children were not all claimed in time")
            time.sleep(CLAIM_POLL_S)
        times["claimed_s"] = time.time() - killed_at
        _ping_held(host, names, deadline)
        times["answer_s"] = time.time() - killed_at
        regs = _records(registry)
        if len(regs) != n or any(_owner(r) != standby.node_id or r.handle is None
                                 or r.holder_id != actor_id(host) for r in regs):
            raise HerdError("the records do not all name the standby and its host")
        began = time.perf_counter()
        _ping_all(registry, regs, deadline)
        times["via_ping_all_s"] = time.perf_counter() - began
    finally:
        done.set()
        watcher.join(timeout=5)
    if "detect_s" not in times:
        raise HerdTimeoutError("the killed node was never reported dead")
    return times


def _ping_held(host: Any, names: list[str], deadline: float) -> None:
    """One answered call from every child, by name, through ``host`` (the holder the registry
    names for all of them), ``PING_CHUNK`` names a call: the time the children take to
    answer, not the time this driver takes to send 10 000 calls (``_ping_all``)."""
    pending = sorted(names)
    while pending:
        if time.monotonic() > deadline:
            raise HerdTimeoutError(f"{len(pending)} children never answered")
        chunks = [pending[i:i + PING_CHUNK] for i in range(0, len(pending), PING_CHUNK)]
        refs = [host.call_children.remote(chunk, "ping", (), {}) for chunk in chunks]
        failed: list[str] = []
        for chunk, ref in zip(chunks, refs, strict=True):
            try:
                answers = get(ref, timeout=max(1.0, deadline - time.monotonic()),
                              what="batched ping")
            except (HerdError, ray.exceptions.RayError):
                failed += chunk
                continue
            failed += [name for name, (ok, _) in zip(chunk, answers, strict=True) if not ok]
        pending = failed
        if pending:
            time.sleep(POLL_S)


def _ping_all(registry: Registry, regs: list[Registration], deadline: float) -> None:
    """One answered call from every child, one Ray call each through the holder and route its
    record names (as ``via``); a call that fails is sent again."""
    pending = {r.key: r for r in regs}
    while pending:
        if time.monotonic() > deadline:
            raise HerdTimeoutError(f"{len(pending)} children never answered")
        refs = {getattr(r.handle, r.meta["route"]).remote(r.meta["route_key"], "ping", (), {}):
                key for key, r in pending.items()}
        ready, _ = ray.wait(list(refs), num_returns=len(refs),
                            timeout=max(1.0, deadline - time.monotonic()))
        for ref in ready:
            try:
                ray.get(ref, timeout=0)
            except ray.exceptions.RayError:
                continue
            del pending[refs[ref]]
        if pending:
            time.sleep(POLL_S)
            pending = {r.key: r for r in _records(registry) if r.key in pending
                       and r.handle is not None}


# ------------------------------------------------------------------------------ registry
def _registry(single: int, batch: int) -> list[dict[str, Any]]:
    registry = Registry.start("bench-lw-registry")
    holder = Holder.remote()
    get(holder.ping.remote(), timeout=DEADLINE_S, what="holder")
    try:
        began = time.perf_counter()
        for i in range(single):
            registry.register(f"single/{i}", holder, {"i": i}, timeout=DEADLINE_S)
        single_s = time.perf_counter() - began
        began = time.perf_counter()
        results = registry.register_many([(f"many/{i}", holder, {"i": i}) for i in range(batch)],
                                         timeout=DEADLINE_S)
        many_s = time.perf_counter() - began
        epochs = [(r.key, r.epoch, {"meta": {"i": -1}}) for r in results
                  if isinstance(r, Registration)]
        began = time.perf_counter()
        claimed = registry.compare_and_set_many(epochs, timeout=DEADLINE_S)
        cas_s = time.perf_counter() - began
        failures = sum(not isinstance(r, Registration) for r in [*results, *claimed])
        if failures:
            raise HerdError(f"{failures} batched registry writes failed")
        registry.remove_many([f"single/{i}" for i in range(single)]
                             + [f"many/{i}" for i in range(batch)], timeout=DEADLINE_S)
    finally:
        ray.kill(holder)
    return [{"case": "registry", "kind": "register (one at a time)", "n": single,
             "seconds": single_s, "per_s": single / single_s},
            {"case": "registry", "kind": "register_many (one batch)", "n": batch,
             "seconds": many_s, "per_s": batch / many_s},
            {"case": "registry", "kind": "compare_and_set_many (one batch)", "n": batch,
             "seconds": cas_s, "per_s": batch / cas_s}]
