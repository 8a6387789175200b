"""``herd bench replication``: how fast replicated stores converge across federated clusters,
and how little a reconciliation after a partition ships.

* (a) Convergence latency: ``regions`` separate Ray clusters, each in its own network namespace,
  federated through their gateways over veth links that add ``delay_ms`` one-way (a delaying
  proxy: the kernel has no netem). A write is made in the first region; the time from its
  acknowledgement until every other region reads it, p50/p99 over ``samples`` writes, and as a
  ratio to the link's round trip (``2 * delay_ms``). Target: p99 <= round trip + 50 ms.
* (b) Local write throughput of one replica (``consistency="local"``: acknowledged once durable
  in the region), from 1 and from 8 client threads in the region's driver.
* (c) Reconciliation after a partition, on the pure protocol core in one process (a cluster
  replica cannot hold ``keys`` keys in this bench's time): two replicas of the same ``keys``
  keys, in sync, cut off while ``changes`` keys change on each side, then healed; time until
  both are equal, and the bytes shipped, against the naive design that ships the full state
  each way. The partition is simulated: nothing is exchanged while the writes are made (what is
  shipped and the time to converge depend on the changes, not on how long the cut lasts; the
  writes take what they take, reported as ``partition_writes_s``). Both directions are pumped
  one after the other in one process, so the time is an upper bound of two concurrent pushers.
  Target: within 5 s, shipping < 15 % of the full state.

(a) and (b) need root in a private network namespace (``make bench`` runs under
``scripts/netns-run``).
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from herd.cli.bench.report import BenchReport, summary_ms
from herd.platform.errors import HerdError
from herd.replication.core import SNAPSHOT_VERSION, CoreConfig, ReplicaCore
from herd.replication.federation.regions import FederatedRegions
from herd.replication.state import ReplicaState

STORE = "bench-replication"
REGION_NAMES = ["us-east", "us-west", "eu-central", "ap-south", "sa-east"]
MAX_CONVERSATION = 16
MAX_ROUNDS = 100_000


def run(regions: int = 3, delay_ms: float = 50.0, samples: int = 50, writes: int = 500,
        keys: int = 1_000_000, changes: int = 50_000, partition_s: float = 30.0,
        clusters: bool = True) -> BenchReport:
    """Run (a) and (b) on ``regions`` federated clusters (unless ``clusters`` is false) and
    (c) on the in-process core with ``keys`` keys and ``changes`` changes per side."""
    rows: list[dict[str, Any]] = []
    params: dict[str, Any] = {"regions": regions, "delay_ms": delay_ms, "samples": samples,
                              "writes": writes, "keys": keys, "changes_per_side": changes}
    if clusters:
        rows += _clusters(REGION_NAMES[:regions], delay_ms, samples, writes, params)
    rows += _reconciliation(keys, changes, partition_s, params)
    return BenchReport(name="replication", rows=rows, params=params, notes=[
        "convergence: from the write's acknowledgement in the first region until every other "
        "region reads it; /rtt is that over the link round trip (2 x delay)",
        "throughput: consistency=local puts (durable in the region's GCS KV before the ack)",
        "reconcile: pure protocol core in one process (no network); 'naive' ships and merges "
        "the full state each way, as a design that sends full state every interval does",
        "partition_s is how long the partition lasts in (a)/(b)-style runs; in (c) what is "
        "shipped depends only on the changes made meanwhile"])


# ------------------------------------------------------------------------ (a) and (b)

def _clusters(names: list[str], delay_ms: float, samples: int, writes: int,
              params: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    started = time.monotonic()
    with FederatedRegions(names, delay_ms=delay_ms) as fed:
        params["cluster_start_s"] = round(time.monotonic() - started, 1)
        fed.on_all("start_store", name=STORE, kind="lww_map", sync_interval_ms=1000)
        origin, others = names[0], names[1:]
        _latency_samples(fed, origin, others, 3)           # warm the connections up
        latencies = _latency_samples(fed, origin, others, samples)
        rtt_ms = 2 * delay_ms
        stats = summary_ms(latencies)
        rows.append({"measure": f"convergence to {len(others)} regions", **_ms(stats),
                     "p50/rtt": stats["p50_ms"] / rtt_ms, "p99/rtt": stats["p99_ms"] / rtt_ms,
                     "target_p99_ms": rtt_ms + 50,
                     "met": stats["p99_ms"] <= rtt_ms + 50})
        gateway = fed[origin].call("gateway_status")
        params["gateway_rtt_ms_last"] = {r: p["last_rtt_ms"] for r, p in gateway["peers"].items()}
        for threads in (1, 8):
            burst = fed[origin].call("write_burst", timeout=600, store=STORE, count=writes,
                                     threads=threads, prefix=f"t{threads}")
            rows.append({"measure": f"local writes/s, {threads} thread(s)",
                         "per_s": burst["ops"] / burst["seconds"],
                         "mean_ms": burst["seconds"] / burst["ops"] * 1e3 * threads})
    return rows


def _latency_samples(fed: FederatedRegions, origin: str, others: list[str],
                     samples: int) -> list[float]:
    """Seconds from each write's ack in ``origin`` until the last other region read it."""
    latencies = []
    with ThreadPoolExecutor(len(others)) as pool:
        for n in range(samples):
            key, value = f"lat-{time.monotonic_ns()}", n
            waits = [pool.submit(fed[r].call, "await_value", store=STORE, key=key, value=value,
                                 timeout=30.0) for r in others]
            time.sleep(0.02)  # the waiters poll before the write lands
            timed = fed[origin].call("timed", store=STORE, method="put", args=[key, value])
            seen = max(w.result() for w in waits)
            latencies.append(max(0.0, seen - timed["t1"]))
            time.sleep(0.05)
    return latencies


