"""Joining a Ray cluster: embedded on 127.0.0.1, an existing address, or a DNS name.

``connect()`` is idempotent: a second call in a process that is already connected returns the
current connection. ``LocalCluster`` (real ``ray start`` nodes on this machine) is re-exported
here because it is how tests, the demo and ``herd cluster up`` get a multi-node cluster.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import ray

from herd.platform.config import ClusterConfig
from herd.platform.errors import ClusterError, ConfigError
from herd.platform.local.cluster import LOOPBACK, LocalCluster, LocalNode
from herd.platform.logging import get_logger

__all__ = ["ClusterInfo", "LocalCluster", "LocalNode", "connect", "disconnect", "resolve_address"]

log = get_logger("herd.cluster")

DEFAULT_GCS_PORT = 6379


@dataclass(frozen=True)
class ClusterInfo:
    """What ``connect`` joined."""

    address: str
    namespace: str
    node_id: str
    mode: str


def resolve_address(address: str) -> str:
    """Turn ``dns:NAME[:PORT]`` into ``IP:PORT`` (first IPv4 answer; like libcluster's DNSPoll
    against a Kubernetes headless service). Other forms pass through unchanged."""
    if not address.startswith("dns:"):
        return address
    rest = address[len("dns:"):]
    host, _, port_text = rest.partition(":")
    if not host:
        raise ConfigError("empty DNS name", field="address", value=address)
    try:
        port = int(port_text) if port_text else DEFAULT_GCS_PORT
    except ValueError as exc:
        raise ConfigError("port is not a number", field="address", value=address) from exc
    try:
        answers = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ClusterError(f"cannot resolve {host!r} for address {address!r}: {exc}") from exc
    ips = sorted({answer[4][0] for answer in answers})
    log.info("dns_resolved", name=host, answers=ips)
    return f"{ips[0]}:{port}"


def connect(config: ClusterConfig | None = None, address: str | None = None,
            namespace: str | None = None, log_to_driver: bool = True) -> ClusterInfo:
    """Connect this process to Ray.

    Address precedence: ``address`` argument, then ``config.address`` (mode ``address``), then
    the ``RAY_ADDRESS`` environment variable; with none of them an embedded single-node Ray is
    started on 127.0.0.1 with the dashboard off and herd's fast health checks.
    ``log_to_driver=False`` keeps the actors' logs out of this process's output (the CLI).
    """
    config = config or ClusterConfig()
    namespace = namespace or config.namespace
    if ray.is_initialized():
        return _current(mode="existing")
    target = address or (config.address if config.mode == "address" else None)
    target = target or os.environ.get("RAY_ADDRESS") or None
    try:
        if target:
            resolved = resolve_address(target)
            ray.init(address=resolved, namespace=namespace, log_to_driver=log_to_driver)
            info = _current(mode="address")
        else:
            ray.init(_node_ip_address=LOOPBACK, include_dashboard=False, namespace=namespace,
                     log_to_driver=log_to_driver,
                     num_cpus=int(config.head.num_cpus) if config.head.num_cpus else None,
                     resources=config.head.resources or None,
                     _system_config=config.health_check.to_system_config())
            info = _current(mode="embedded")
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ClusterError(f"cannot connect to Ray at {target or 'embedded'}: {exc}") from exc
    log.info("connected", address=info.address, namespace=info.namespace, mode=info.mode)
    return info


def disconnect() -> None:
    """Leave the cluster (stops an embedded Ray)."""
    if ray.is_initialized():
        ray.shutdown()


def _current(mode: str) -> ClusterInfo:
    context = ray.get_runtime_context()
    return ClusterInfo(address=context.gcs_address, namespace=context.namespace,
                       node_id=context.get_node_id(), mode=mode)
