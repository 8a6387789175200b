"""Two separate Ray clusters (us-east, us-west), each in its own network namespace, federated
through TLS gateways over a veth link. The link is really cut (``ip link set ... down``) while
both sides take writes; after the heal every replica converges and every acknowledged write is
there. Peers with a wrong token, and malformed or oversized bodies, are refused and counted.

Runs as root inside ``scripts/netns-run`` (as ``make test`` does); skipped elsewhere.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from herd.platform.local.topology import GATEWAY_PORT
from herd.replication.core import CoreConfig, ReplicaCore
from herd.replication.federation.regions import FederatedRegions, RegionClient
from herd.replication.federation.server import REGION_HEADER, REPLICATE_PATH
from herd.replication.protocol import Ack, Envelope, State, encode

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(os.geteuid() != 0 or {n for _, n in socket.if_nameindex()} != {"lo"},
                       reason="needs root in a private network namespace (scripts/netns-run)"),
]

EAST, WEST = "us-east", "us-west"
STORE = "fed-carts"
TALLY = "fed-tally"
ROOM = "fed-room"
CONVERGE_S = 45.0


@pytest.fixture(scope="module")
def regions() -> Iterator[FederatedRegions]:
    fed = FederatedRegions([EAST, WEST], tls=True)
    fed.start()
    try:
        fed.on_all("start_store", name=STORE, kind="lww_map", sync_interval_ms=300)
        fed.on_all("start_store", name=TALLY, kind="ormap", sync_interval_ms=300)
        yield fed
    finally:
        fed.stop()


def items(client: RegionClient, store: str) -> dict[str, Any]:
    return client.store(store, "items")


def wait_converged(fed: FederatedRegions, store: str) -> dict[str, Any]:
    deadline = time.monotonic() + CONVERGE_S
    while True:
        views = [items(fed[r], store) for r in fed.regions]
        if all(v == views[0] for v in views[1:]):
            return views[0]
        assert time.monotonic() < deadline, f"{store} did not converge: {views}"
        time.sleep(0.1)


def post_to_gateway(fed: FederatedRegions, region: str, body: bytes, token: str,
                    origin: str = EAST) -> int:
    """POST from the test driver to ``region``'s gateway over its hub link (TLS, CA-checked)."""
    address = fed.topology.control_address(region)
    context = ssl.create_default_context(cafile=str(fed.run_dir / "tls" / "ca.pem"))
    request = urllib.request.Request(
        f"https://{address}:{GATEWAY_PORT}{REPLICATE_PATH}", data=body, method="POST",
        headers={"Authorization": f"Bearer {token}", REGION_HEADER: origin})
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, ConnectionError):
        return -1  # the server answered and closed while the body was still being sent


def test_a_write_crosses_the_federation(regions: FederatedRegions) -> None:
    regions[EAST].store(STORE, "put", "hello", "from-east")
    assert wait_converged(regions, STORE)["hello"] == "from-east"
    status = regions[EAST].call("gateway_status")
    assert status["tls"] is True
    assert status["peers"][WEST]["sent"] > 0


def presence_view(fed: FederatedRegions, region: str, expected: dict[str, Any]) -> None:
    """Wait (within CONVERGE_S) until ``region``'s presence shows exactly ``expected``."""
    deadline = time.monotonic() + CONVERGE_S
    while True:
        seen = fed[region].call("presence_list", name=ROOM, topic="lobby")
        if seen == expected:
            return
        assert time.monotonic() < deadline, f"{region} shows {seen}, not {expected}"
        time.sleep(0.1)


def test_presence_crosses_the_federation_and_leaves_with_its_process(
        regions: FederatedRegions) -> None:
    regions.on_all("start_presence", name=ROOM)
    alice = regions[EAST].call("presence_track", name=ROOM, topic="lobby", key="alice",
                               meta={"from": EAST})
    presence_view(regions, WEST, {"alice": [{"from": EAST}]})
    regions[WEST].call("presence_track", name=ROOM, topic="lobby", key="bob",
                       meta={"from": WEST})
    both = {"alice": [{"from": EAST}], "bob": [{"from": WEST}]}
    presence_view(regions, EAST, both)
    presence_view(regions, WEST, both)
    regions[EAST].call("presence_kill", pid=alice)  # Ray reports it dead: it leaves everywhere
    presence_view(regions, WEST, {"bob": [{"from": WEST}]})
    presence_view(regions, EAST, {"bob": [{"from": WEST}]})


def test_partition_concurrent_writes_converge_without_losing_acks(
        regions: FederatedRegions) -> None:
    acked: dict[str, list[tuple[str, Any]]] = {EAST: [], WEST: []}   # region -> [(key, value)]
    increments: dict[str, int] = {EAST: 0, WEST: 0}
    members: dict[str, set[str]] = {EAST: set(), WEST: set()}
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer(region: str) -> None:
        client = regions[region]
        n = 0
        try:
            while not stop.is_set():
                key, value = f"{region}-{n}", {"n": n, "by": region}
                client.store(STORE, "put", key, value)      # returns once acknowledged
                acked[region].append((key, value))
                client.store(STORE, "put", "contested", f"{region}-{n}")
                acked[region].append(("contested", f"{region}-{n}"))
                client.store(TALLY, "incr", "hits", 1 if region == EAST else 100)
                increments[region] += 1 if region == EAST else 100
                client.store(TALLY, "add", "seen", f"{region}-{n}")
                members[region].add(f"{region}-{n}")
                n += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(r,), daemon=True) for r in (EAST, WEST)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)                              # some writes cross while the link is up
    regions.partition(EAST, WEST)
    time.sleep(4.0)                              # both sides keep acknowledging writes
    during_east = items(regions[EAST], STORE)
    regions.heal(EAST, WEST)
    time.sleep(1.0)
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert all(not t.is_alive() for t in threads)
    # the cut was real: east did not see west's newest writes while it lasted
    west_keys_during = {k for k in during_east if k.startswith(WEST)}
    assert len(west_keys_during) < sum(1 for k, _ in acked[WEST] if k != "contested")

    final = wait_converged(regions, STORE)
    for region in (EAST, WEST):
        for key, value in acked[region]:
            if key != "contested":
                assert final.get(key) == value, (region, key)
    last_contested = {acked[r][-1][1] for r in (EAST, WEST) if acked[r]}
    assert final["contested"] in last_contested   # one side's last write wins, the same everywhere
    tally = wait_converged(regions, TALLY)
    assert tally["hits"] == increments[EAST] + increments[WEST]
    assert set(tally["seen"]) == members[EAST] | members[WEST]
    peer = regions[EAST].call("gateway_status")["peers"][WEST]
    assert peer["failed"] > 0 and peer["last_error"]    # the cut was seen by the gateway


