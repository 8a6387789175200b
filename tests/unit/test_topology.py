"""The network-namespace topology and the delaying proxy: real namespaces, veth links, cuts
and latency. Needs root inside a private network namespace (``scripts/netns-run``, as
``make test`` runs the suite); skipped elsewhere. No Ray."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time

import pytest

from herd.platform.errors import ClusterError, ConfigError
from herd.platform.local.delay_proxy import DelayProxy
from herd.platform.local.topology import GATEWAY_PORT, RegionTopology

PRIVATE_NETNS = (os.geteuid() == 0
                 and {name for _, name in socket.if_nameindex()} == {"lo"})
needs_netns = pytest.mark.skipif(not PRIVATE_NETNS,
                                 reason="needs root in a private network namespace "
                                        "(run under scripts/netns-run)")

# Run inside a region: fetch a URL three times, print the round trips in ms (or the error).
FETCH = """
import sys, time, urllib.request
for _ in range(3):
    started = time.monotonic()
    try:
        urllib.request.urlopen(sys.argv[1], timeout=3).read()
        print(round((time.monotonic() - started) * 1e3, 1))
    except Exception as exc:
        print("error", type(exc).__name__, exc)
"""


def fetch_from(topology: RegionTopology, region: str, url: str) -> list[str]:
    out = subprocess.run(topology.namespaces[region].command([sys.executable, "-c", FETCH, url]),
                         capture_output=True, text=True, timeout=30)
    return out.stdout.split("\n")[:3]


@pytest.fixture(scope="module")
def topology() -> RegionTopology:
    topo = RegionTopology(["r-a", "r-b", "r-c"], delay_ms=40).start()
    for region in topo.regions:  # a plain HTTP server where each region's gateway would be
        topo.spawn(region, [sys.executable, "-m", "http.server", "--bind", "127.0.0.1",
                            str(GATEWAY_PORT)])
    deadline = time.monotonic() + 20
    while not fetch_from(topo, "r-a", topo.peer_url("r-a", "r-c"))[0].replace(".", "").isdigit():
        assert time.monotonic() < deadline, "servers in the regions did not come up"
        time.sleep(0.2)
    yield topo
    topo.stop()


@needs_netns
def test_mesh_link_carries_the_configured_delay(topology: RegionTopology) -> None:
    rtts = [float(x) for x in fetch_from(topology, "r-a", topology.peer_url("r-a", "r-b"))]
    # request and response each wait 40 ms in the proxy: a round trip of at least 80 ms
    assert all(80 <= rtt < 1000 for rtt in rtts), rtts


@needs_netns
def test_partition_cuts_one_link_and_heal_restores_it(topology: RegionTopology) -> None:
    topology.partition("r-a", "r-b")
    try:
        assert topology.is_cut("r-a", "r-b")
        assert all(line.startswith("error") for line in
                   fetch_from(topology, "r-a", topology.peer_url("r-a", "r-b")))
        # the other links of both regions still carry traffic
        assert fetch_from(topology, "r-a", topology.peer_url("r-a", "r-c"))[0][0].isdigit()
        assert fetch_from(topology, "r-c", topology.peer_url("r-c", "r-b"))[0][0].isdigit()
    finally:
        topology.heal("r-a", "r-b")
    assert fetch_from(topology, "r-a", topology.peer_url("r-a", "r-b"))[0][0].isdigit()


@needs_netns
def test_isolate_cuts_every_link_of_a_region_but_not_the_hub(topology: RegionTopology) -> None:
    topology.isolate("r-c")
    try:
        for other in ("r-a", "r-b"):
            assert fetch_from(topology, other, topology.peer_url(other, "r-c"))[0].startswith(
                "error")
        # the hub link (the test's control path) stays up: r-c answers (refuses: nothing
        # listens there), where a cut link would time out or be unreachable
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((topology.control_address("r-c"), 22), timeout=2)
    finally:
        topology.heal_all()
    assert not any(topology.is_cut(a, b) for a in topology.regions for b in topology.regions
                   if a < b)


@needs_netns
def test_regions_cannot_reach_each_other_through_the_hub(topology: RegionTopology) -> None:
    # r-a has no route to r-b's hub address: a cut mesh link is not bypassed by the hub
    url = f"http://{topology.control_address('r-b')}:{GATEWAY_PORT}"
    assert fetch_from(topology, "r-a", url)[0].startswith("error")


@needs_netns
def test_second_topology_in_the_same_namespace_is_refused(topology: RegionTopology) -> None:
    with pytest.raises(ClusterError, match="private network namespace"):
        RegionTopology(["x", "y"]).start()


def test_bad_topologies_are_refused() -> None:
    with pytest.raises(ConfigError):
        RegionTopology(["only"])
    with pytest.raises(ConfigError):
        RegionTopology(["a", "a"])
    with pytest.raises(ConfigError):
        RegionTopology(["a", "b"], delay_ms=-1)


# Run in a fresh private namespace of its own: start a topology with a process in each
# region, stop it, and print what is left (pids alive, devices besides lo).
STOP_SCENARIO = """
import os, socket, sys, time
from herd.platform.local.topology import RegionTopology
topo = RegionTopology(["s-a", "s-b"]).start()
procs = [topo.spawn(r, ["sleep", "300"]) for r in topo.regions]
holders = [ns.pid for ns in topo.namespaces.values()]
topo.stop()
def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return os.path.exists(f"/proc/{pid}") and "Z" not in open(f"/proc/{pid}/stat").read().split()[2]
deadline = time.monotonic() + 10  # a namespace's devices go in a kernel work queue
while len(socket.if_nameindex()) > 1 and time.monotonic() < deadline:
    time.sleep(0.05)
print([p.pid for p in procs if alive(p.pid)] + [h for h in holders if alive(h)],
      sorted(n for _, n in socket.if_nameindex()))
"""


@needs_netns
def test_stop_releases_processes_namespaces_and_links() -> None:
    out = subprocess.run(["unshare", "--net", "--", "sh", "-c",
                          f'ip link set lo up && exec "{sys.executable}" -c "$0"',
                          STOP_SCENARIO], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[] ['lo']"


def test_delay_proxy_delays_each_direction() -> None:
    async def scenario() -> tuple[float, bytes, int]:
        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(await reader.readexactly(5))
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        proxy = DelayProxy(("127.0.0.1", port), 0.05, [("127.0.0.1", 0)])
        (_, proxy_port), = await proxy.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy_port)
        started = time.monotonic()
        writer.write(b"hello")
        await writer.drain()
        answer = await asyncio.wait_for(reader.readexactly(5), 5)
        elapsed = time.monotonic() - started
        writer.close()
        await proxy.close()
        server.close()
        return elapsed, answer, proxy.stats.bytes_forwarded

    elapsed, answer, forwarded = asyncio.run(scenario())
    assert answer == b"hello"
    assert 0.1 <= elapsed < 1.0
    assert forwarded == 10


def test_delay_proxy_counts_a_refused_target() -> None:
    async def scenario() -> int:
        with socket.socket() as sock:  # a port nothing listens on
            sock.bind(("127.0.0.1", 0))
            dead_port = sock.getsockname()[1]
        proxy = DelayProxy(("127.0.0.1", dead_port), 0.0, [("127.0.0.1", 0)])
        (_, proxy_port), = await proxy.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy_port)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, not hung
        writer.close()
        await writer.wait_closed()
        await proxy.close()
        return proxy.stats.failed_connects

    assert asyncio.run(scenario()) == 1
