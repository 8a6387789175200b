"""Three separate Ray clusters (eu, us, ap) federated through gateways, each in its own network
namespace, a veth link per pair. Quorum writes fail fast with ``QuorumNotAchieved`` in a region
cut off from the majority while the majority side keeps taking them; a write crosses a cut link
through the third region; after every heal all replicas converge with every acknowledged write.

Runs as root inside ``scripts/netns-run`` (as ``make test`` does); skipped elsewhere.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from herd.replication.federation.regions import FederatedRegions, RemoteCallError

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(os.geteuid() != 0 or {n for _, n in socket.if_nameindex()} != {"lo"},
                       reason="needs root in a private network namespace (scripts/netns-run)"),
]

EU, US, AP = "eu", "us", "ap"
STORE = "part-orders"
CONVERGE_S = 45.0
QUORUM_TIMEOUT_S = 3.0


@pytest.fixture(scope="module")
def regions() -> Iterator[FederatedRegions]:
    fed = FederatedRegions([EU, US, AP])
    fed.start()
    try:
        fed.on_all("start_store", name=STORE, kind="lww_map", sync_interval_ms=300)
        yield fed
    finally:
        fed.stop()


@pytest.fixture(autouse=True)
def healed(regions: FederatedRegions) -> Iterator[None]:
    yield
    regions.heal_all()


def wait_converged(fed: FederatedRegions) -> dict[str, Any]:
    deadline = time.monotonic() + CONVERGE_S
    while True:
        views = [fed[r].store(STORE, "items") for r in fed.regions]
        if all(v == views[0] for v in views[1:]):
            return views[0]
        assert time.monotonic() < deadline, f"no convergence: {views}"
        time.sleep(0.1)


def wait_for_key(fed: FederatedRegions, region: str, key: str, value: Any) -> float:
    started = time.monotonic()
    while fed[region].store(STORE, "get", key) != value:
        assert time.monotonic() - started < CONVERGE_S, f"{key} never reached {region}"
        time.sleep(0.05)
    return time.monotonic() - started


def test_quorum_write_fails_fast_when_the_majority_is_cut_off(regions: FederatedRegions) -> None:
    regions[EU].store(STORE, "put", "before", 1, consistency="quorum", timeout=QUORUM_TIMEOUT_S)
    regions.isolate(EU)                                   # cut eu-us and eu-ap
    started = time.monotonic()
    with pytest.raises(RemoteCallError) as info:
        regions[EU].store(STORE, "put", "q-eu", 1, consistency="quorum",
                          timeout=QUORUM_TIMEOUT_S)
    elapsed = time.monotonic() - started
    assert info.value.type == "QuorumNotAchieved", info.value
    assert elapsed < QUORUM_TIMEOUT_S + 3.0, elapsed
    with pytest.raises(RemoteCallError) as info:
        regions[EU].store(STORE, "put", "all-eu", 1, consistency="all", timeout=QUORUM_TIMEOUT_S)
    assert info.value.type == "QuorumNotAchieved"
    # the majority side still reaches a quorum, and the minority still takes local writes
    regions[US].store(STORE, "put", "q-us", 2, consistency="quorum", timeout=QUORUM_TIMEOUT_S)
    regions[EU].store(STORE, "put", "local-eu", 3, consistency="local")
    assert regions[EU].store(STORE, "get", "q-us") is None          # really cut off
    regions.heal_all()
    final = wait_converged(regions)
    assert final["before"] == 1 and final["q-us"] == 2 and final["local-eu"] == 3


def test_a_write_crosses_a_cut_link_through_the_third_region(regions: FederatedRegions) -> None:
    failed_before = regions[EU].call("gateway_status")["peers"][US]["failed"]
    regions.partition(EU, US)                             # eu and us both still reach ap
    regions[EU].store(STORE, "put", "via-ap", "from-eu")
    wait_for_key(regions, US, "via-ap", "from-eu")
    assert regions.topology.is_cut(EU, US)
    # eu's gateway did try the direct link, and failed: the write came through ap
    deadline = time.monotonic() + 10
    while regions[EU].call("gateway_status")["peers"][US]["failed"] == failed_before:
        assert time.monotonic() < deadline, "eu never tried to reach us directly"
        time.sleep(0.1)


def test_concurrent_writes_on_both_sides_of_a_split_converge(regions: FederatedRegions) -> None:
    regions.isolate(AP)
    acked: dict[str, list[tuple[str, int]]] = {EU: [], US: [], AP: []}
    for n in range(15):
        for region in (EU, US, AP):
            key = f"split-{region}-{n}"
            regions[region].store(STORE, "put", key, n)
            acked[region].append((key, n))
            regions[region].store(STORE, "put", "split-contested", f"{region}-{n}")
    assert regions[AP].store(STORE, "get", "split-eu-0") is None
    regions.heal_all()
    final = wait_converged(regions)
    for region, writes in acked.items():
        for key, value in writes:
            assert final[key] == value, (region, key)
    assert final["split-contested"] in {f"{r}-14" for r in (EU, US, AP)}
