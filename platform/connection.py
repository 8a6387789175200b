"""Joining a Ray cluster (embedded on 127.0.0.1, an existing address, or a DNS name) within a
connect timeout.

``ray.init(address=...)`` against an address where no GCS answers retries in C++ for minutes
(``gcs_client.cc: Failed to get cluster ID from GCS server``), so :func:`connect` first probes
the GCS port with a plain TCP connect (refused or silent: :class:`ClusterUnavailable` at once),
then runs ``ray.init`` with Ray's own connect knobs sized to what is left of the timeout.
"""

from __future__ import annotations

import contextlib
import gc
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

import ray
from ray._raylet import Config

from herd.platform.config import ClusterConfig
from herd.platform.errors import ClusterError, ClusterUnavailable, ConfigError
from herd.platform.logging import get_logger
from herd.platform.waiting import deadline_in, time_left

__all__ = ["DEFAULT_GCS_PORT", "LOOPBACK", "ClusterInfo", "connect", "disconnect",
           "gcs_host_port", "gcs_outage", "probe_gcs", "resolve_address"]

log = get_logger("herd.cluster")

LOOPBACK = "127.0.0.1"
DEFAULT_GCS_PORT = 6379
OUTAGE_PROBE_S = 0.5


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


def gcs_host_port(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of ``host:port``, ``[v6]:port`` or ``ray://host:port``; None for forms
    Ray resolves itself (``auto``, ``local``)."""
    rest = address.split("://", 1)[1] if "://" in address else address
    host, sep, port_text = rest.rpartition(":")
    if not sep or not port_text.isdigit() or not host:
        return None
    return host.strip("[]"), int(port_text)


def probe_gcs(address: str, timeout_s: float) -> None:
    """Raise :class:`ClusterUnavailable` unless something accepts a TCP connection at the GCS
    port of ``address`` within ``timeout_s``."""
    target = gcs_host_port(address)
    if target is None:
        return
    try:
        socket.create_connection(target, timeout=timeout_s).close()
    except ConnectionRefusedError:
        raise ClusterUnavailable(
            f"no Ray cluster at {address}: nothing listens on that port (TCP connect refused); "
            f"is the cluster up, and in this network namespace?") from None
    except TimeoutError:
        raise ClusterUnavailable(
            f"no Ray cluster at {address}: a TCP connect got no answer within "
            f"{timeout_s:.1f} s") from None
    except OSError as exc:
        raise ClusterUnavailable(
            f"no Ray cluster at {address}: TCP connect failed ({exc.strerror or exc}); is the "
            f"cluster up, and in this network namespace?") from None


def gcs_outage(timeout_s: float = OUTAGE_PROBE_S) -> str | None:
    """Why the GCS of the cluster this process is connected to does not answer (its head is down
    or unreachable), or None when it accepts connections or this process is not connected. Calls
    that fail or time out ask this to report :class:`ClusterUnavailable` instead."""
    if not ray.is_initialized():
        return None
    try:
        address = ray.get_runtime_context().gcs_address
    except Exception:  # a driver torn down meanwhile: nothing to say about the cluster
        return None
    try:
        probe_gcs(address, timeout_s)
    except ClusterUnavailable as exc:
        return str(exc)
    return None


#: A driver that joins a cluster exports no Ray metrics of its own (herd's metrics come from its
#: actors) and uses Ray's OpenCensus path if it records any. Ray 2.60 starts an OpenTelemetry
#: export thread per driver session and does not stop it at ``ray.shutdown()``: a process that
#: connects again and again (a test suite, a dashboard that follows head restarts) collects one
#: per session, each retrying a metrics agent that is gone, and at a later shutdown one runs into
#: freed memory: the process dies of a segmentation fault (seen in ``make test``, twice in three
#: runs). OpenCensus keeps one export thread per process.
DRIVER_METRICS = {"RAY_enable_metrics_collection": "0", "RAY_enable_open_telemetry": "0"}


@contextlib.contextmanager
def bounded_ray_connect(timeout_s: float) -> Iterator[None]:
    """Size Ray's own GCS connect timeouts so that one ``ray.init`` attempt ends within about
    three quarters of ``timeout_s`` (gRPC connect, pubsub connect, cluster-id fetch), with a
    single attempt instead of Ray's 20-odd; and keep this driver's own Ray metrics off
    (``DRIVER_METRICS``). Settings already in the environment win."""
    per_step = str(max(1, int(timeout_s / 4)))
    knobs = {"RAY_gcs_rpc_server_connect_timeout_s": per_step,
             "RAY_py_gcs_connect_timeout_s": per_step,
             "RAY_gcs_server_port_wait_time_s": "1", **DRIVER_METRICS}
    saved = {key: os.environ.get(key) for key in knobs}
    for key, value in knobs.items():
        os.environ.setdefault(key, value)
    _reload_ray_config()
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _reload_ray_config() -> None:
    """Ray's C++ config reads ``RAY_*`` variables when (re)initialised; the auth helper does the
    same after changing the token settings."""
    Config.initialize("")


def connect(config: ClusterConfig | None = None, address: str | None = None,
            namespace: str | None = None, log_to_driver: bool | None = None,
            timeout_s: float | None = None) -> ClusterInfo:
    """Connect this process to Ray.

    Address precedence: ``address`` argument, then ``config.address`` (mode ``address``), then
    the ``RAY_ADDRESS`` environment variable; with none of them an embedded single-node Ray is
    started on 127.0.0.1 with the dashboard off and herd's fast health checks.
    ``log_to_driver=False`` keeps the actors' output out of this process's (the CLI, the test
    clusters); ``None`` leaves it to Ray (on unless ``RAY_LOG_TO_DRIVER=0``).
    Joining an address gives up after ``timeout_s`` (default ``config.timeouts.connect_s``) with
    :class:`ClusterUnavailable`.
    """
    config = config or ClusterConfig()
    namespace = namespace or config.namespace
    if ray.is_initialized():
        return _current(mode="existing")
    target = address or (config.address if config.mode == "address" else None)
    target = target or os.environ.get("RAY_ADDRESS") or None
    if target:
        began = time.monotonic()
        try:
            info = _join(target, namespace, log_to_driver, timeout_s or config.timeouts.connect_s)
        except ClusterUnavailable as exc:
            log.info("cluster_unavailable", address=target, error=str(exc),
                     after_s=round(time.monotonic() - began, 3))
            raise
    else:
        try:
            ray.init(_node_ip_address=LOOPBACK, include_dashboard=False, namespace=namespace,
                     log_to_driver=log_to_driver,
                     num_cpus=int(config.head.num_cpus) if config.head.num_cpus else None,
                     resources=config.head.resources or None,
                     _system_config=config.health_check.to_system_config())
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ClusterError(f"cannot start an embedded Ray: {exc}") from exc
        info = _current(mode="embedded")
    log.info("connected", address=info.address, namespace=info.namespace, mode=info.mode)
    return info


def _join(target: str, namespace: str, log_to_driver: bool | None,
          timeout_s: float) -> ClusterInfo:
    began = time.monotonic()
    deadline = deadline_in(timeout_s)
    resolved = resolve_address(target)
    shown = target if resolved == target else f"{target} ({resolved})"
    probe_gcs(resolved, min(timeout_s / 2, 5.0))
    with bounded_ray_connect(time_left(deadline)):
        try:
            ray.init(address=resolved, namespace=namespace, log_to_driver=log_to_driver)
        except ConnectionError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ClusterUnavailable(
                f"no Ray cluster answered at {shown}: the port accepts TCP connections but "
                f"ray.init gave up after {time.monotonic() - began:.1f} s ({first})") from exc
        except (RuntimeError, ValueError) as exc:
            raise ClusterError(f"cannot connect to Ray at {shown}: {exc}") from exc
    return _current(mode="address")


def disconnect() -> None:
    """Leave the cluster (stops an embedded Ray)."""
    if ray.is_initialized():
        leave_ray()


def leave_ray() -> None:
    """``ray.shutdown()``, after collecting garbage: handles and refs of this session that only
    a reference cycle keeps are then released while the driver's core worker is whole, not by
    a collection that runs during the shutdown or in the next session (Ray frees them through
    the core worker that created them; a driver that reconnects many times, as a test suite
    does, can otherwise crash in it)."""
    gc.collect()
    ray.shutdown()


def _current(mode: str) -> ClusterInfo:
    context = ray.get_runtime_context()
    return ClusterInfo(address=context.gcs_address, namespace=context.namespace,
                       node_id=context.get_node_id(), mode=mode)
