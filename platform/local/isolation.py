"""Real partitions inside one Ray cluster: every worker node in a network namespace of its own.

``LocalCluster(isolated_nodes=True)`` owns a :class:`NodeNetwork`: a bridge in this process's
namespace (the test's, made private by ``scripts/netns-run``) on one /24 that exists only in
this namespace tree, and per worker node a namespace (:class:`~.topology.NetNamespace`) joined
to the bridge by a veth pair (:class:`~.topology.VethLink`). The head node stays in this
process's namespace and binds the bridge's own address: a Ray driver must share a host address
with a raylet (it picks a local raylet by IP and advertises that IP for calls back to itself),
so the driver and the head share one. ``partition(worker)`` sets both ends of the worker's veth
pair down: it then reaches neither the GCS, nor the driver, nor any other node, while every
process of it keeps running; ``heal`` sets them up again. The head cannot be partitioned (it
is where the driver is): partition the workers instead.
"""

from __future__ import annotations

import contextlib
import socket
from dataclasses import dataclass, field

from herd.platform.errors import ClusterError
from herd.platform.local.topology import NetNamespace, VethLink, run_ip
from herd.platform.logging import get_logger

__all__ = ["NodeNetwork", "required"]

log = get_logger("herd.isolation")

SUBNET_PREFIX = "10.77"
FIRST_THIRD_OCTET = 128  # RegionTopology's /30 links use 10.77.0-31.x; these cannot clash
MAX_NETWORKS = 100
FIRST_NODE_HOST = 2
MAX_NODE_HOST = 254
PREFIX_LEN = 24
BRIDGE_DEVICE = "vbr{slot}"
NODE_LINK_DEVICE = "veth{slot}n{host}"  # this side of a node's link: a port of the bridge
NODE_DEVICE = "eth0"  # the node's side of its link, inside its own namespace


def _devices() -> set[str]:
    return {name for _, name in socket.if_nameindex()}


def _is_own_device(name: str) -> bool:
    return name == "lo" or name.startswith("vbr") or (name.startswith("veth") and "n" in name)


@dataclass
class NodeLink:
    """One worker's namespace, its link to the bridge and its address."""

    netns: NetNamespace
    link: VethLink
    address: str


