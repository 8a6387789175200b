"""``herd bench membership``: SIGKILL a worker node and time until ``NodeDown`` reaches an actor
subscriber and a driver iterator, next to Ray's own view of the death (``ray.nodes()``)."""

from __future__ import annotations

import functools
import time
from typing import Any

import ray

from herd.cli.bench.report import BenchReport, bench_cluster, summary_ms
from herd.platform import rpc
from herd.platform.control_plane import pinned_options
from herd.platform.gcs import nodes
from herd.platform.membership import Membership, MembershipWatch, NodeDown
from herd.platform.waiting import deadline_in, time_left, wait_until


@ray.remote(num_cpus=0)
class _DownRecorder:
    def __init__(self) -> None:
        self.down: dict[str, float] = {}

    def on_membership_event(self, event: Any) -> None:
        if isinstance(event, NodeDown):
            self.down.setdefault(event.node_id, time.time())

    def seen(self, node_id: str) -> float | None:
        return self.down.get(node_id)


def run(rounds: int = 3) -> BenchReport:
    subscriber_s: list[float] = []
    driver_s: list[float] = []
    ray_s: list[float] = []
    with bench_cluster(nodes=2) as cluster:
        membership = Membership.start()
        recorder = _DownRecorder.options(**pinned_options(cluster.head.node_id)).remote()
        membership.subscribe(recorder, replay=False)
        for _ in range(rounds):
            victim = cluster.add_node(region="us-west")
            wait_until(functools.partial(_member, membership, victim.node_id), 15,
                       what="the new node in membership")
            with membership.watch() as watch:  # its position is fixed here, before the kill
                killed = time.time()
                cluster.kill_node(victim)
                ray_dead = wait_until(functools.partial(_ray_sees_dead, victim.node_id), 30,
                                      interval=0.01, what="ray.nodes() showing the node dead")
                ray_s.append(ray_dead - killed)
                driver_s.append(_node_down_at(watch, victim.node_id, 30) - killed)
            seen = wait_until(functools.partial(_recorded_down, recorder, victim.node_id), 30,
                              what="NodeDown at the subscriber")
            subscriber_s.append(seen - killed)
        health = cluster.health_check
    rows = [{"path": "ray.nodes() shows Alive=False", **summary_ms(ray_s)},
            {"path": "NodeDown at actor subscriber", **summary_ms(subscriber_s)},
            {"path": "NodeDown at driver iterator", **summary_ms(driver_s)}]
    ratio = summary_ms(subscriber_s)["p50_ms"] / max(summary_ms(ray_s)["p50_ms"], 1e-9)
    return BenchReport(
        name="membership", rows=rows,
        params={"health_check": health.model_dump(),
                "expected_detection_s": health.expected_detection_s(),
                "poll_interval_s": 0.1, "rounds": rounds,
                "subscriber_vs_ray_p50_ratio": round(ratio, 3)})


def _member(membership: Membership, node_id: str) -> bool:
    return node_id in {n.node_id for n in membership.nodes()}


def _node_down_at(watch: MembershipWatch, node_id: str, timeout: float) -> float:
    """When (``time.time()``) the watch delivered ``NodeDown`` for ``node_id``."""
    deadline = deadline_in(timeout)
    while True:
        event = watch.next(timeout=time_left(deadline))  # HerdTimeoutError past the deadline
        if isinstance(event, NodeDown) and event.node_id == node_id:
            return time.time()


def _recorded_down(recorder: Any, node_id: str) -> float | None:
    seen: float | None = rpc.get(recorder.seen.remote(node_id), timeout=5)
    return seen


def _ray_sees_dead(node_id: str) -> float | None:
    for node in nodes():
        if node.node_id == node_id and not node.alive:
            return time.time()
    return None
