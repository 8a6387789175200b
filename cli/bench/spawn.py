"""``herd bench spawn``: ``start_child`` throughput of a dynamic supervisor next to raw Ray actor
creation (create K actors, wait until each answers), in the same cluster and run.

Both sides create the same actor class with the same options, spread over the same three
nodes (herd by its hash ring, Ray with ``SPREAD``), and are measured the same way: from the
first call until every actor is up (``start_child`` returns once its child is constructed and
registered; a raw actor once it answers a ping). Concurrent: K calls at once (``start_child``
from a thread pool). Sequential: one after the other (the per-child latency). Rounds alternate
raw and herd; the ratio is herd's throughput over raw's.
"""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import ray

from herd.cli.bench.failover import Pinger
from herd.cli.bench.report import BenchReport, bench_cluster
from herd.platform.rpc import get
from herd.supervisors.dynamic.supervisor import DynamicSupervisor
from herd.supervisors.otp.spec import ChildSpec

OPTIONS = {"num_cpus": 0.01}
MAX_THREADS = 16
SETTLE_S = 2.0
CALL_TIMEOUT_S = 120.0

RawPinger = ray.remote(Pinger)


def run(children: int = 10, rounds: int = 3) -> BenchReport:
    timings: dict[tuple[str, str], list[float]] = {}
    with bench_cluster(nodes=3) as cluster:
        sup = DynamicSupervisor.start("bench-spawn")
        try:
            _warm_up(sup, len(cluster.nodes))
            for round_no in range(rounds):
                for mode in ("concurrent", "sequential"):
                    for side, spawn in (("raw", _raw), ("herd", _herd)):
                        seconds = spawn(sup, children, f"{mode[0]}{round_no}", mode)
                        timings.setdefault((side, mode), []).append(seconds)
                        time.sleep(SETTLE_S)  # let the killed actors' processes go
        finally:
            sup.stop()
    rows = []
    for (side, mode), samples in timings.items():
        best = min(samples)
        rows.append({"side": side, "mode": mode, "k": children, "rounds": len(samples),
                     "best_s": best, "mean_s": statistics.fmean(samples),
                     "actors_per_s": children / best})
    ratios = {mode: round(min(timings[("raw", mode)]) / min(timings[("herd", mode)]), 3)
              for mode in ("concurrent", "sequential")}
    return BenchReport(
        name="spawn", rows=rows,
        params={"children": children, "nodes": 3, "rounds": rounds,
                "herd_vs_raw_throughput": ratios, "goal": 0.8},
        notes=["herd_vs_raw_throughput: herd actors/s over raw actors/s (best round of each)"])


def _warm_up(sup: DynamicSupervisor, nodes: int) -> None:
    """Export the classes and start a worker process on every node, for both sides."""
    raw = [RawPinger.options(scheduling_strategy="SPREAD", **OPTIONS).remote()
           for _ in range(nodes)]
    get([a.ping.remote() for a in raw], timeout=CALL_TIMEOUT_S, what="raw warm-up")
    for actor in raw:
        ray.kill(actor)
    ids = [f"warm-{i}" for i in range(nodes)]
    with ThreadPoolExecutor(nodes) as pool:
        list(pool.map(lambda i: sup.start_child(_spec(i)), ids))
        list(pool.map(sup.terminate_child, ids))


def _spec(child_id: str) -> ChildSpec:
    return ChildSpec(id=child_id, actor=Pinger, options=OPTIONS, shutdown="brutal_kill")


def _raw(sup: DynamicSupervisor, k: int, tag: str, mode: str) -> float:
    began = time.perf_counter()
    actors: list[Any] = []
    if mode == "concurrent":
        actors = [RawPinger.options(scheduling_strategy="SPREAD", **OPTIONS).remote()
                  for _ in range(k)]
        get([a.ping.remote() for a in actors], timeout=CALL_TIMEOUT_S, what="raw spawn")
    else:
        for _ in range(k):
            actors.append(RawPinger.options(scheduling_strategy="SPREAD", **OPTIONS).remote())
            get(actors[-1].ping.remote(), timeout=CALL_TIMEOUT_S, what="raw spawn")
    elapsed = time.perf_counter() - began
    for actor in actors:
        ray.kill(actor)
    return elapsed


def _herd(sup: DynamicSupervisor, k: int, tag: str, mode: str) -> float:
    ids = [f"spawn-{tag}-{i}" for i in range(k)]
    began = time.perf_counter()
    if mode == "concurrent":
        with ThreadPoolExecutor(min(k, MAX_THREADS)) as pool:
            list(pool.map(lambda i: sup.start_child(_spec(i), timeout=CALL_TIMEOUT_S), ids))
    else:
        for child_id in ids:
            sup.start_child(_spec(child_id), timeout=CALL_TIMEOUT_S)
    elapsed = time.perf_counter() - began
    with ThreadPoolExecutor(min(k, MAX_THREADS)) as pool:
        list(pool.map(lambda i: sup.terminate_child(i, timeout=CALL_TIMEOUT_S), ids))
    return elapsed
