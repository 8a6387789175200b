"""Presence, erpc and the replicated cache on one real cluster whose workers each live in a
network namespace of their own (``isolated_nodes``): head (eu), w1 (us), w2 (eu), w3 (us);
health checks 1000/1000 ms x 5, so a node is declared dead ~6 s after it stops answering and a
1.5 s partition or pause is survived.

Order matters (one module cluster, faults accumulate): erpc under a paused node and the
breaker; presence under actor kills, an isolated-node partition with heal, then w3 SIGKILLed
(presence and caches lose it); the partitioned cache then re-homes onto a node that joins.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
from ray import cloudpickle

from herd.chaos.history import History
from herd.chaos.services_checker import check_services
from herd.chaos.services_workload import ServicesWorkload
from herd.platform import deadline, erpc
from herd.platform.breaker import BreakerConfig, BreakerOpen
from herd.platform.errors import ConfigError, HerdTimeoutError
from herd.platform.local.cluster import LocalCluster
from herd.platform.membership import Membership, NodeDown
from herd.platform.waiting import wait_until
from herd.replication.cache import Cache
from herd.replication.presence import Presence

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or {n for _, n in socket.if_nameindex()} != {"lo"},
    reason="needs root in a private network namespace (scripts/netns-run)")

cloudpickle.register_pickle_by_value(sys.modules[__name__])

WAIT_S = 30.0
PARTITION_S = 1.5
PRESENCE = "svc"
ROOM = "room"
HEALTH = {"initial_delay_ms": 1000, "period_ms": 1000, "timeout_ms": 1000, "failure_threshold": 5}


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(nodes=4, regions=["eu", "us"], isolated_nodes=True,
                      health_check=HEALTH) as started:
        started.connect(log_to_driver=False)
        yield started


@pytest.fixture(scope="module")
def presence(cluster: LocalCluster) -> Presence:
    return Presence.start(PRESENCE, timeout=WAIT_S)


class Member:
    """A tracked process: reports where it runs, and can track itself later from a thread
    (so that it does so while its node is cut off)."""

    def __init__(self) -> None:
        self.presence = Presence(PRESENCE, timeout=WAIT_S)

    def where(self) -> tuple[int, str]:
        return os.getpid(), ray.get_runtime_context().get_node_id()

    def warm(self) -> None:
        self.presence.list(ROOM)  # resolves this node's tracker before any partition

    def track_self_after(self, delay_s: float, key: str) -> None:
        me = ray.get_runtime_context().current_actor

        def later() -> None:
            time.sleep(delay_s)
            self.presence.track(me, ROOM, key, {"node": "isolated"})

        threading.Thread(target=later, daemon=True).start()


def node_id_of(cluster: LocalCluster, index: int) -> str:
    node_id = cluster.nodes[index].node_id
    assert node_id is not None
    return node_id


def where_am_i(tag: str) -> tuple[str, str]:
    return tag, ray.get_runtime_context().get_node_id()


def nested_budget(node: str) -> float:
    """Runs on a node; calls back into erpc from there: the inner call inherits the rest."""
    return erpc.call(node, deadline.remaining, 60.0, timeout=60.0)


def touch(path: str) -> None:
    Path(path).write_text("cast")


# ---------------------------------------------------------------------------------- erpc
def test_call_cast_and_spawn_by_id_and_selector(cluster: LocalCluster, tmp_path: Path) -> None:
    head, w1 = node_id_of(cluster, 0), node_id_of(cluster, 1)
    assert erpc.call(w1, where_am_i, "x", timeout=WAIT_S) == ("x", w1)
    tag, node = erpc.call({"region": "us"}, where_am_i, "sel", timeout=WAIT_S)
    assert cluster.node_by_id(node).region == "us"
    inherited = erpc.call(head, nested_budget, w1, timeout=5.0)
    assert 0 < inherited <= 5.0
    with pytest.raises(ZeroDivisionError):  # what the function raised, on the caller's side
        erpc.call(w1, divmod, 1, 0, timeout=WAIT_S)
    marker = tmp_path / "cast"
    assert erpc.cast(w1, touch, str(marker)) is None
    wait_until(marker.exists, WAIT_S, what="cast ran")
    handle = erpc.spawn_on(node_id_of(cluster, 2), Member, timeout=WAIT_S)
    assert ray.get(handle.where.remote(), timeout=WAIT_S)[1] == node_id_of(cluster, 2)
    ray.kill(handle)


def test_bad_targets_are_typed_errors(cluster: LocalCluster) -> None:
    with pytest.raises(erpc.NoMatchingNodes):
        erpc.multicall([], where_am_i, "x", timeout=1)
    with pytest.raises(erpc.NoMatchingNodes):
        erpc.multicall({"region": "mars"}, where_am_i, "x", timeout=1)
    with pytest.raises(erpc.UnknownNode):
        erpc.call("ff" * 28, where_am_i, "x", timeout=1)
    with pytest.raises(ConfigError, match="timeout"):
        erpc.multicall({"region": "eu"}, where_am_i, "x", timeout=0)
    with pytest.raises(ConfigError, match="fn"):
        erpc.call({"region": "eu"}, "not callable", timeout=1)


def test_multicall_with_a_paused_node_returns_in_the_deadline(cluster: LocalCluster) -> None:
    all_nodes = [node_id_of(cluster, i) for i in range(4)]
    warm = erpc.multicall(all_nodes, where_am_i, "warm", timeout=WAIT_S)
    assert set(warm.results) == set(all_nodes) and not warm.bad
    erpc.configure(breaker=BreakerConfig(failure_threshold=2, cool_down_s=1.0))
    paused = cluster.nodes[1]
    cluster.pause_node(paused)
    try:
        started = time.monotonic()
        outcome = erpc.multicall(all_nodes, where_am_i, "m", timeout=0.5)
        took = time.monotonic() - started
        assert set(outcome.bad) == {paused.node_id}
        assert outcome.bad[paused.node_id].reason == "timeout"
        assert set(outcome.results) == set(all_nodes) - {paused.node_id}
        assert took < 0.5 + 0.5, f"multicall took {took:.3f} s for a 0.5 s deadline"
        with pytest.raises(HerdTimeoutError):  # the second failure opens the breaker
            erpc.call(paused.node_id, where_am_i, "c", timeout=0.3)
        assert erpc.breaker_state(paused.node_id) == "open"
        refused_at = time.monotonic()
        with pytest.raises(BreakerOpen):
            erpc.call(paused.node_id, where_am_i, "c", timeout=5)
        assert time.monotonic() - refused_at < 0.1  # refused without being sent
    finally:
        cluster.resume_node(paused)
    wait_until(lambda: erpc.breaker_state(paused.node_id) == "half_open", 5.0,
               what="breaker half-open after its cool-down")
    assert erpc.call(paused.node_id, where_am_i, "trial", timeout=WAIT_S, idempotent=True) \
        == ("trial", paused.node_id)
    assert erpc.breaker_state(paused.node_id) == "closed"
    erpc.configure(breaker=BreakerConfig())


# ---------------------------------------------------------------------------------- presence
def members(cluster: LocalCluster) -> dict[str, Any]:
    handles = {name: erpc.spawn_on(node_id_of(cluster, i), Member, timeout=WAIT_S)
               for name, i in (("a", 1), ("b", 2), ("c", 0), ("d", 3))}
    for handle in handles.values():
        ray.get(handle.warm.remote(), timeout=WAIT_S)
    return handles


@pytest.fixture(scope="module")
def tracked(cluster: LocalCluster, presence: Presence) -> dict[str, Any]:
    return members(cluster)


def views(presence: Presence) -> dict[str, dict[str, list[Any]]]:
    return {node: presence.list(ROOM, node_id=node) for node in presence.digests()}


def converged(presence: Presence) -> list[Any] | None:
    digests = list(presence.digests(timeout=5.0).values())
    return digests[0] if all(d == digests[0] for d in digests) else None


def keys_everywhere(presence: Presence, expected: set[str]) -> bool:
    return all(set(view) == expected for view in views(presence).values())


def test_joins_and_leaves_reach_every_node_and_listeners(presence: Presence,
                                                         tracked: dict[str, Any]) -> None:
    with presence.listen(ROOM, timeout=WAIT_S) as diffs:
        for name in ("a", "b", "d"):
            presence.track(tracked[name], ROOM, name, {"name": name})
        presence.track(tracked["a"], ROOM, "shared", {"by": "a"})
        presence.track(tracked["b"], ROOM, "shared", {"by": "b"})
        # keys first, then both holders of "shared" (they may reach a node one after the other)
        wait_until(lambda: keys_everywhere(presence, {"a", "b", "d", "shared"})
                   and all(len(view["shared"]) == 2 for view in views(presence).values()),
                   WAIT_S, what="joins everywhere")
        assert sorted(presence.list(ROOM)["shared"], key=lambda m: m["by"]) \
            == [{"by": "a"}, {"by": "b"}]
        presence.update(tracked["d"], ROOM, "d", {"name": "d", "status": "away"})
        assert presence.untrack(tracked["b"], ROOM, "shared") == 1
        wait_until(lambda: len(presence.list(ROOM)["shared"]) == 1
                   and presence.list(ROOM)["d"] == [{"name": "d", "status": "away"}],
                   WAIT_S, what="update and untrack seen")
        joined: set[str] = set()
        left: set[str] = set()
        for diff in diffs:
            joined |= set(diff["joins"])
            left |= set(diff["leaves"])
            if {"a", "b", "d", "shared"} <= joined and {"shared", "d"} <= left:
                break
        assert {"a", "b", "d", "shared"} <= joined and {"shared", "d"} <= left


def test_a_killed_actor_leaves_everywhere_within_a_second(presence: Presence,
                                                          tracked: dict[str, Any]) -> None:
    pid, _ = ray.get(tracked["a"].where.remote(), timeout=WAIT_S)
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    wait_until(lambda: all("a" not in v and "shared" not in v
                           for v in views(presence).values()), WAIT_S,
               interval=0.02, what="killed actor's entries gone")
    gone_s = time.monotonic() - killed_at
    assert gone_s < 1.0 + 1.0, f"entries of a dead actor lasted {gone_s:.2f} s"


def test_partitioned_node_and_majority_converge_after_heal(cluster: LocalCluster,
                                                           presence: Presence,
                                                           tracked: dict[str, Any]) -> None:
    isolated = cluster.nodes[2]
    ray.get(tracked["b"].track_self_after.remote(0.3, "b-cut"), timeout=WAIT_S)
    cluster.partition(isolated)
    try:
        presence.track(tracked["c"], ROOM, "c-cut", {"node": "majority"})
        presence.untrack(tracked["d"], ROOM, "d")
        time.sleep(PARTITION_S)  # the cut itself: shorter than failure detection
    finally:
        cluster.heal(isolated)
    healed_at = time.monotonic()
    digest = wait_until(lambda: converged(presence), WAIT_S, interval=0.02,
                        what="presence converged after the heal")
    converged_s = time.monotonic() - healed_at
    keys = {ref[1] for ref, _ in digest}
    assert {"b", "b-cut", "c-cut"} <= keys and "d" not in keys, keys
    assert isolated.node_id in {n.node_id for n in Membership.get().nodes()}  # not declared dead
    assert converged_s < 5.0, f"converged {converged_s:.2f} s after the heal"
    # the trackers gossip by signed datagrams once they know each other's address
    counts = ray.get(presence.tracker(isolated.node_id).stats.remote(), timeout=WAIT_S)["datagrams"]
    assert counts["received"] > 0 and counts["rejected"] == 0, counts


# ---------------------------------------------------------------------------------- cache
def read_until(name: str, key: str, expected: Any, wait_s: float) -> Any:
    """On a node: a replicated-cache client of its own (a mirror of the node's replica) reads
    ``key`` until it is ``expected``; returns what it read last."""
    cache = Cache.start(name, topology="replicated", timeout=wait_s)
    try:
        deadline = time.monotonic() + wait_s
        while cache.get(key) != expected and time.monotonic() < deadline:
            time.sleep(0.01)
        return cache.get(key)
    finally:
        cache.close()


def load_concurrently(name: str, key: str, threads: int, ledger: str) -> list[Any]:
    """On a node: ``threads`` callers of ``get_or_load`` at once; the loader appends a line to
    ``ledger`` (a file every node sees) and takes 0.5 s."""
    cache = Cache.start(name, topology="replicated", timeout=WAIT_S)

    def loader() -> str:
        with open(ledger, "a") as out:
            out.write(f"{os.getpid()}\n")
        time.sleep(0.5)
        return "loaded"

    results: list[Any] = []
    workers = [threading.Thread(target=lambda: results.append(cache.get_or_load(key, loader)))
               for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(WAIT_S)
    cache.close()
    return results


def test_replicated_cache_spreads_writes_and_invalidations(cluster: LocalCluster) -> None:
    cache = Cache.start("svc-r", topology="replicated", ttl=60, timeout=WAIT_S)
    cache.put("k", {"v": 1})
    assert cache.get("k") == {"v": 1}  # the writer's own mirror has it at once
    everywhere = erpc.multicall([{"region": "eu"}, {"region": "us"}], read_until, "svc-r", "k",
                                {"v": 1}, 10.0, timeout=WAIT_S)
    assert len(everywhere.results) == 4 and not everywhere.bad
    assert all(v == {"v": 1} for v in everywhere.results.values())
    cache.delete("k")
    assert cache.get("k") is None
    gone = erpc.multicall([node_id_of(cluster, i) for i in range(4)], read_until, "svc-r", "k",
                          None, 10.0, timeout=WAIT_S)
    assert gone.results and all(v is None for v in gone.results.values()) and not gone.bad
    cache.close()


def test_single_flight_50_getters_call_the_loader_once(cluster: LocalCluster,
                                                       tmp_path: Path) -> None:
    ledger = tmp_path / "loads"
    ledger.touch()
    os.chmod(tmp_path, 0o777)
    outcome = erpc.multicall([node_id_of(cluster, i) for i in range(4)], load_concurrently,
                             "svc-r", "hot", 13, str(ledger), timeout=WAIT_S)
    values = [v for got in outcome.results.values() for v in got]
    assert not outcome.bad and len(values) == 52 and set(values) == {"loaded"}
    assert len(ledger.read_text().splitlines()) == 1


@pytest.fixture(scope="module")
def partitioned(cluster: LocalCluster) -> Cache:
    cache = Cache.start("svc-p", topology="partitioned", backups=1, ttl=300, timeout=WAIT_S)
    for n in range(60):
        cache.put(f"p{n}", n)
    return cache


def placement(cache: Cache) -> dict[str, set[str]]:
    """Which live replicas hold each key."""
    held: dict[str, set[str]] = {}
    for node_id, stats in cache.replica_stats().items():
        for key in stats["keys"]:
            held.setdefault(key, set()).add(node_id)
    return held


def misplaced(cache: Cache, live: set[str]) -> list[str]:
    """What keeps the partitioned cache from being re-homed onto ``live`` (empty: nothing)."""
    stats = cache.replica_stats()
    problems = [f"{node[:8]} sees {len(s['nodes'])} nodes after {s['rehomes']} re-homes"
                for node, s in stats.items() if set(s["nodes"]) != live]
    if set(stats) != live:
        problems.append(f"replicas on {len(stats)} nodes, {len(live)} live")
    held = placement(cache)
    for n in range(60):
        want = set(cache.ring.holders(f"p{n}", live))
        got = held.get(repr(f"p{n}"), set())
        if got != want:
            problems.append(f"p{n}: on {sorted(x[:8] for x in got)}, "
                            f"wanted {sorted(x[:8] for x in want)}")
    return problems


def rehomed(cache: Cache, live: set[str]) -> bool:
    global last_misplaced
    last_misplaced = misplaced(cache, live)
    return not last_misplaced


last_misplaced: list[str] = []


def test_partitioned_cache_places_each_key_on_owner_and_backup(cluster: LocalCluster,
                                                               partitioned: Cache) -> None:
    live = {node_id_of(cluster, i) for i in range(4)}
    wait_until(lambda: rehomed(partitioned, live), WAIT_S, what="keys on their holders")
    assert [partitioned.get(f"p{n}") for n in range(60)] == list(range(60))


def test_a_killed_node_leaves_everywhere_after_detection(cluster: LocalCluster,
                                                         presence: Presence,
                                                         tracked: dict[str, Any],
                                                         partitioned: Cache) -> None:
    victim = cluster.nodes[3]
    presence.track(tracked["d"], ROOM, "d-last", {})
    wait_until(lambda: keys_everywhere(presence, {"b", "b-cut", "c-cut", "d-last"}), WAIT_S,
               what="d-last everywhere")
    with Membership.get().watch() as watch:
        cluster.kill_node(victim)
        while True:
            event = watch.next(timeout=WAIT_S)
            if isinstance(event, NodeDown) and event.node_id == victim.node_id:
                break
    down_at = time.monotonic()
    wait_until(lambda: keys_everywhere(presence, {"b", "b-cut", "c-cut"}), WAIT_S,
               interval=0.02, what="dead node's entries gone")
    gone_s = time.monotonic() - down_at
    assert gone_s < 1.0 + 1.0, f"entries outlived NodeDown by {gone_s:.2f} s"
    outcome = erpc.multicall({"region": "us"}, where_am_i, "after", timeout=WAIT_S)
    assert victim.node_id not in outcome.results and not outcome.bad


def test_partitioned_cache_rehomes_on_leave_and_join(cluster: LocalCluster,
                                                     partitioned: Cache) -> None:
    live = {n.node_id for n in cluster.nodes if n.alive and n.node_id}
    assert len(live) == 3  # w3 was killed above
    with contextlib.suppress(HerdTimeoutError):
        wait_until(lambda: rehomed(partitioned, live), WAIT_S, what="re-homed after the leave")
    assert not last_misplaced
    assert [partitioned.get(f"p{n}") for n in range(60)] == list(range(60))
    joined = cluster.add_node(region="us")
    assert joined.node_id is not None
    live.add(joined.node_id)
    with contextlib.suppress(HerdTimeoutError):
        wait_until(lambda: rehomed(partitioned, live), WAIT_S, what="re-homed after the join")
    assert not last_misplaced
    assert any(joined.node_id in holders for holders in placement(partitioned).values())
    assert [partitioned.get(f"p{n}") for n in range(60)] == list(range(60))
    stats = partitioned.stats()
    assert stats["hits"] >= 120 and stats["misses"] == 0


def test_services_workload_keeps_its_promises(cluster: LocalCluster, presence: Presence,
                                              tracked: dict[str, Any]) -> None:
    joined = cluster.nodes[-1].node_id  # added by the re-homing test
    members = {"b": tracked["b"], "c": tracked["c"],
               "m": erpc.spawn_on(joined, Member, timeout=WAIT_S)}
    cache = Cache.start("svc-chaos", topology="replicated", timeout=WAIT_S)
    history = History()
    ServicesWorkload(presence, cache, members, history, seed=7).run(duration_s=3.0, kills=2)
    cache.close()
    kinds = {invoke.f for invoke, _ in history.completions()}
    assert {"track", "kill", "cache_put", "observe_presence", "observe_cache"} <= kinds
    assert check_services(history, presence_bound_s=1.5, cache_settle_s=1.0) == []
    for handle in members.values():
        ray.kill(handle)