def forged_payload(key: str) -> dict[str, Any]:
    core = ReplicaCore(CoreConfig(STORE, EAST, (EAST, WEST), "lww_map"), 1)
    core.write("put", key, "forged")
    return dict(core.state.payload()["parts"]["map"])


def forged_state(key: str) -> bytes:
    """A well-formed full State from "us-east" (a newer incarnation) holding ``key``: what an
    authenticated peer's state looks like, and what west would merge if it got through."""
    core = ReplicaCore(CoreConfig(STORE, EAST, (EAST, WEST), "lww_map"), time.time_ns())
    core.write("put", key, "forged")
    env = Envelope(STORE, EAST, core.epoch, WEST)
    return encode(State(env, core.seq, None, 1, core.state.payload()))


def test_wrong_token_is_refused_counted_and_not_merged(regions: FederatedRegions) -> None:
    before = regions[WEST].call("gateway_status")["inbound"]["refused"]
    assert post_to_gateway(regions, WEST, forged_state("forged-1"), token="f" * 64) == 401
    assert post_to_gateway(regions, WEST, forged_state("forged-2"), token="") == 401
    token = (regions.run_dir / "federation.token").read_text()
    assert post_to_gateway(regions, WEST, forged_state("forged-3"), token=token,
                           origin="eu-north") == 403
    after = regions[WEST].call("gateway_status")["inbound"]
    assert after["refused"].get("unauthorized", 0) == before.get("unauthorized", 0) + 2
    assert after["refused"].get("unknown_origin", 0) == before.get("unknown_origin", 0) + 1
    assert after["last_refusal"]["reason"] == "unknown_origin"
    time.sleep(1.0)  # several sync rounds: nothing of the forged states shows up anywhere
    for region in regions.regions:
        assert not [k for k in items(regions[region], STORE) if k.startswith("forged")]


def test_malformed_and_oversized_bodies_are_refused(regions: FederatedRegions) -> None:
    token = (regions.run_dir / "federation.token").read_text()
    before_items = items(regions[WEST], STORE)
    before = regions[WEST].call("gateway_status")["inbound"]["refused"]
    valid = encode(Ack(Envelope(STORE, EAST, 1, WEST), 1))
    forged_delta = json.dumps({"v": 1, "kind": "delta", "store": STORE, "origin": EAST,
                               "epoch": 1, "target": WEST, "target_epoch": 0, "first": 0,
                               "last": 1, "payload": "not-an-object"}).encode()
    for body in (b"\x00\xff garbage", valid[:-7], b"{}", forged_delta):
        assert post_to_gateway(regions, WEST, body, token) == 400
    assert post_to_gateway(regions, WEST, b"{" + b" " * (9 * 1024 * 1024) + b"}", token) in (
        413, -1)
    after = regions[WEST].call("gateway_status")["inbound"]["refused"]
    assert after.get("malformed", 0) - before.get("malformed", 0) == 3
    assert after.get("version", 0) - before.get("version", 0) == 1      # b"{}" has no "v"
    assert after.get("oversized", 0) - before.get("oversized", 0) == 1
    # a well-formed message from an old incarnation of east passes the gateway and is
    # rejected by the replica (a replay), counted there and not merged
    rejected = regions[WEST].store(STORE, "status")[WEST]["rejected"].get("stale_epoch", 0)
    replay = encode(State(Envelope(STORE, EAST, 1, WEST), 5, None, 1,
                          {"parts": {"map": forged_payload("replayed")}}))
    assert post_to_gateway(regions, WEST, replay, token) == 200
    assert regions[WEST].store(STORE, "status")[WEST]["rejected"]["stale_epoch"] == rejected + 1
    assert items(regions[WEST], STORE) == before_items


def test_herd_federation_status_shows_peers_lag_and_refusals(regions: FederatedRegions) -> None:
    assert post_to_gateway(regions, WEST, b"{}", token="wrong" * 8) == 401
    ping = regions[WEST].call("ping")
    command = [sys.executable, "-c", "from herd.cli.federation import federation; federation()",
               "status", "--address", ping["address"], "--store", STORE]
    out = subprocess.run(regions.topology.namespaces[WEST].command(command),
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, **ping["env"], "HERD_LOG_LEVEL": "ERROR"})
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert lines[0].startswith(f"region {WEST}") and "tls=on" in lines[0]
    peer_row = next(line for line in lines if line.startswith(EAST))
    assert "https://" in peer_row
    assert any(line.startswith("inbound: accepted") and "unauthorized=" in line
               for line in lines), lines
    assert any(line.startswith(f"store {STORE}:") for line in lines)
    assert any(line.startswith(WEST) and EAST in line for line in lines[lines.index(
        f"store {STORE}:"):])
