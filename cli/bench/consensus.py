"""``herd bench consensus``: a 3-member KV group on the workers of a fresh 5-node cluster.

* committed commands per second with 1, 16 and 64 concurrent clients (asyncio clients in two
  load actors, each command a ``put`` with its own client id and sequence number, sent to the
  leader member: one call per command, and coalesced, one call per process for what its
  clients have in flight), commit latency p50/p99;
* linearizable read latency through ``Group.query``: ReadIndex (a heartbeat round) vs the
  leader lease (no round trip);
* leader SIGKILL -> first commit on the new leader (Raft's election timeout, not Ray's node
  death detection), three times;
* a member's node SIGKILLed after 100 000 entries: the learner that replaces it (snapshot +
  log tail) caught up and promoted;
* baselines in the same run, single writers not replicated by consensus: Ray's GCS KV put and
  the registry's compare-and-set, from the driver.

Targets on this 2-core machine: >= 5 000 commands/s with 64 clients, p99 commit latency
<= 20 ms with one client, a new leader commits <= 1.0 s after the SIGKILL, a replaced member
caught up within 5 s for a 100 000-entry log.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from typing import Any

import ray

from herd.cli.bench.report import BenchReport, bench_cluster, percentile
from herd.consensus import KV, Group
from herd.consensus.kv import Put
from herd.consensus.machine import Envelope
from herd.platform import kv, rpc
from herd.platform.control_plane import pinned_options
from herd.platform.waiting import wait_until
from herd.registry.client import Registry

HEALTH = {"initial_delay_ms": 1000, "period_ms": 1000, "timeout_ms": 1000,
          "failure_threshold": 3}


@ray.remote(num_cpus=0)
class _Load:
    """``clients`` asyncio clients, each sending puts one after another to the leader. With
    ``coalesce``, the commands its clients have in flight go out together as one call
    (``commands``), the way a client process multiplexes its callers."""

    async def run(self, leader: Any, clients: int, seconds: float,
                  coalesce: bool = True) -> list[float]:
        latencies: list[float] = []
        deadline = time.monotonic() + seconds
        queue: asyncio.Queue[tuple[Envelope, asyncio.Future[tuple[str, Any]]]] = asyncio.Queue()

        async def sender() -> None:  # cancelled once the clients are done
            while True:
                batch = [await queue.get()]
                while not queue.empty():
                    batch.append(queue.get_nowait())
                answers = await leader.commands.remote([e for e, _ in batch], 5.0)
                for (_, future), answer in zip(batch, answers, strict=True):
                    future.set_result(answer)

        async def client() -> None:
            client_id, sequence = uuid.uuid4().hex, 0
            while time.monotonic() < deadline:
                sequence += 1
                envelope = Envelope(client_id, sequence, Put(key=f"k{sequence % 64}",
                                                             value=sequence), 0.0)
                started = time.perf_counter()
                if coalesce:
                    future = asyncio.get_running_loop().create_future()
                    await queue.put((envelope, future))
                    status, _ = await future
                else:
                    status, _ = await leader.command.remote(envelope, 5.0)
                if status == "ok":
                    latencies.append(time.perf_counter() - started)

        senders = [asyncio.ensure_future(sender())] if coalesce else []
        await asyncio.gather(*(client() for _ in range(clients)))
        for task in senders:
            task.cancel()
        return latencies


def run(seconds: float = 5.0, reads: int = 300, kills: int = 3,
        catch_up_entries: int = 100_000) -> BenchReport:
    with bench_cluster(nodes=5, regions=["us-east"], health_check=HEALTH) as cluster:
        group = Group.start("bench", machine=KV, replicas=3, members="auto",
                            snapshot_every=20_000)
        head = cluster.head.node_id
        loads = [_Load.options(**pinned_options(head)).remote() for _ in range(2)]
        rows = [_throughput(group, loads, clients, seconds, coalesce=False)
                for clients in (1, 16, 64)]
        rows += [_throughput(group, loads, clients, seconds, coalesce=True)
                 for clients in (16, 64)]
        rows += [_reads(group, consistency, reads) for consistency in ("linearizable", "lease")]
        rows.append(_leader_kills(group, kills))
        rows.append(_catch_up(cluster, group, loads, catch_up_entries))
        rows += _baselines(reads)
        group.stop()
    by_metric = {row["metric"]: row for row in rows}
    rate64 = max(by_metric["commands/s, 64 clients"]["ops_per_s"],
                 by_metric["commands/s, 64 clients, coalesced per process"]["ops_per_s"])
    p99_one = by_metric["commands/s, 1 clients"]["p99_ms"]
    kill_s = by_metric["leader SIGKILL -> first commit"]["max_s"]
    catch_s = by_metric["replaced member caught up"]["seconds"]
    gcs_rate = by_metric["baseline: GCS KV put"]["ops_per_s"]
    return BenchReport(
        name="consensus", rows=rows,
        params={"seconds": seconds, "reads": reads, "kills": kills,
                "catch_up_entries": catch_up_entries,
                "load_average": os.getloadavg(),
                "consensus_64_over_gcs_put": round(rate64 / gcs_rate, 2)},
        notes=[_goal(">= 5000 committed commands/s with 64 clients", rate64 >= 5000,
                     f"{rate64:.0f}/s"),
               _goal("p99 commit latency <= 20 ms with one client", p99_one <= 20,
                     f"{p99_one:.1f} ms"),
               _goal("new leader commits <= 1.0 s after the leader's SIGKILL", kill_s <= 1.0,
                     f"worst {kill_s:.2f} s"),
               _goal(f"replaced member caught up within 5 s ({catch_up_entries} entries)",
                     catch_s <= 5.0, f"{catch_s:.1f} s")])


def _goal(what: str, met: bool, value: str) -> str:
    return f"goal {what}: {'met' if met else 'missed'} ({value})"


def _leader_handle(group: Group) -> tuple[Any, dict[str, Any]]:
    leader = wait_until(group.leader_status, 30, what="a leader")
    return group.handle(leader["member"]), leader


def _throughput(group: Group, loads: list[Any], clients: int, seconds: float,
                coalesce: bool) -> dict[str, Any]:
    handle, _ = _leader_handle(group)
    split = [clients // 2 + clients % 2, clients // 2] if clients > 1 else [1]
    started = time.monotonic()
    results = rpc.get([load.run.remote(handle, n, seconds, coalesce)
                       for load, n in zip(loads, split, strict=False)], timeout=seconds + 60)
    took = time.monotonic() - started
    latencies = [x for part in results for x in part]
    how = ", coalesced per process" if coalesce else ""
    return {"metric": f"commands/s, {clients} clients{how}", "ops_per_s": len(latencies) / took,
            "p50_ms": percentile(latencies, 50) * 1e3, "p99_ms": percentile(latencies, 99) * 1e3,
            "n": len(latencies)}


def _reads(group: Group, consistency: str, count: int) -> dict[str, Any]:
    group.command(("put", "read-me", 1))
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        group.query(("get", "read-me"), consistency=consistency)  # type: ignore[arg-type]
        samples.append(time.perf_counter() - started)
    return {"metric": f"read {consistency} (Group.query)",
            "ops_per_s": count / sum(samples), "p50_ms": percentile(samples, 50) * 1e3,
            "p99_ms": percentile(samples, 99) * 1e3, "n": count}


def _leader_kills(group: Group, kills: int) -> dict[str, Any]:
    took = []
    for round_ in range(kills):
        handle, leader = _leader_handle(group)
        pid = rpc.get(handle.where.remote(), timeout=5)[1]
        group.command(("put", "before-kill", round_))
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        group.command(("put", "after-kill", round_), timeout=10)
        took.append(time.monotonic() - killed)
        wait_until(lambda: all(s["role"] != "unreachable" for s in group.status()), 60,
                   what="the killed member restarted")
    return {"metric": "leader SIGKILL -> first commit", "p50_s": percentile(took, 50),
            "max_s": max(took), "n": kills}


def _catch_up(cluster: Any, group: Group, loads: list[Any], entries: int) -> dict[str, Any]:
    handle, leader = _leader_handle(group)
    while leader["last_index"] < entries:
        rpc.get([load.run.remote(handle, 32, 5.0, True) for load in loads], timeout=120)
        handle, leader = _leader_handle(group)
    victim = next(s for s in group.status() if s["role"] == "follower")
    cluster.kill_node(cluster.node_by_id(victim["node_id"]))
    new_member: dict[str, Any] = {}

    def learner_listed() -> bool:
        status = group.leader_status()
        if status and status["learners"]:
            new_member["id"] = status["learners"][0]
            return True
        return False

    wait_until(learner_listed, 120, interval=0.02, what="a learner replacing the dead member")
    added = time.monotonic()
    wait_until(lambda: (s := group.leader_status()) is not None
               and new_member["id"] in s["voters"], 120, interval=0.02,
               what="the learner promoted")
    return {"metric": "replaced member caught up", "seconds": time.monotonic() - added,
            "log_entries": leader["last_index"], "first_index": leader["first_index"]}


def _baselines(count: int) -> list[dict[str, Any]]:
    samples = []
    for i in range(count):
        started = time.perf_counter()
        kv.put(f"bench/consensus/{i % 64}", b"x")
        samples.append(time.perf_counter() - started)
    rows = [{"metric": "baseline: GCS KV put", "ops_per_s": count / sum(samples),
             "p50_ms": percentile(samples, 50) * 1e3, "p99_ms": percentile(samples, 99) * 1e3,
             "n": count}]
    registry = Registry.start("bench-consensus")
    epoch = 0
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        epoch = registry.compare_and_set("cas-key", epoch, handle=None).epoch
        samples.append(time.perf_counter() - started)
    rows.append({"metric": "baseline: registry compare_and_set",
                 "ops_per_s": count / sum(samples), "p50_ms": percentile(samples, 50) * 1e3,
                 "p99_ms": percentile(samples, 99) * 1e3, "n": count})
    return rows
