"""NodeNetwork alone, without Ray: a bridge, a namespace per node, links cut and restored.
Needs root inside a private network namespace (``scripts/netns-run``)."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from herd.platform.errors import ClusterError
from herd.platform.local.isolation import NodeNetwork

LISTENER = """
import socket, sys
server = socket.create_server((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
while True:
    server.accept()[0].close()
"""
CONNECT = """
import socket, sys
socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1.0).close()
"""


def reaches(network: NodeNetwork, source: str | None, address: str, port: int) -> bool:
    """Whether a TCP connect from ``source``'s namespace (None: this one) succeeds in 1 s."""
    argv = [sys.executable, "-c", CONNECT, address, str(port)]
    command = argv if source is None else network.command(source, argv)
    return subprocess.run(command, capture_output=True, timeout=30).returncode == 0


def test_node_network_cuts_and_restores_one_link() -> None:
    """The network alone (no Ray): a bridge, two namespaces, a listener in one of them."""
    network = NodeNetwork().start()
    listener = None
    try:
        first, second = network.attach("n1"), network.attach("n2")
        assert network.attach("n1") == first != second != network.head_address
        assert network.attach("head", is_head=True) == network.head_address
        assert network.command("head", ["true"]) == ["true"]
        listener = subprocess.Popen(network.command("n2", [sys.executable, "-c", LISTENER,
                                                           second, "7000"]),
                                    stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        assert listener.stdout is not None and listener.stdout.readline().strip() == b"ready"
        assert reaches(network, None, second, 7000) and reaches(network, "n1", second, 7000)
        network.partition("n2")
        network.partition("n2")  # idempotent
        assert network.is_cut("n2") and not network.is_cut("n1")
        assert not reaches(network, None, second, 7000)
        assert not reaches(network, "n1", second, 7000)
        assert listener.poll() is None  # cut off, still running
        network.heal("n2")
        assert reaches(network, None, second, 7000) and reaches(network, "n1", second, 7000)
        with pytest.raises(ClusterError, match="no namespace"):
            network.partition("n3")
        with pytest.raises(ClusterError, match="no namespace"):
            network.command("n3", ["true"])
        with pytest.raises(ClusterError, match="head node cannot be partitioned"):
            network.partition("head")
    finally:
        if listener is not None:
            listener.kill()
            listener.wait(timeout=10)
            listener.stdout.close()  # type: ignore[union-attr]
        devices = {network.bridge} | {link.link.dev_a for link in network.nodes.values()}
        network.stop()
    assert not devices & {name for _, name in socket.if_nameindex()}
