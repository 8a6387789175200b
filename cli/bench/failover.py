"""``herd bench failover --children K``: SIGKILL a node holding K children and time until all K
answer calls again, herd's dynamic supervisor next to Ray-native ``max_restarts=-1`` actors.

Same topology for both, one after the other in one cluster (head in us-east, workers in
us-west): K actors on the only us-west worker, then a second us-west worker joins (passive
redistribution: nothing moves), then the first is SIGKILLed. herd's children are reached
through their names (registry lookups, as ``via`` does); Ray's through their handles (Ray
restarts them behind the same handle). A probe keeps one ``ping`` outstanding per actor and
notes when each answers; "all answer" is the slowest. Ray's own detection (``ray.nodes()``
shows the node dead) is timed in the same runs.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import ray
from ray.exceptions import RayError

from herd.cli.bench.report import BenchReport, bench_cluster, summary_ms
from herd.platform.cluster import LocalCluster
from herd.platform.errors import HerdError, HerdTimeoutError
from herd.platform.gcs import nodes
from herd.platform.waiting import wait_until
from herd.registry import Registry
from herd.supervisors.dynamic.member import member_handle
from herd.supervisors.dynamic.supervisor import DynamicSupervisor
from herd.supervisors.otp.spec import ChildSpec

REGION = "us-west"
OPTIONS = {"num_cpus": 0.01}
DEADLINE_S = 180.0
PROBE_POLL_S = 0.01
START_THREADS = 8


class Pinger:
    """The benchmark's actor: answers where it runs."""

    def ping(self) -> int:
        return os.getpid()


RayPinger = ray.remote(max_restarts=-1, max_task_retries=0)(Pinger)


def run(children: int = 30) -> BenchReport:
    with bench_cluster(nodes=2, regions=["us-east", REGION]) as cluster:
        herd_answer, herd_detect = _herd_round(cluster, children)
        ray_answer, ray_detect = _ray_round(cluster, children)
        health = cluster.health_check
    herd_all, ray_all = max(herd_answer), max(ray_answer)
    detection = (herd_detect + ray_detect) / 2
    rows = [{"actors": "herd dynamic supervisor", "k": children,
             "detect_s": herd_detect, "all_answer_s": herd_all,
             "after_detect_s": herd_all - herd_detect, **summary_ms(herd_answer)},
            {"actors": "ray max_restarts=-1", "k": children,
             "detect_s": ray_detect, "all_answer_s": ray_all,
             "after_detect_s": ray_all - ray_detect, **summary_ms(ray_answer)}]
    return BenchReport(
        name="failover", rows=rows,
        params={"children": children, "health_check": health.model_dump(),
                "expected_detection_s": health.expected_detection_s(),
                "herd_vs_ray_all_answer_ratio": round(herd_all / ray_all, 3),
                "goal_ratio": 1.25,
                "herd_minus_detection_s": round(herd_all - detection, 3),
                "goal_after_detection_s": 2.0},
        notes=["p50/p99/mean_ms: per-actor time from SIGKILL to its first answer; "
               "all_answer_s: the slowest actor; detect_s: SIGKILL -> ray.nodes() shows the "
               "node dead"])


# ------------------------------------------------------------------------------ rounds
def _herd_round(cluster: LocalCluster, k: int) -> tuple[list[float], float]:
    sup = DynamicSupervisor.start("bench-failover", members={"region": REGION})
    try:
        ids = [f"bench-failover-{i}" for i in range(k)]
        with ThreadPoolExecutor(START_THREADS) as pool:
            list(pool.map(lambda i: sup.start_child(
                ChildSpec(id=i, actor=Pinger, options=OPTIONS, shutdown="brutal_kill")), ids))
        victim = _only_worker(cluster)
        _expect_all_on(sup, victim.node_id)
        standby = cluster.add_node(region=REGION)
        wait_until(lambda: _member_ready(sup, standby.node_id), DEADLINE_S,
                   what="standby member up")
        registry = Registry.start()

        def resolve(i: int) -> Any:
            return registry.lookup(f"{sup.name}/{ids[i]}")

        _probe(resolve, k, time.time(), time.monotonic() + DEADLINE_S)  # all answer now
        _expect_all_on(sup, victim.node_id)  # passive: the join moved nothing
        return _kill_and_probe(cluster, victim, resolve, k)
    finally:
        sup.stop()


def _ray_round(cluster: LocalCluster, k: int) -> tuple[list[float], float]:
    actors = [RayPinger.options(label_selector={"region": REGION}, **OPTIONS).remote()
              for _ in range(k)]
    try:
        _probe(lambda i: actors[i], k, time.time(), time.monotonic() + DEADLINE_S)
        victim = _only_worker(cluster)
        cluster.add_node(region=REGION)
        return _kill_and_probe(cluster, victim, lambda i: actors[i], k)
    finally:
        for actor in actors:
            ray.kill(actor, no_restart=True)


def _only_worker(cluster: LocalCluster) -> Any:
    workers = [n for n in cluster.worker_nodes if n.region == REGION]
    if len(workers) != 1:
        raise HerdError(f"the benchmark needs exactly one {REGION} worker, found {len(workers)}")
    return workers[0]


def _expect_all_on(sup: DynamicSupervisor, node_id: str) -> None:
    nodes = {c.node_id for c in sup.which_children()}
    if nodes != {node_id}:
        raise HerdError(f"children expected on {node_id[:12]} only, found on {nodes}")


def _member_ready(sup: DynamicSupervisor, node_id: str) -> bool:
    handle = member_handle(sup.name, node_id)
    if handle is None:
        return False
    try:
        ray.get(handle.stats.remote(), timeout=5)
        return True
    except (RayError, ray.exceptions.GetTimeoutError):
        return False


# ------------------------------------------------------------------------------- probe
def _kill_and_probe(cluster: LocalCluster, victim: Any, resolve: Callable[[int], Any],
                    k: int) -> tuple[list[float], float]:
    detected: list[float] = []
    done = threading.Event()
    killed_at = time.time()

    def watch_ray() -> None:
        while not done.is_set():
            if any(n.node_id == victim.node_id and not n.alive for n in nodes()):
                detected.append(time.time() - killed_at)
                return
            time.sleep(0.02)

    watcher = threading.Thread(target=watch_ray, daemon=True)
    watcher.start()
    try:
        cluster.kill_node(victim)
        answers = _probe(resolve, k, killed_at, time.monotonic() + DEADLINE_S)
    finally:
        done.set()
        watcher.join(timeout=5)
    if not detected:
        raise HerdTimeoutError("the killed node was never reported dead")
    return answers, detected[0]


def _probe(resolve: Callable[[int], Any], k: int, since: float,
           deadline: float) -> list[float]:
    """Seconds from ``since`` until each actor first answers a ping. One ping outstanding per
    actor; a failed ping is re-sent to whatever ``resolve`` returns then."""
    answered: dict[int, float] = {}
    pending: dict[Any, int] = {}
    while len(answered) < k:
        if time.monotonic() > deadline:
            raise HerdTimeoutError(f"{k - len(answered)} of {k} actors never answered")
        busy = set(pending.values())
        for i in range(k):
            if i not in answered and i not in busy:
                handle = resolve(i)
                if handle is not None:
                    pending[handle.ping.remote()] = i
        if not pending:
            time.sleep(PROBE_POLL_S)
            continue
        ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=PROBE_POLL_S)
        for ref in ready:
            i = pending.pop(ref)
            try:
                ray.get(ref, timeout=0)
            except RayError:
                continue
            answered[i] = time.time() - since
    return [answered[i] for i in range(k)]
