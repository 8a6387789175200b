"""``herd bench restart``: SIGKILL a child's worker process; time until its replacement answers.

Three identical actors of the same class, pinned to the same worker node, in the same run:

* **herd**: a child of a root supervisor (``max_restarts=0`` on Ray; herd restarts it). The
  caller reaches it the way users do, ``via("<supervisor>/<id>").ping.call()``: the call hits the
  dead holder, waits for the supervisor to register the replacement, and calls it.
* **herd warm**: the same under a supervisor with ``warm={"standby": 2}``: the replacement is
  a standby shell already running on that node (``herd.supervisors.warm``), so no process
  starts. Before each of its samples the pool is refilled (untimed), as between two crashes.
* **ray**: the same class with Ray's ``max_restarts=-1, max_task_retries=-1``; the call is
  retried by Ray until the restarted actor answers.

Samples alternate between the three (the machine is shared and noisy), with a pause between
samples so that each starts with the node's idle worker pool refilled. The report has p50/p99/mean
per side and the herd/ray and warm/ray ratios.
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
from herd.platform.waiting import wait_until
from herd.registry import Registry, via
from herd.supervisors.otp.spec import ChildSpec
from herd.supervisors.otp.supervisor import Supervisor

__all__ = ["Pinger", "run"]

SUPERVISOR = "bench-restart"
WARM_SUPERVISOR = "bench-restart-warm"
CHILD = "pinger"
CALL_TIMEOUT_S = 60.0
WARM_STANDBY = 2


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
    samples: dict[str, list[float]] = {"herd": [], "warm": [], "ray": []}
    with bench_cluster(nodes=nodes) as cluster:
        node = cluster.worker_nodes[0]
        pin = pinned_options(node.node_id)
        Registry.start("default")
        spec = ChildSpec(id=CHILD, actor=Pinger, options=pin, shutdown="brutal_kill")
        budget = {"max_restarts": repetitions + warmup + 1, "max_seconds": 3600}
        sup = Supervisor.start(SUPERVISOR, [spec], **budget)
        warm = Supervisor.start(WARM_SUPERVISOR, [spec], warm={"standby": WARM_STANDBY},
                                **budget)
        native = ray.remote(Pinger).options(max_restarts=-1, max_task_retries=-1, **pin).remote()
        warm_ping = via(f"{WARM_SUPERVISOR}/{CHILD}", timeout=CALL_TIMEOUT_S).ping.call
        sides = {"herd": via(f"{SUPERVISOR}/{CHILD}", timeout=CALL_TIMEOUT_S).ping.call,
                 "warm": warm_ping,
                 "ray": lambda: rpc.get(native.ping.remote(), timeout=CALL_TIMEOUT_S)}
        try:
            for index in range(warmup + repetitions):
                for side, ping in sides.items():
                    if side == "warm":
                        wait_until(lambda: _standby_ready(warm), CALL_TIMEOUT_S,
                                   what="warm shells refilled")
                    took = _kill_and_wait(ping)
                    if index >= warmup:
                        samples[side].append(took)
                    time.sleep(pause_s)
            pool = warm.warm_status()
        finally:
            sup.stop()
            warm.stop()
            ray.kill(native)
    stats = {side: summary_ms(values) for side, values in samples.items()}
    rows: list[dict[str, Any]] = [{"side": "herd (supervisor + via)", **stats["herd"]},
                                  {"side": "herd warm (standby shell)", **stats["warm"]},
                                  {"side": "ray (max_restarts=-1)", **stats["ray"]}]
    ratios = {}
    for side in ("herd", "warm"):
        ratios[side] = {key: stats[side][key] / stats["ray"][key]
                        for key in ("p50_ms", "p99_ms", "mean_ms")}
        rows.append({"side": f"ratio {side}/ray", **ratios[side]})
    return BenchReport(
        name="restart", rows=rows,
        params={"repetitions": repetitions, "warmup": warmup, "pause_s": pause_s,
                "nodes": nodes, "pinned_to": node.name, "warm_standby": WARM_STANDBY,
                "warm_taken": pool["taken"] if pool else None,
                "warm_missed": pool["missed"] if pool else None,
                "goal_warm_p99_ms": 50.0},
        notes=["time from SIGKILL of the actor's worker process until a call returns from "
               "its replacement (goal: herd no slower than 1.2x ray; warm p99 <= 50 ms)",
               f"ratio herd/ray: p50 {ratios['herd']['p50_ms']:.2f}x, "
               f"mean {ratios['herd']['mean_ms']:.2f}x; warm/ray: p50 "
               f"{ratios['warm']['p50_ms']:.3f}x, p99 {ratios['warm']['p99_ms']:.3f}x"])


def _standby_ready(sup: Supervisor) -> bool:
    """Every shape's pool is full again (a refill still starting its process would take a core
    from the restart being timed: the bench times restarts slower than the pool refills)."""
    status = sup.warm_status()
    return bool(status and status["targets"] and all(
        len(status["ready"].get(shape, [])) >= target
        for shape, target in status["targets"].items()))


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
