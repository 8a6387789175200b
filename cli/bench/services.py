"""``herd bench services``: presence, the cache and erpc on one isolated-node cluster (head +
3 workers, each in its own network namespace; health checks 1000/1000 ms x 5), in one run:

* presence: convergence of every tracker after a node joins, of the cut-off node's tracker after
  a 1 s partition heals (timed on that node), and how long a SIGKILLed node's entries outlive
  its ``NodeDown`` (p50/p99);
* diff fan-out: one presence diff to 1 000 listeners (250 per node), next to one
  ``PubSub.publish`` from the driver to the same listeners;
* cache ``get``: replicated hit (an in-process read) vs a plain Ray actor holding a dict vs
  ``ray.get_actor`` + call; and a partitioned get (a call to the owner);
* ``erpc.multicall`` over all nodes vs a hand-written ``ray.wait`` + ``ray.get`` on plain
  pinned actors, and with one node SIGSTOPped: elapsed against the deadline.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import ray

from herd.cli.bench.report import BenchReport, bench_cluster, percentile, summary_ms
from herd.platform import erpc, rpc
from herd.platform.control_plane import pinned_options
from herd.platform.membership import Membership, NodeDown, NodeUp
from herd.platform.pubsub import PubSub
from herd.platform.pubsub_node import PubSubNode, node_actor_options
from herd.platform.waiting import wait_until
from herd.replication.cache import Cache
from herd.replication.presence import Presence
from herd.replication.presence_tracker import diff_topic

HEALTH = {"initial_delay_ms": 1000, "period_ms": 1000, "timeout_ms": 1000,
          "failure_threshold": 5}
TOPIC = "bench"
WAIT_S = 60.0


@ray.remote(num_cpus=0)
class _Member:
    def ping(self) -> str:
        return ray.get_runtime_context().get_node_id()


@ray.remote(num_cpus=0)
class _DigestWatcher:
    """On one node: when its tracker's digest reaches a given one (the wall-clock time). The
    bench asks it rather than calling the tracker itself: a call from the driver to a node
    that was just cut off may wait out TCP's retransmission backoff on the driver's own
    connection, which would time the measurement, not the presence."""

    def __init__(self, tracker: Any) -> None:
        self.tracker = tracker

    async def until(self, digest: list[Any], timeout_s: float) -> float:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if await rpc.aget(self.tracker.digest.remote(), 5, "digest") == digest:
                return time.time()
            await asyncio.sleep(0.002)
        return float("nan")


@ray.remote(num_cpus=0)
class _DictActor:
    def __init__(self) -> None:
        self.data = {"k": {"v": 1}}

    def get(self, key: str) -> Any:
        return self.data.get(key)


@ray.remote(num_cpus=0)
class _ListenerFarm:
    """``count`` pubsub listeners of one topic on its node, polled concurrently; ``wait``
    answers the wall-clock time each got its first message."""

    def __init__(self, node_id: str, topic: str, count: int) -> None:
        self.node = PubSubNode.options(**node_actor_options(node_id)).remote(node_id)
        self.topic, self.count = topic, count
        self.ids: list[str] = []

    async def open(self) -> int:
        self.ids = await asyncio.gather(*(rpc.aget(self.node.open_listener.remote(
            self.topic, 10), 30, "open listener") for _ in range(self.count)))
        return len(self.ids)

    async def wait(self, timeout_s: float) -> list[float]:
        async def first(listener_id: str) -> float:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                got, _ = await rpc.aget(self.node.poll.remote(listener_id, self.topic, 2.0, 10),
                                        5, "poll listener")
                if got:
                    return time.time()
            return float("nan")
        return list(await asyncio.gather(*(first(i) for i in self.ids)))


def _converged(presence: Presence) -> bool:
    digests = list(presence.digests(timeout=10).values())
    return all(d == digests[0] for d in digests)


def _presence_rounds(cluster: Any, presence: Presence, rounds: int) -> dict[str, list[float]]:
    join_s, heal_s, leave_s, detect_s = [], [], [], []
    membership = Membership.get()
    for n in range(rounds):
        with membership.watch() as watch:
            node = cluster.add_node(region="us")
            while not isinstance(event := watch.next(timeout=WAIT_S), NodeUp) \
                    or event.node_id != node.node_id:
                pass
        seen = time.monotonic()
        member = _Member.options(**pinned_options(node.node_id)).remote()
        rpc.get(member.ping.remote(), timeout=WAIT_S)
        presence.track(member, TOPIC, f"joined-{n}", {"n": n})
        wait_until(lambda joined=node.node_id: _converged(presence)
                   and joined in presence.digests(), WAIT_S, interval=0.01,
                   what="converged after the join")
        join_s.append(time.monotonic() - seen)
        cut = cluster.nodes[2]
        watcher = _DigestWatcher.options(**pinned_options(cut.node_id)).remote(
            presence.tracker(cut.node_id))
        rpc.get(watcher.until.remote([], 0), timeout=WAIT_S)  # running before the cut
        cluster.partition(cut)
        presence.track(member, TOPIC, f"cut-{n}", {"n": n})
        time.sleep(1.0)  # the partition, shorter than failure detection
        majority = rpc.get(presence.tracker(node.node_id).digest.remote(), timeout=WAIT_S)
        cluster.heal(cut)
        healed = time.time()
        seen = rpc.get(watcher.until.remote(majority, WAIT_S), timeout=WAIT_S + 5)
        heal_s.append(seen - healed)
        wait_until(lambda: _converged(presence), WAIT_S, interval=0.01, what="converged")
        with membership.watch() as watch:
            killed = time.monotonic()
            cluster.kill_node(node)
            while not isinstance(event := watch.next(timeout=WAIT_S), NodeDown) \
                    or event.node_id != node.node_id:
                pass
        down = time.monotonic()
        detect_s.append(down - killed)
        wait_until(lambda key=f"joined-{n}": all(
            key not in presence.list(TOPIC, node_id=other) for other in presence.digests()),
            WAIT_S, interval=0.01, what="dead node's entries gone")
        leave_s.append(time.monotonic() - down)
    return {"join": join_s, "heal": heal_s, "leave": leave_s, "detect": detect_s}


def _fan_out(cluster: Any, presence: Presence, listeners: int) -> dict[str, list[float]]:
    node_ids = [n.node_id for n in cluster.nodes if n.alive]
    per_node = listeners // len(node_ids)
    out: dict[str, list[float]] = {}
    member = _Member.options(**pinned_options(cluster.head.node_id)).remote()
    rpc.get(member.ping.remote(), timeout=WAIT_S)
    for label, topic in (("presence diff", diff_topic(presence.name, "fan")),
                         ("PubSub.publish", "bench-plain")):
        farms = [_ListenerFarm.options(**pinned_options(n)).remote(n, topic, per_node)
                 for n in node_ids]
        rpc.get([f.open.remote() for f in farms], timeout=WAIT_S)
        waits = [f.wait.remote(30.0) for f in farms]
        time.sleep(0.5)  # every poll outstanding
        sent = time.time()
        if label == "presence diff":
            presence.track(member, "fan", "someone", {})
        else:
            PubSub().publish(topic, {"joins": {"someone": [{}]}, "leaves": {}})
        got = [t for batch in rpc.get(waits, timeout=WAIT_S) for t in batch]
        out[label] = [t - sent for t in got if t == t]
        for farm in farms:
            ray.kill(farm)
    return out


def _timed(fn: Any, n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - started) / n


def _cache_gets(cluster: Any, n: int) -> list[dict[str, Any]]:
    replicated = Cache.start("bench-r", topology="replicated", timeout=WAIT_S)
    replicated.put("k", {"v": 1})
    partitioned = Cache.start("bench-p", topology="partitioned", timeout=WAIT_S)
    partitioned.put("k", {"v": 1})
    plain = _DictActor.options(name="bench-dict", **pinned_options(cluster.head.node_id)).remote()
    rpc.get(plain.get.remote("k"), timeout=WAIT_S)
    rows = [
        ("replicated hit (in-process)", _timed(lambda: replicated.get("k"), n * 100)),
        ("partitioned get (owner call)", _timed(lambda: partitioned.get("k"), n)),
        ("Ray actor call (dict)", _timed(lambda: ray.get(plain.get.remote("k")), n)),
        ("ray.get_actor + call", _timed(lambda: ray.get(ray.get_actor("bench-dict").get.remote(
            "k")), n)),
    ]
    replicated.close()
    base = rows[0][1]
    return [{"case": "cache get: " + label, "mean_us": t * 1e6, "vs_local_hit": t / base}
            for label, t in rows]


def _noop() -> int:
    return 1


def _multicall(cluster: Any, rounds: int) -> list[dict[str, Any]]:
    node_ids = [n.node_id for n in cluster.nodes if n.alive]
    plain = [_Member.options(**pinned_options(n)).remote() for n in node_ids]
    rpc.get([p.ping.remote() for p in plain], timeout=WAIT_S)
    erpc.multicall(node_ids, _noop, timeout=WAIT_S)

    def by_hand() -> None:
        refs = [p.ping.remote() for p in plain]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=5.0)
        ray.get(ready)

    herd_s = _timed(lambda: erpc.multicall(node_ids, _noop, timeout=5.0), rounds)
    ray_s = _timed(by_hand, rounds)
    paused = cluster.nodes[1]
    cluster.pause_node(paused)
    try:
        elapsed = []
        for _ in range(3):
            started = time.monotonic()
            outcome = erpc.multicall(node_ids, _noop, timeout=0.5)
            elapsed.append(time.monotonic() - started)
            assert paused.node_id in outcome.bad
    finally:
        cluster.resume_node(paused)
    return [{"case": f"multicall over {len(node_ids)} nodes", "mean_us": herd_s * 1e6,
             "vs_ray": herd_s / ray_s},
            {"case": "hand-written ray.wait + ray.get", "mean_us": ray_s * 1e6, "vs_ray": 1.0},
            {"case": "multicall, one node paused, deadline 500 ms",
             "mean_us": sum(elapsed) / len(elapsed) * 1e6,
             "over_deadline_ms_max": (max(elapsed) - 0.5) * 1e3}]


def run(rounds: int = 3, listeners: int = 1000, gets: int = 2000) -> BenchReport:
    rows: list[dict[str, Any]] = []
    with bench_cluster(nodes=4, regions=["eu", "us"], isolated_nodes=True,
                       health_check=HEALTH) as cluster:
        presence = Presence.start("bench", timeout=WAIT_S)
        rows += _multicall(cluster, rounds * 20)
        rows += _cache_gets(cluster, gets)
        for label, samples in _fan_out(cluster, presence, listeners).items():
            rows.append({"case": f"fan-out to {len(samples)} listeners: {label}",
                         **summary_ms(samples)})
        measured = _presence_rounds(cluster, presence, rounds)
        for label, key in (("presence converged after a join (from NodeUp)", "join"),
                           ("presence converged after a 1 s partition heals", "heal"),
                           ("node failure detection (kill -> NodeDown)", "detect"),
                           ("dead node's entries gone after NodeDown", "leave")):
            rows.append({"case": label, **summary_ms(measured[key])})
    return BenchReport(name="services", rows=rows, params={
        "nodes": 4, "health_check": HEALTH, "rounds": rounds, "listeners": listeners,
        "heartbeat_ms": 100, "heal_p99_ms": percentile(measured["heal"], 99) * 1e3})
