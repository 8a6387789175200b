"""``herd bench failover``: SIGKILL a node holding K actor children (K = 1, 10, 30, or
``--children K``) and time until all K answer calls again: herd's dynamic supervisor cold, the
same with warm standby workers (``warm={"standby": "auto"}``: the joining node keeps a ready
shell for every child it would take over), and Ray-native ``max_restarts=-1`` actors.

Same topology for all three, one after the other in one cluster (head in us-east, workers in
us-west): K actors on the only us-west worker, then a second us-west worker joins (passive
redistribution: nothing moves; the warm round waits, untimed, until its shells are ready),
then the first is SIGKILLed. herd's children are reached through their names (registry
lookups, routed through a warm shell as ``via`` does); Ray's through their handles (Ray
restarts them behind the same handle). A probe keeps one ``ping`` outstanding per actor and
notes when each answers; "all answer" is the slowest. Ray's own detection (``ray.nodes()``
shows the node dead) is timed in the same runs.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import ray
from ray.exceptions import RayError

from herd.cli.bench.report import BenchReport, bench_cluster, summary_ms
from herd.platform.cluster import LocalCluster
from herd.platform.errors import ConfigError, HerdError, HerdTimeoutError
from herd.platform.gcs import nodes
from herd.platform.waiting import wait_until
from herd.registry import Registration, Registry
from herd.supervisors.dynamic.member import member_handle
from herd.supervisors.dynamic.supervisor import DynamicSupervisor
from herd.supervisors.otp.spec import ChildSpec
from herd.supervisors.warm.handle import WARM_META, WarmHandle
from herd.supervisors.warm.spec import MAX_STANDBY  # the warm round: one shell per child

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


SIDES = {"cold": "herd dynamic supervisor", "warm": "herd warm standby",
         "ray": "ray max_restarts=-1"}


def run(children: int | None = None, ks: Sequence[int] = (1, 10, 30)) -> BenchReport:
    sizes = [children] if children is not None else list(ks)
    if not sizes or any(k < 1 or k > MAX_STANDBY for k in sizes):
        raise ConfigError(f"K must be 1..{MAX_STANDBY}", field="bench.failover.ks", value=sizes)
    rows: list[dict[str, Any]] = []
    after: dict[tuple[str, int], float] = {}
    with bench_cluster(nodes=2, regions=["us-east", REGION]) as cluster:
        for k in sizes:
            rounds = {"cold": _herd_round(cluster, k, warm=False),
                      "warm": _herd_round(cluster, k, warm=True),
                      "ray": _ray_round(cluster, k)}
            for side, (answers, detected) in rounds.items():
                after[side, k] = max(answers) - detected
                rows.append({"actors": SIDES[side], "k": k, "detect_s": detected,
                             "all_answer_s": max(answers), "after_detect_s": after[side, k],
                             **summary_ms(answers)})
        health = cluster.health_check
    return BenchReport(
        name="failover", rows=rows,
        params={"ks": sizes, "health_check": health.model_dump(),
                "expected_detection_s": health.expected_detection_s(),
                "cold_after_detection_s": {k: round(after["cold", k], 3) for k in sizes},
                "warm_after_detection_s": {k: round(after["warm", k], 3) for k in sizes},
                "ray_after_detection_s": {k: round(after["ray", k], 3) for k in sizes},
                "goal_after_detection_s": 2.0, "goal_warm_after_detection_s": 1.5},
        notes=["p50/p99/mean_ms: per-actor time from SIGKILL to its first answer; "
               "all_answer_s: the slowest actor; detect_s: SIGKILL -> ray.nodes() shows the "
               "node dead; after_detect_s: all_answer_s - detect_s"])


# ------------------------------------------------------------------------------ rounds
def _herd_round(cluster: LocalCluster, k: int, warm: bool) -> tuple[list[float], float]:
    sup = DynamicSupervisor.start(
        "bench-failover-warm" if warm else "bench-failover", members={"region": REGION},
        warm={"standby": "auto", "max_standby": k} if warm else None)
    try:
        ids = [f"bench-failover-{i}" for i in range(k)]
        with ThreadPoolExecutor(START_THREADS) as pool:
            list(pool.map(lambda i: sup.start_child(
                ChildSpec(id=i, actor=Pinger, options=OPTIONS, shutdown="brutal_kill")), ids))
        victim = _only_worker(cluster)
        _expect_all_on(sup, victim.node_id)
        standby = cluster.add_node(region=REGION)
        wait_until(lambda: _member_ready(sup, standby.node_id, k if warm else 0), DEADLINE_S,
                   what="standby member up")
        registry = Registry.start()

        def resolve(i: int) -> Any:
            """The holder (cached lookup), as ``via`` calls it: through its shell if warm."""
            reg = registry.entry(f"{sup.name}/{ids[i]}")
            if not isinstance(reg, Registration) or reg.handle is None:
                return None
            return WarmHandle(reg.handle) if reg.meta.get(WARM_META) else reg.handle

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


def _member_ready(sup: DynamicSupervisor, node_id: str, shells: int) -> bool:
    """The member on ``node_id`` answers, with ``shells`` warm shells ready."""
    handle = member_handle(sup.name, node_id)
    if handle is None:
        return False
    try:
        warm = ray.get(handle.stats.remote(), timeout=5)["warm"]
    except (RayError, ray.exceptions.GetTimeoutError):
        return False
    ready = sum(len(pids) for pids in warm["ready"].values()) if warm else 0
    return ready >= shells


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
