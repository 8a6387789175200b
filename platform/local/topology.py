"""Real network topologies on one machine: network namespaces joined by veth pairs.

Run as root inside a private network namespace (``scripts/netns-run``). Every namespace here is
held by a small process (``unshare --net cat``) rather than named with ``ip netns add``: nothing
is left in ``/var/run/netns`` for other runs to trip over, and a namespace disappears with its
last process (the holder exits when the pipe from its creator closes, so a crashed test leaks
nothing but what it started inside). Commands run inside one with ``nsenter --net=...``.

:class:`RegionTopology` is the multi-region test bed: one namespace per region, a *hub link*
from this process's namespace to each region (the test driver's control path, never cut), and a
*mesh link* between every pair of regions with its own /30 subnet. ``partition(a, b)`` sets both
ends of the a-b link down (a real cut: routes vanish, packets stop); ``heal`` sets them up. The
kernel has no ``netem``, so ``delay_ms`` starts a :mod:`delay_proxy` in each region that peers
reach over the mesh; it delays both directions, so the link's round trip is ``2 * delay_ms``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from herd.platform.errors import ClusterError, ConfigError
from herd.platform.logging import get_logger

log = get_logger("herd.topology")

SUBNET_PREFIX = "10.77"
GATEWAY_PORT = 7070
PROXY_PORT = 7071
CONTROL_PORT = 7072
STOP_TIMEOUT_S = 20.0
STRAGGLER_WAIT_S = 10.0
MAX_REGIONS = 60


def run_ip(argv: list[str], netns: NetNamespace | None = None) -> None:
    """Run ``ip ARGS`` (inside ``netns`` when given); a failure raises ClusterError."""
    command = ["ip", *argv] if netns is None else netns.command(["ip", *argv])
    result = subprocess.run(command, capture_output=True, text=True, timeout=10)
    if result.returncode != 0:
        raise ClusterError(f"{' '.join(command)} failed: {result.stderr.strip()}")


def processes_in_netns(link: str) -> list[int]:
    """Pids of the processes whose network namespace is ``link`` (``net:[inode]``)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{entry}/ns/net") == link:
                    pids.append(int(entry))
    return pids


def close_pipes(proc: subprocess.Popen[bytes]) -> None:
    """Close the pipes this process kept to ``proc`` (else they leak until garbage collection)."""
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()


class NetNamespace:
    """A network namespace held open by a child process; loopback is up."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.holder = subprocess.Popen(["unshare", "--net", "--", "cat"], stdin=subprocess.PIPE,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 5.0
        own = os.readlink("/proc/self/ns/net")
        while self._ns_link() in (None, own):
            if self.holder.poll() is not None or time.monotonic() > deadline:
                raise ClusterError(f"cannot create network namespace {name!r} (unshare --net "
                                   f"needs root): {self._stderr()}")
            time.sleep(0.01)
        run_ip(["link", "set", "lo", "up"], self)

    @property
    def pid(self) -> int:
        return self.holder.pid

    @property
    def path(self) -> str:
        return f"/proc/{self.holder.pid}/ns/net"

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` wrapped to run inside this namespace."""
        return ["nsenter", f"--net={self.path}", "--", *argv]

    def close(self) -> None:
        """Kill what still runs inside the namespace, then let the holder exit: the namespace,
        its devices and the peer ends of its veth links go with the last process in it."""
        link = self._ns_link()
        if link is not None:
            self._kill_stragglers(link)
        if self.holder.poll() is None:
            with contextlib.suppress(OSError):
                if self.holder.stdin is not None:
                    self.holder.stdin.close()
            try:
                self.holder.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.holder.kill()
                self.holder.wait(timeout=5)
        close_pipes(self.holder)

    def _kill_stragglers(self, link: str) -> None:
        """SIGKILL every process but the holder still in this namespace (a process a runner left
        behind), and wait, bounded, until they are gone."""
        deadline = time.monotonic() + STRAGGLER_WAIT_S
        while True:
            pids = [pid for pid in processes_in_netns(link) if pid != self.holder.pid]
            if not pids:
                return
            log.warning("netns_straggler_killed", netns=self.name, pids=pids)
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            if time.monotonic() > deadline:
                raise ClusterError(f"processes {pids} outlived network namespace {self.name!r}")
            time.sleep(0.1)

    def _ns_link(self) -> str | None:
        try:
            return os.readlink(self.path)
        except OSError:
            return None

    def _stderr(self) -> str:
        if self.holder.poll() is None or self.holder.stderr is None:
            return ""
        return self.holder.stderr.read().decode(errors="replace").strip()


