"""Replicated stores on a real cluster: head us-east, worker-1 us-west, worker-2 eu (a second
us-west node joins for the node-kill test, last). Puts and gets at every consistency level,
convergence across regions, typed ormap values, watchers and subscribers, a replica SIGKILLed
mid-stream that loses no acknowledged write and catches up, quorum writes failing fast while the
other regions' replicas are SIGSTOPped, bad input that changes nothing, and a node kill that
moves a region's replica, which then catches up from its peers."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Any

import pytest
import ray
from ray import cloudpickle

from herd.platform.control_plane import pinned_options
from herd.platform.waiting import wait_until
from herd.replication import (
    ConsistencyUnavailable,
    InvalidValue,
    QuorumNotAchieved,
    ReplicatedStore,
    StoreExists,
    StoreNotFound,
    UnknownRegion,
    ValueTooLarge,
    WrongValueType,
)
from herd.replication.models import supervisor_name
from herd.supervisors import DynamicSupervisor

REGIONS = ["us-east", "us-west", "eu"]
CLUSTER_OPTIONS = {"regions": REGIONS}
WAIT_S = 60.0

cloudpickle.register_pickle_by_value(sys.modules[__name__])


@ray.remote(num_cpus=0)
class Inbox:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def on_change(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def keys(self) -> list[Any]:
        return [k for e in self.events for k in e["changes"]]


@pytest.fixture(scope="module")
def store(cluster: Any) -> Any:
    s = ReplicatedStore.start("carts", regions=REGIONS, kind="lww_map", sync_interval_ms=300,
                              timeout=WAIT_S)
    yield s
    s.stop(forget_data=True)


def converged(store: ReplicatedStore, key: Any, value: Any) -> bool:
    return all(store.get(key, region=r) == value for r in REGIONS)


def replica_pid(store: ReplicatedStore, region: str) -> int:
    return int(store.status()[region]["pid"])


def test_put_get_at_every_consistency_and_convergence(store: ReplicatedStore) -> None:
    assert ReplicatedStore.get("carts").settings == store.settings
    store.put("a", {"cart": 1}, consistency="local", region="us-east")
    assert store.get("a", region="us-east") == {"cart": 1}
    wait_until(lambda: converged(store, "a", {"cart": 1}), timeout=10)
    store.put("b", [1, 2], consistency="quorum", region="us-west")
    assert store.get("b", consistency="quorum") == [1, 2]
    store.put("c", "x", consistency="all", region="eu")
    assert all(store.get("c", region=r) == "x" for r in REGIONS)  # 'all' acked: everywhere
    store.delete("a", consistency="all", region="eu")
    assert store.get("a", consistency="all") is None
    status = store.status()
    assert set(status) == set(REGIONS)
    east = status["us-east"]
    assert east["peers"]["us-west"]["pending"] == 0 and east["version_vector"]
    # bytes went to eu: as deltas, or as state syncs when eu's replica answered late (its
    # position unknown until then, a peer is sent a Sync, not a delta)
    eu = east["peers"]["eu"]
    assert eu["delta_bytes"] + eu["state_bytes"] > 0, eu


def test_ormap_typed_values_watch_and_subscribe(cluster: Any) -> None:
    typed = ReplicatedStore.start("typed", regions=REGIONS, kind="ormap", sync_interval_ms=300,
                                  timeout=WAIT_S)
    try:
        inbox = Inbox.options(**pinned_options(cluster.head.node_id)).remote()
        typed.subscribe(inbox, "on_change", region="eu")
        seen: list[dict[str, Any]] = []
        watcher = threading.Thread(target=lambda: seen.extend(
            typed.watch(region="us-west", timeout=8, poll_s=1)), daemon=True)
        watcher.start()
        time.sleep(1.0)
        typed.incr("hits", 5, region="us-east")
        typed.incr("hits", -2, region="us-west", consistency="all")
        typed.add("tags", "red", region="eu")
        typed.add("tags", "blue", region="us-east", consistency="quorum")
        typed.remove("tags", "red", region="eu", consistency="all")
        typed.put("owner", "ann", region="us-west")
        wait_until(lambda: all(typed.items(region=r) == {"hits": 3, "tags": {"blue"},
                                                          "owner": "ann"} for r in REGIONS),
                   timeout=10)
        with pytest.raises(WrongValueType):
            ReplicatedStore.get("carts").incr("hits")
        watcher.join(timeout=15)
        assert {"hits", "tags", "owner"} <= {k for e in seen for k in e["changes"]}
        wait_until(lambda: {"hits", "tags", "owner"} <= set(ray.get(inbox.keys.remote(),
                                                                    timeout=10)), timeout=10)
    finally:
        typed.stop(forget_data=True)


def test_sigkilled_replica_loses_no_acknowledged_write(store: ReplicatedStore) -> None:
    pid = replica_pid(store, "us-west")
    acked: dict[str, int] = {}
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set() and i < 400:
            try:
                store.put(f"w{i}", i, region="us-west", timeout=5)
                acked[f"w{i}"] = i
            except Exception:  # the replica died mid-call: not acknowledged
                pass
            i += 1

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    wait_until(lambda: len(acked) >= 30, timeout=20)
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: len(acked) >= 60, timeout=WAIT_S)  # the restarted replica takes writes
    stop.set()
    thread.join(timeout=30)
    assert replica_pid(store, "us-west") != pid
    for region in REGIONS:
        wait_until(lambda r=region: all(k in store.items(region=r) for k in acked), timeout=20)
        items = store.items(region=region)
        assert {k: items[k] for k in acked} == acked


def test_quorum_write_fails_fast_without_a_majority(store: ReplicatedStore) -> None:
    pids = [replica_pid(store, r) for r in ("us-west", "eu")]
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        store.put("warm", 1, region="us-east", timeout=1)  # local writes still work
        started = time.monotonic()
        with pytest.raises(QuorumNotAchieved):
            store.put("q", 1, consistency="quorum", region="us-east", timeout=2)
        assert time.monotonic() - started < 6
        with pytest.raises(QuorumNotAchieved):  # now known unreachable: refused up front
            store.put("q2", 1, consistency="quorum", region="us-east", timeout=2)
        assert store.get("q2", region="us-east") is None
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    store.put("q3", 3, consistency="all", region="us-east", timeout=20)
    wait_until(lambda: converged(store, "warm", 1), timeout=20)


def test_bad_input_changes_nothing(store: ReplicatedStore) -> None:
    before = store.items(region="us-east")
    with pytest.raises(InvalidValue):
        store.put("k", object())
    with pytest.raises(InvalidValue):
        store.put(3.5, "v")
    with pytest.raises(ValueTooLarge):
        store.put("k", "x" * 2_000_000)
    with pytest.raises(UnknownRegion):
        store.put("k", 1, region="mars")
    with pytest.raises(ConsistencyUnavailable):
        store.put("k", 1, consistency="most")
    with pytest.raises(StoreExists, match="kind"):
        ReplicatedStore.start("carts", regions=REGIONS, kind="ormap", sync_interval_ms=300)
    with pytest.raises(StoreNotFound):
        ReplicatedStore.get("no-such-store")
    assert store.items(region="us-east") == before


def test_node_kill_moves_the_replica_and_it_catches_up(cluster: Any,
                                                      store: ReplicatedStore) -> None:
    cluster.add_node(region="us-west")
    supervisor = DynamicSupervisor.get(supervisor_name("us-west"))
    # The region's supervisor must have a member on the new node before the old one dies:
    # a region whose every member died has nobody left to restart its replica.
    wait_until(lambda: sum(m["member"] for m in supervisor.members(timeout=10)) == 2,
               timeout=WAIT_S, interval=0.5)
    west_node = store.status()["us-west"]["node_id"]
    store.put("before-kill", 1, consistency="all", timeout=10)
    cluster.kill_node(cluster.node_by_id(west_node))
    for i in range(20):
        store.put(f"during-{i}", i, region="eu")
    wait_until(lambda: store.status()["us-west"].get("node_id") not in (None, west_node),
               timeout=WAIT_S, interval=0.5)
    wait_until(lambda: store.get("during-19", region="us-west") == 19, timeout=30)
    items = store.items(region="us-west")
    assert items["before-kill"] == 1 and all(items[f"during-{i}"] == i for i in range(20))
