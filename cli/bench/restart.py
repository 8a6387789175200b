"""``herd bench restart``: SIGKILL a child's worker process; time until its replacement answers.

Two identical actors of the same class, pinned to the same worker node, in the same run:

* **herd**: a child of a root supervisor (``max_restarts=0`` on Ray; herd restarts it). The
  caller reaches it the way users do, ``via("<supervisor>/<id>").ping.call()``: the call hits the
  dead holder, waits for the supervisor to register the replacement, and calls it.
* **ray**: the same class with Ray's ``max_restarts=-1, max_task_retries=-1``; the call is
  retried by Ray until the restarted actor answers.

Samples alternate between the two (the machine is shared and noisy), with a pause between
samples so that each starts with the node's idle worker pool refilled. The report has p50/p99/mean
per side and the herd/ray ratios.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import ray

from herd.cli.bench.report import BenchReport, bench_cluster, summary_ms
from herd.platform import rpc
from herd.platform.control_plane import pinned_options
from herd.platform.errors import ClusterError, ConfigError
from herd.registry import Registry, via
from herd.supervisors.otp.spec import ChildSpec
from herd.supervisors.otp.supervisor import Supervisor

__all__ = ["Pinger", "run"]

SUPERVISOR = "bench-restart"
CHILD = "pinger"
CALL_TIMEOUT_S = 60.0


class Pinger:
    """The benchmarked actor: answers with its process id."""

    def ping(self) -> int:
        return os.getpid()


def run(repetitions: int = 10, warmup: int = 1, pause_s: float = 1.0,
        nodes: int = 3) -> BenchReport:
    """Run the benchmark on a fresh local cluster of ``nodes`` nodes and report it."""
    if repetitions < 1 or warmup < 0 or pause_s < 0 or nodes < 2:
        raise ConfigError("need repetitions >= 1, warmup >= 0, pause_s >= 0 and nodes >= 2",
                          field="bench.restart",
                          value={"repetitions": repetitions, "warmup": warmup,
                                 "pause_s": pause_s, "nodes": nodes})
    samples: dict[str, list[float]] = {"herd": [], "ray": []}
    with bench_cluster(nodes=nodes) as cluster:
        node = cluster.worker_nodes[0]
        pin = pinned_options(node.node_id)
        Registry.start("default")
        sup = Supervisor.start(SUPERVISOR, [ChildSpec(id=CHILD, actor=Pinger, options=pin,
                                                      shutdown="brutal_kill")],
                               max_restarts=repetitions + warmup + 1, max_seconds=3600)
        native = ray.remote(Pinger).options(max_restarts=-1, max_task_retries=-1, **pin).remote()
        herd_target = via(f"{SUPERVISOR}/{CHILD}", timeout=CALL_TIMEOUT_S).ping
        sides = {"herd": herd_target.call,
                 "ray": lambda: rpc.get(native.ping.remote(), timeout=CALL_TIMEOUT_S)}
        try:
            for index in range(warmup + repetitions):
                for side, ping in sides.items():
                    took = _kill_and_wait(ping)
                    if index >= warmup:
                        samples[side].append(took)
                    time.sleep(pause_s)
        finally:
            sup.stop()
            ray.kill(native)
    herd, native_stats = summary_ms(samples["herd"]), summary_ms(samples["ray"])
    rows: list[dict[str, Any]] = [{"side": "herd (supervisor + via)", **herd},
                                  {"side": "ray (max_restarts=-1)", **native_stats}]
    ratio = {"p50": herd["p50_ms"] / native_stats["p50_ms"],
             "mean": herd["mean_ms"] / native_stats["mean_ms"]}
    rows.append({"side": "ratio herd/ray", "p50_ms": ratio["p50"], "mean_ms": ratio["mean"]})
    return BenchReport(
        name="restart", rows=rows,
        params={"repetitions": repetitions, "warmup": warmup, "pause_s": pause_s,
                "nodes": nodes, "pinned_to": node.name},
        notes=["time from SIGKILL of the actor's worker process until a call returns from "
               "its replacement (goal: herd no slower than 1.2x ray)",
               f"ratio herd/ray: p50 {ratio['p50']:.2f}x, mean {ratio['mean']:.2f}x"])


def _kill_and_wait(ping: Any) -> float:
    """SIGKILL the process that answers ``ping`` and time until another process answers."""
    old = ping()
    began = time.perf_counter()
    os.kill(old, signal.SIGKILL)
    new = ping()
    took = time.perf_counter() - began
    if new == old:
        raise ClusterError(f"process {old} still answers after SIGKILL")
    return took