@dataclass
class VethLink:
    """A veth pair between two namespaces (``None`` = this process's namespace), a /30 by
    default. With ``bridge``, end ``a`` is a port of that bridge and gets no address."""

    a: NetNamespace | None
    b: NetNamespace
    dev_a: str
    dev_b: str
    addr_a: str | None
    addr_b: str
    up: bool = False
    prefix_len: int = 30
    bridge: str | None = None

    def create(self) -> VethLink:
        where_a = [] if self.a is None else ["netns", str(self.a.pid)]
        run_ip(["link", "add", self.dev_a, *where_a, "type", "veth",
                "peer", "name", self.dev_b, "netns", str(self.b.pid)])
        if self.bridge is not None:
            run_ip(["link", "set", self.dev_a, "master", self.bridge], self.a)
        if self.addr_a is not None:
            run_ip(["addr", "add", f"{self.addr_a}/{self.prefix_len}", "dev", self.dev_a], self.a)
        run_ip(["addr", "add", f"{self.addr_b}/{self.prefix_len}", "dev", self.dev_b], self.b)
        self.set_up(True)
        return self

    def set_up(self, up: bool) -> None:
        state = "up" if up else "down"
        run_ip(["link", "set", self.dev_a, state], self.a)
        run_ip(["link", "set", self.dev_b, state], self.b)
        self.up = up


