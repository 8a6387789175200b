"""``herd bench lightweight``: lightweight children next to actor children, in one run.

(a) Spawn rate and memory per idle child. Host: ``children`` lightweight children started on
one host actor in batches (``start_children``), timed from the driver; memory is the host's RSS
growth per child (the children's own state, one small int, is in it too; the per-child estimate
of the host's status is reported beside it). Supervisor: ``via_supervisor`` lightweight
children started one by one with ``Supervisor.start_child`` (registry off: the registry's write
is measured by ``herd bench registry``). Actor children: ``actors`` started one by one under the
same supervisor; memory is the RSS of each child's process.

(b) Restart latency: a child crashes (a method raises; actor children ``exit("error: ...")``),
then the time until a call by name is answered by the new incarnation (``via(name).ping.call()``
waits for it; an actor child may answer once more before its process ends), p50/p99 over
``restarts`` lightweight and ``actor_restarts`` actor crashes.

(c) Failover of ``failover_children`` lightweight children after a node SIGKILL, split into
detection, claims and restarts, and (d) registry ``register_many`` throughput vs single
``register``: ``herd.cli.bench.lightweight_failover`` (a cluster of their own, 2 workers).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import ray

from herd.cli.bench import lightweight_failover
from herd.cli.bench.report import BenchReport, bench_cluster, summary_ms
from herd.platform.rpc import get
from herd.registry import via
from herd.supervisors import ChildSpec, Supervisor, exit
from herd.supervisors.lightweight import LightweightHost
from herd.supervisors.lightweight.memory import rss_bytes
from herd.supervisors.otp.classes import ShippedClass

CALL_TIMEOUT_S = 120.0
BATCH = 1000
TARGETS = {"spawns_per_s": 5000, "bytes_per_idle_child": 10 * 1024, "restart_p99_ms": 10.0,
           "failover_after_detect_s": 2.0, "register_many_per_s": 5000}


class Idle:
    """The benchmark's child: a counter that can crash or exit."""

    def __init__(self) -> None:
        self.n = 0

    def ping(self) -> int:
        self.n += 1
        return self.n

    def crash(self) -> None:
        raise RuntimeError("bench crash")

    def leave(self) -> None:
        exit("error: bench crash")


def run(children: int = 10_000, via_supervisor: int = 500, actors: int = 5,
        restarts: int = 200, actor_restarts: int = 5, failover_children: int = 10_000,
        single_registers: int = 300, batch_registers: int = 10_000) -> BenchReport:
    rows: list[dict[str, Any]] = []
    params: dict[str, Any] = {"children": children, "via_supervisor": via_supervisor,
                              "actors": actors, "restarts": restarts,
                              "actor_restarts": actor_restarts,
                              "failover_children": failover_children,
                              "single_registers": single_registers,
                              "batch_registers": batch_registers, "targets": TARGETS}
    with bench_cluster(nodes=1, regions=["us-east"]):
        rows.append(_host_spawn(children, params))
        sup = Supervisor.start("bench-lightweight", [], max_restarts=1_000_000, max_seconds=1,
                               registry=None,
                               lightweight={"max_children_per_host": via_supervisor + 10})
        try:
            rows.append(_supervisor_spawn(sup, "lightweight", via_supervisor))
            rows.append(_supervisor_spawn(sup, "actor", actors))
        finally:
            sup.stop(timeout=CALL_TIMEOUT_S)
        named = Supervisor.start("bench-restart", [
            ChildSpec(id="light", actor=Idle, kind="lightweight", shutdown="brutal_kill"),
            ChildSpec(id="heavy", actor=Idle, shutdown="brutal_kill", options={"num_cpus": 0})],
            max_restarts=1_000_000, max_seconds=1)
        try:
            rows.append(_restarts(named, "light", "lightweight", restarts))
            rows.append(_restarts(named, "heavy", "actor", actor_restarts))
        finally:
            named.stop(timeout=CALL_TIMEOUT_S)
    rows += lightweight_failover.run(Idle, failover_children, single_registers, batch_registers)
    return BenchReport(name="lightweight", rows=rows, params=params,
                       notes=["bytes_per_child: RSS growth of the host (lightweight) or RSS of "
                              "the child's process (actor)",
                              "restart: from the crashing call's error to the next answer by "
                              "name",
                              "failover: seconds from the node's SIGKILL; claims_s = claimed_s - "
                              "detect_s, restarts_s = answer_s - claimed_s (answers batched per "
                              "host); via_ping_all_s: afterwards, one via-style call per child "
                              "from the driver (the driver's own cost)"])