@dataclass
class NodeNetwork:
    """A bridge here and one namespace per worker node; see the module docstring."""

    slot: int = -1
    nodes: dict[str, NodeLink] = field(default_factory=dict)
    head: str | None = None  # the node that runs in this process's namespace
    next_host: int = FIRST_NODE_HOST
    started: bool = False

    # ------------------------------------------------------------------------------ lifecycle
    def start(self) -> NodeNetwork:
        present = _devices()
        foreign = sorted(name for name in present if not _is_own_device(name))
        if foreign:
            raise ClusterError(f"isolated nodes need a private network namespace of their own "
                               f"(run under scripts/netns-run); this one has {foreign}")
        self.slot = next((slot for slot in range(MAX_NETWORKS)
                          if BRIDGE_DEVICE.format(slot=slot) not in present), -1)
        if self.slot < 0:
            raise ClusterError(f"at most {MAX_NETWORKS} isolated clusters per namespace")
        try:
            run_ip(["link", "add", self.bridge, "type", "bridge"])
            run_ip(["addr", "add", f"{self.head_address}/{PREFIX_LEN}", "dev", self.bridge])
            run_ip(["link", "set", self.bridge, "up"])
        except ClusterError as exc:
            self.stop()
            raise ClusterError(f"cannot create the node network's bridge (isolated nodes need "
                               f"root in a private network namespace): {exc}") from exc
        except BaseException:
            self.stop()
            raise
        self.started = True
        log.info("node_network_started", bridge=self.bridge, subnet=self.subnet)
        return self

    def stop(self) -> None:
        """Release every node's namespace (killing what still runs in it) and the bridge."""
        for link in self.nodes.values():
            link.netns.close()
        # A link goes with its namespace, but the kernel may keep a namespace whose sockets
        # still retransmit to a cut-off peer for many seconds: delete what is left at once.
        for link in self.nodes.values():
            with contextlib.suppress(ClusterError):  # it vanished meanwhile
                if link.link.dev_a in _devices():
                    run_ip(["link", "del", link.link.dev_a])
        left = sorted(_devices() & {link.link.dev_a for link in self.nodes.values()})
        if left:
            raise ClusterError(f"devices {left} outlived the node network")
        self.nodes.clear()
        if self.slot >= 0 and self.bridge in _devices():
            run_ip(["link", "del", self.bridge])
        if self.started:
            log.info("node_network_stopped", bridge=self.bridge)
        self.started = False

    # ---------------------------------------------------------------------------- addresses
    @property
    def bridge(self) -> str:
        return BRIDGE_DEVICE.format(slot=self.slot)

    @property
    def subnet(self) -> str:
        return f"{SUBNET_PREFIX}.{FIRST_THIRD_OCTET + self.slot}.0/{PREFIX_LEN}"

    @property
    def head_address(self) -> str:
        """The bridge's address: the head node's and this process's (the driver's)."""
        return self._host_address(1)

    def attach(self, node: str, is_head: bool = False) -> str:
        """Give ``node`` a namespace and a link (once; the head gets none); its address."""
        if not self.started:
            raise ClusterError("the node network is not started")
        if is_head:
            self.head = node
            return self.head_address
        if node not in self.nodes:
            if self.next_host > MAX_NODE_HOST:
                raise ClusterError(f"at most {MAX_NODE_HOST - FIRST_NODE_HOST + 1} isolated "
                                   f"nodes per cluster")
            host, self.next_host = self.next_host, self.next_host + 1
            netns = NetNamespace(f"{self.bridge}-{node}")
            address = self._host_address(host)
            try:
                link = VethLink(None, netns, NODE_LINK_DEVICE.format(slot=self.slot, host=host),
                                NODE_DEVICE, None, address, prefix_len=PREFIX_LEN,
                                bridge=self.bridge).create()
            except BaseException:
                netns.close()
                raise
            self.nodes[node] = NodeLink(netns, link, address)
            log.info("node_attached", node=node, address=address, device=link.dev_a)
        return self.nodes[node].address

    def address_of(self, node: str) -> str:
        """The address ``node`` binds (``--node-ip-address``)."""
        return self.head_address if node == self.head else self._link(node).address

    def command(self, node: str, argv: list[str]) -> list[str]:
        """``argv`` wrapped to run inside ``node``'s namespace (unchanged for the head)."""
        return argv if node == self.head else self._link(node).netns.command(argv)

    # ------------------------------------------------------------------------------ faults
    def partition(self, node: str) -> None:
        """Cut ``node``'s only link (both ends down); idempotent."""
        link = self._cuttable(node)
        if link.up:
            link.set_up(False)
            log.info("node_partitioned", node=node, device=link.dev_a)

    def heal(self, node: str) -> None:
        """Restore ``node``'s link; idempotent."""
        link = self._cuttable(node)
        if not link.up:
            link.set_up(True)
            log.info("node_healed", node=node, device=link.dev_a)

    def heal_all(self) -> None:
        for node in self.nodes:
            self.heal(node)

    def is_cut(self, node: str) -> bool:
        return False if node == self.head else not self._link(node).link.up

    # ---------------------------------------------------------------------------- internals
    def _host_address(self, host: int) -> str:
        return f"{SUBNET_PREFIX}.{FIRST_THIRD_OCTET + self.slot}.{host}"

    def _link(self, node: str) -> NodeLink:
        try:
            return self.nodes[node]
        except KeyError:
            raise ClusterError(f"node {node!r} has no namespace in this network; nodes are "
                               f"{[self.head, *self.nodes]}") from None

    def _cuttable(self, node: str) -> VethLink:
        if node == self.head:
            raise ClusterError("the head node cannot be partitioned: it shares the driver's "
                               "network namespace (a Ray driver needs a raylet on its own "
                               "address); partition the worker nodes instead")
        return self._link(node).link


def required(network: NodeNetwork | None, operation: str) -> NodeNetwork:
    """``network``, or a ClusterError saying that ``operation`` needs isolated nodes."""
    if network is None:
        raise ClusterError(f"{operation}() needs a cluster started with "
                           f"LocalCluster(isolated_nodes=True); this one shares one network")
    return network