@dataclass
class RegionTopology:
    """One network namespace per region, hub links from here, a mesh link per region pair."""

    regions: list[str]
    delay_ms: float = 0.0
    namespaces: dict[str, NetNamespace] = field(default_factory=dict)
    hub_links: dict[str, VethLink] = field(default_factory=dict)
    mesh_links: dict[frozenset[str], VethLink] = field(default_factory=dict)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    started: bool = False

    def __post_init__(self) -> None:
        if len(set(self.regions)) != len(self.regions) or len(self.regions) < 2:
            raise ConfigError("a topology needs two or more distinct regions",
                              field="regions", value=self.regions)
        if len(self.regions) > MAX_REGIONS:
            raise ConfigError(f"at most {MAX_REGIONS} regions", field="regions",
                              value=len(self.regions))
        if self.delay_ms < 0:
            raise ConfigError("must be >= 0", field="delay_ms", value=self.delay_ms)

    # ------------------------------------------------------------------------------ lifecycle
    def start(self) -> RegionTopology:
        others = sorted(name for _, name in socket.if_nameindex() if name != "lo")
        if others:
            raise ClusterError(f"a RegionTopology needs a private network namespace of its own "
                               f"(run under scripts/netns-run); this one has {others}")
        try:
            for index, region in enumerate(self.regions):
                netns = NetNamespace(region)
                self.namespaces[region] = netns
                self.hub_links[region] = VethLink(
                    None, netns, f"hub{index}", "uplink", *self._pair_addresses(0, index)
                ).create()
            for serial, (i, j) in enumerate(itertools.combinations(range(len(self.regions)), 2)):
                a, b = self.regions[i], self.regions[j]
                self.mesh_links[frozenset((a, b))] = VethLink(
                    self.namespaces[a], self.namespaces[b], f"veth{j}", f"veth{i}",
                    *self._pair_addresses(1, serial)).create()
            if self.delay_ms > 0:
                for region in self.regions:
                    self._start_delay_proxy(region)
        except BaseException:
            self.stop()
            raise
        self.started = True
        log.info("topology_started", regions=self.regions, delay_ms=self.delay_ms)
        return self

    def stop(self) -> None:
        """Stop every process started here (SIGTERM, SIGKILL at the deadline) and release the
        namespaces (their devices, and the hub ends of the links, go with them)."""
        for proc in self.processes:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                if proc.stdin is not None:
                    with contextlib.suppress(OSError):
                        proc.stdin.close()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for proc in self.processes:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("topology_process_killed", pid=proc.pid)
                proc.kill()
                proc.wait(timeout=5)
            close_pipes(proc)
        self.processes.clear()
        for netns in self.namespaces.values():
            netns.close()
        self.namespaces.clear()
        self._wait_devices_gone([link.dev_a for link in self.hub_links.values()])
        self.hub_links.clear()
        self.mesh_links.clear()
        self.started = False

    @staticmethod
    def _wait_devices_gone(devices: list[str]) -> None:
        """The hub ends of the links vanish with their namespaces; wait for it (bounded), then
        delete any that remain, so the next topology starts from loopback alone."""
        deadline = time.monotonic() + STRAGGLER_WAIT_S
        while time.monotonic() < deadline:
            present = {name for _, name in socket.if_nameindex()}
            if not present & set(devices):
                return
            time.sleep(0.05)
        for device in devices:
            with contextlib.suppress(ClusterError):
                run_ip(["link", "del", device])

    def __enter__(self) -> RegionTopology:
        return self if self.started else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---------------------------------------------------------------------------- addresses
    def control_address(self, region: str) -> str:
        """The region's address on its hub link: reachable from this process only."""
        return self._hub_link(region).addr_b

    def mesh_address(self, source: str, target: str) -> str:
        """Where ``source`` reaches ``target``: target's end of their mesh link."""
        link = self._mesh_link(source, target)
        return link.addr_a if self.namespaces[target] is link.a else link.addr_b

    def peer_url(self, source: str, target: str, scheme: str = "http") -> str:
        """The URL of ``target``'s gateway as ``source`` reaches it (through the delay proxy
        when the topology has a delay)."""
        port = PROXY_PORT if self.delay_ms > 0 else GATEWAY_PORT
        return f"{scheme}://{self.mesh_address(source, target)}:{port}"

    def peer_urls(self, source: str, scheme: str = "http") -> dict[str, str]:
        return {target: self.peer_url(source, target, scheme)
                for target in self.regions if target != source}

    def all_addresses(self, region: str) -> list[str]:
        """Every address of ``region`` (for a TLS certificate's subject alternative names)."""
        return [self.control_address(region), "127.0.0.1",
                *(self.mesh_address(other, region) for other in self.regions if other != region)]

    # ------------------------------------------------------------------------------ faults
    def partition(self, a: str, b: str) -> None:
        """Cut the link between regions ``a`` and ``b`` (both ends down)."""
        self._mesh_link(a, b).set_up(False)
        log.info("link_cut", a=a, b=b)

    def heal(self, a: str, b: str) -> None:
        self._mesh_link(a, b).set_up(True)
        log.info("link_healed", a=a, b=b)

    def isolate(self, region: str) -> None:
        """Cut every mesh link of ``region`` (its hub link, the test's path, stays up)."""
        for other in self.regions:
            if other != region:
                self.partition(region, other)

    def heal_all(self) -> None:
        for link in self.mesh_links.values():
            if not link.up:
                link.set_up(True)
        log.info("links_healed", regions=self.regions)

    def is_cut(self, a: str, b: str) -> bool:
        return not self._mesh_link(a, b).up

    # ---------------------------------------------------------------------------- processes
    def spawn(self, region: str, argv: list[str], env: dict[str, str] | None = None,
              log_path: Path | None = None) -> subprocess.Popen[bytes]:
        """Start ``argv`` inside ``region``'s namespace; it is stopped by :meth:`stop`. Its
        stdin is a pipe from this process, so a process that exits on EOF dies with us."""
        out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            proc = subprocess.Popen(self._netns(region).command(argv), stdin=subprocess.PIPE,
                                    stdout=out, stderr=subprocess.STDOUT,
                                    env={**os.environ, **(env or {})}, start_new_session=True)
        finally:
            if log_path:
                out.close()  # type: ignore[union-attr]
        self.processes.append(proc)
        log.info("topology_spawned", region=region, pid=proc.pid, argv=argv[:4])
        return proc

    # ---------------------------------------------------------------------------- internals
    def _start_delay_proxy(self, region: str) -> None:
        listen = [f"--listen={self.mesh_address(other, region)}:{PROXY_PORT}"
                  for other in self.regions if other != region]
        argv = [sys.executable, "-m", "herd.platform.local.delay_proxy", *listen,
                f"--target=127.0.0.1:{GATEWAY_PORT}", f"--delay-ms={self.delay_ms}"]
        with tempfile.TemporaryFile() as errors:
            proc = subprocess.Popen(self._netns(region).command(argv), stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=errors,
                                    start_new_session=True)
            self.processes.append(proc)
            line = proc.stdout.readline() if proc.stdout is not None else b""
            if line.strip() != b"ready":
                errors.seek(0)
                tail = errors.read().decode(errors="replace")[-1000:]
                raise ClusterError(f"delay proxy in {region} did not start: {tail}")

    def _pair_addresses(self, block: int, serial: int) -> tuple[str, str]:
        base = 4 * serial
        third, fourth = block * 16 + base // 256, base % 256
        return (f"{SUBNET_PREFIX}.{third}.{fourth + 1}", f"{SUBNET_PREFIX}.{third}.{fourth + 2}")

    def _netns(self, region: str) -> NetNamespace:
        try:
            return self.namespaces[region]
        except KeyError:
            raise ConfigError(f"unknown region; topology regions are {self.regions}",
                              field="region", value=region) from None

    def _hub_link(self, region: str) -> VethLink:
        self._netns(region)
        return self.hub_links[region]

    def _mesh_link(self, a: str, b: str) -> VethLink:
        self._netns(a)
        self._netns(b)
        if a == b:
            raise ConfigError("a region has no link to itself", field="region", value=a)
        return self.mesh_links[frozenset((a, b))]