def _host_spawn(children: int, params: dict[str, Any]) -> dict[str, Any]:
    host = LightweightHost.options(max_concurrency=1000).remote(
        "bench", children + 10, 5.0, 1.0)
    get(host.ready.remote(), timeout=CALL_TIMEOUT_S, what="host ready")
    shipped = ShippedClass.of(Idle)
    get(host.start_children.remote([("warm", shipped, (), {}, True)]), timeout=CALL_TIMEOUT_S,
        what="warm-up")
    before = get(host.status.remote(False), timeout=CALL_TIMEOUT_S, what="status")["rss_bytes"]
    began = time.perf_counter()
    for first in range(0, children, BATCH):
        items = [(f"c{i}", shipped, (), {}, True)
                 for i in range(first, min(first + BATCH, children))]
        results = get(host.start_children.remote(items), timeout=CALL_TIMEOUT_S, what="spawn")
        failed = [r for r in results if isinstance(r, str)]
        if failed:
            raise RuntimeError(f"{len(failed)} lightweight children failed: {failed[0]}")
    seconds = time.perf_counter() - began
    status = get(host.status.remote(True), timeout=CALL_TIMEOUT_S, what="status")
    ray.kill(host)
    estimate = sum(c["memory_bytes"] for c in status["by_child"]) / max(status["children"], 1)
    params["state_estimate_bytes_per_child"] = round(estimate)
    return {"case": "spawn", "kind": "lightweight (host batch)", "n": children,
            "seconds": seconds, "per_s": children / seconds,
            "bytes_per_child": (status["rss_bytes"] - before) / children}


def _supervisor_spawn(sup: Supervisor, kind: str, n: int) -> dict[str, Any]:
    options = {"options": {"num_cpus": 0}} if kind == "actor" else {}
    began = time.perf_counter()
    for i in range(n):
        sup.start_child(ChildSpec(id=f"{kind}-{i}", actor=Idle, kind=kind,
                                  shutdown="brutal_kill", **options), timeout=CALL_TIMEOUT_S)
    seconds = time.perf_counter() - began
    if kind == "actor":
        pids = [c.pid for c in sup.which_children() if c.id.startswith("actor-")]
        sizes = [rss_bytes(pid) if pid is not None else None for pid in pids]
        # a pid this process cannot read (already gone) leaves the column blank
        per_child: float | str = ("" if not sizes or None in sizes
                                  else sum(s or 0 for s in sizes) / len(sizes))
    else:
        per_child = ""  # the host's RSS per child is measured on the batch row
    return {"case": "spawn", "kind": f"{kind} (start_child)", "n": n, "seconds": seconds,
            "per_s": n / seconds, "bytes_per_child": per_child}


def _restarts(sup: Supervisor, child_id: str, kind: str, n: int) -> dict[str, Any]:
    name = via(f"bench-restart/{child_id}", timeout=CALL_TIMEOUT_S)
    name.ping.call()
    samples = []
    for _ in range(n):
        if kind == "lightweight":
            with contextlib.suppress(RuntimeError):
                name.crash.call()
        else:  # on the current handle: via's .call() would retry on the successor
            holder = next(c.handle for c in sup.which_children() if c.id == child_id)
            with contextlib.suppress(ray.exceptions.RayError):
                get(holder.leave.remote(), timeout=CALL_TIMEOUT_S, what="crash")
        began = time.perf_counter()
        # A new incarnation answers 1; a dying actor child may still answer its old count.
        while name.ping.call() != 1:
            if time.perf_counter() - began > CALL_TIMEOUT_S:
                raise TimeoutError(f"{child_id} did not come back")
        samples.append(time.perf_counter() - began)
    return {"case": "restart", "kind": kind, "n": n, **summary_ms(samples)}


    return None