def _ms(stats: dict[str, float]) -> dict[str, float]:
    return {"p50_ms": stats["p50_ms"], "p99_ms": stats["p99_ms"], "mean_ms": stats["mean_ms"]}


# ------------------------------------------------------------------------------- (c)

def _reconciliation(keys: int, changes: int, partition_s: float,
                    params: dict[str, Any]) -> list[dict[str, Any]]:
    build_started = time.monotonic()
    a, b = _synced_pair(keys)
    params["reconcile_build_s"] = round(time.monotonic() - build_started, 1)
    full_bytes = len(json.dumps(a.state.payload(), separators=(",", ":")).encode())
    params["full_state_bytes"] = full_bytes
    params["partition_s"] = f"{partition_s} (simulated in (c): no exchange during the writes)"
    # the partition: each side changes `changes` keys (half updates, half new keys)
    writes_started = time.monotonic()
    for n in range(changes):
        a.write("put", _key(n * 2 if n % 2 else keys + n), f"a-{n}")
        b.write("put", _key(n * 2 + 1 if n % 2 else keys + changes + n), f"b-{n}")
    a.take_journal()
    b.take_journal()
    params["partition_writes_s"] = round(time.monotonic() - writes_started, 1)
    naive_a, naive_b = a.state.payload(), b.state.payload()

    started = time.monotonic()
    shipped = _pump(a, b) + _pump(b, a)
    shipped += _pump(a, b)  # what b merged from a and forwards back is acknowledged, not resent
    heal_s = time.monotonic() - started
    equal = a.state.items() == b.state.items()

    naive_started = time.monotonic()
    naive_bytes = 0
    for source, target in ((naive_a, naive_b), (naive_b, naive_a)):
        raw = json.dumps(source, separators=(",", ":")).encode()
        naive_bytes += len(raw)
        replica = ReplicaState("lww_map", "naive")
        replica.merge(target)
        replica.merge(json.loads(raw))
    naive_s = time.monotonic() - naive_started
    return [
        {"measure": f"reconcile {keys} keys, {changes} changes/side", "seconds": heal_s,
         "bytes": shipped, "of_full_state": shipped / (2 * full_bytes), "converged": equal,
         "met": equal and heal_s <= 5.0 and shipped < 0.15 * 2 * full_bytes},
        {"measure": "naive: full state each way", "seconds": naive_s, "bytes": naive_bytes,
         "of_full_state": naive_bytes / (2 * full_bytes)},
    ]


def _key(n: int) -> str:
    return f"key-{n:08d}"


def _core(region: str, epoch: int) -> ReplicaCore:
    config = CoreConfig(STORE, region, ("a", "b"), "lww_map", max_message_bytes=64 << 20,
                        max_buffer_entries=1_000_000, max_buffer_bytes=1 << 30)
    return ReplicaCore(config, epoch)


def _synced_pair(keys: int) -> tuple[ReplicaCore, ReplicaCore]:
    """Replicas a and b restored from the same state of ``keys`` keys (written by an earlier
    incarnation), then in sync with each other after one anti-entropy exchange each way."""
    seed = ReplicaState("lww_map", "seed@1")
    for n in range(keys):
        seed.put(_key(n), n)
    snapshot = {"v": SNAPSHOT_VERSION, "epoch": 1, "state": seed.payload(), "peers": {}}
    del seed
    a = ReplicaCore.restore(_core("a", 2).config, 2, snapshot, [])
    b = ReplicaCore.restore(_core("b", 2).config, 2, snapshot, [])
    _pump(a, b)
    _pump(b, a)
    if a.pending("b") != 0 or b.pending("a") != 0:
        raise HerdError("the replicas built for the reconciliation bench are not in sync")
    return a, b


def _pump(source: ReplicaCore, target: ReplicaCore) -> int:
    """Deliver what ``source`` has for ``target`` until it has nothing more (the conversation
    a pusher has over a healthy link); returns the bytes that crossed."""
    shipped = 0
    for _ in range(MAX_ROUNDS):
        message = source.next_message(target.config.region)
        if message is None:
            return shipped
        for _ in range(MAX_CONVERSATION):
            shipped += len(message)
            reply = target.handle(message, 0)
            if reply is None:
                break
            shipped += len(reply)
            message = source.handle(reply, 0)
            if message is None:
                break
        if source.pending(target.config.region) == 0:
            return shipped
    raise HerdError(f"{source.config.region} -> {target.config.region}: not in sync after "
                    f"{MAX_ROUNDS} rounds")
