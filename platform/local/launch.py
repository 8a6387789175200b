"""Launching the nodes of a local cluster: the ``ray start --block`` command line of each node,
one session per node (so all of its processes can be found and signalled), output to
``<run_dir>/logs/<node>.log``, and the wait until the GCS lists the node alive."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from ray._raylet import GcsClient

from herd.platform.auth import use_token
from herd.platform.config import HealthCheckConfig, NodeSpec
from herd.platform.connection import LOOPBACK
from herd.platform.errors import ClusterError, ConfigError
from herd.platform.gcs import NodeInfo
from herd.platform.local import processes
from herd.platform.local.isolation import NodeNetwork
from herd.platform.local.node import LocalNode
from herd.platform.logging import get_logger
from herd.platform.validation import validate_model

log = get_logger("herd.local_cluster")

REGION_RESOURCE_UNITS = 1000.0
NODE_START_TIMEOUT_S = 90.0
WORKER_START_ATTEMPTS = 2


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def ray_executable() -> str:
    candidate = Path(sys.executable).parent / "ray"
    return str(candidate) if candidate.exists() else "ray"


def check_regions(regions: list[str], nodes: int) -> None:
    """Regions are assigned round-robin, so each must be a valid label value, none may repeat,
    and every one needs a node."""
    for index, region in enumerate(regions):
        validate_model(NodeSpec, {"region": region}, source="regions")
        if region in regions[:index]:
            raise ConfigError(f"duplicate region {region!r}", field="regions", value=regions)
    if len(regions) > nodes:
        raise ConfigError(f"{len(regions)} regions need at least {len(regions)} nodes, got "
                          f"{nodes}", field="regions", value=regions)


@dataclass
class Launch:
    """A ``ray start`` process this launcher started, and which attempt it is."""

    node: LocalNode
    popen: subprocess.Popen[bytes]
    log_path: Path
    attempt: int = 1


class NodeLauncher:
    """Starts the nodes of one cluster. ``env`` is what every node needs to join (auth);
    ``token_path`` authenticates this process's GCS client; ``on_change`` runs after each
    launch so the cluster's state file lists the new session before anything can go wrong.
    With ``network``, each worker runs in its own network namespace on its own address."""

    def __init__(self, run_dir: Path, ray_tmp: Path, env: dict[str, str],
                 token_path: Path | None, on_change: Callable[[], None],
                 network: NodeNetwork | None = None) -> None:
        self.network = network
        self.run_dir = run_dir
        self.ray_tmp = ray_tmp
        self.env = env
        self.token_path = token_path
        self.on_change = on_change
        self.launches: dict[str, Launch] = {}
        self._ports_handed_out: set[int] = set()

    def free_port(self) -> int:
        """A free loopback port this cluster has not handed out before. `ray start` refuses two
        equal ports, and ports handed to nodes launched together are not bound yet, so a port
        that the kernel offers twice in a row must not be used twice."""
        while True:
            port = free_port()
            if port not in self._ports_handed_out:
                self._ports_handed_out.add(port)
                return port

    def node_from_spec(self, spec: NodeSpec, is_head: bool, index: int) -> LocalNode:
        resources = dict(spec.resources)
        if spec.region:
            resources[f"region:{spec.region}"] = REGION_RESOURCE_UNITS
        node = LocalNode(name="head" if is_head else f"worker-{index}", is_head=is_head,
                         num_cpus=spec.num_cpus, region=spec.region, zone=spec.zone,
                         labels=spec.all_labels(), resources=resources,
                         node_manager_port=self.free_port())
        if self.network is not None:
            self.network.attach(node.name, is_head=is_head)
        return node

    def head_args(self, port: int, health_check: HealthCheckConfig,
                  dashboard_port: int | None) -> list[str]:
        args = ["--head", "--port", str(port), "--ray-client-server-port", str(self.free_port()),
                "--system-config", json.dumps(health_check.to_system_config())]
        if dashboard_port is not None:
            return args + ["--include-dashboard", "true", "--dashboard-host", LOOPBACK,
                           "--dashboard-port", str(dashboard_port)]
        return args + ["--include-dashboard", "false"]

    def node_args(self, node: LocalNode) -> list[str]:
        """Arguments every node gets: loopback, its own ports, its temp dir, labels, resources."""
        address = LOOPBACK if self.network is None else self.network.address_of(node.name)
        args = ["--block", "--node-ip-address", address, "--num-cpus", str(int(node.num_cpus)),
                "--node-manager-port", str(node.node_manager_port),
                "--object-manager-port", str(self.free_port()),
                "--dashboard-agent-listen-port", str(self.free_port()),
                "--dashboard-agent-grpc-port", str(self.free_port()),
                "--metrics-export-port", str(self.free_port()),
                "--runtime-env-agent-port", str(self.free_port()),
                "--temp-dir", str(self.ray_tmp / node.name), "--disable-usage-stats"]
        if node.resources:
            args += ["--resources", json.dumps(node.resources)]
        if node.labels:
            args += ["--labels", ",".join(f"{k}={v}" for k, v in sorted(node.labels.items()))]
        return args

    def launch(self, node: LocalNode, args: list[str], nodes: list[LocalNode],
               env: dict[str, str] | None = None) -> Launch:
        """Run ``ray start ARGS`` for ``node`` in a session of its own; appends it to ``nodes``.
        ``env`` adds variables (the head's GCS storage)."""
        log_path = self.run_dir / "logs" / f"{node.name}.log"
        command = [ray_executable(), "start", *args]
        if self.network is not None:
            command = self.network.command(node.name, command)
        with open(log_path, "ab") as out:
            popen = subprocess.Popen(command,
                                     stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL,
                                     env={**self._process_env(), **(env or {})},
                                     start_new_session=True)
        node.leader_pid = popen.pid
        nodes.append(node)
        launch = Launch(node, popen, log_path)
        self.launches[node.name] = launch
        self.on_change()
        return launch

    def wait_registered(self, launches: list[Launch], address: str,
                        nodes: list[LocalNode]) -> None:
        """Wait until the GCS lists every launched node alive; fail fast if a launcher exits
        (a worker is started once more first: its `ray start` gives up when the GCS is slow to
        answer on an overloaded machine)."""
        use_token(self.token_path)
        deadline = time.monotonic() + NODE_START_TIMEOUT_S
        pending = {launch.node.node_manager_port: launch for launch in launches}
        client = None
        while pending:
            for port, launch in list(pending.items()):
                if launch.popen.poll() is None:
                    continue
                why = f"exited with code {launch.popen.returncode}"
                if launch.node.is_head or launch.attempt >= WORKER_START_ATTEMPTS:
                    self.fail(launch, why, nodes)
                log.warning("node_start_retry", node=launch.node.name, why=why)
                del pending[port]
                retry = self._relaunch(launch, address, nodes)
                pending[retry.node.node_manager_port] = retry
                deadline = max(deadline, time.monotonic() + NODE_START_TIMEOUT_S)
            if time.monotonic() > deadline:
                self.fail(next(iter(pending.values())),
                          f"not registered within {NODE_START_TIMEOUT_S:.0f} s", nodes)
            try:
                client = client or GcsClient(address=address)
                infos = client.get_all_node_info(timeout=2)
            except Exception:  # GCS not up yet: keep polling until the deadline
                client = None
                time.sleep(0.2)
                continue
            for node in map(NodeInfo.from_gcs, infos.values()):
                if node.port in pending and node.alive:
                    launch = pending.pop(node.port)
                    launch.node.node_id = node.node_id
                    launch.node.state = "running"
                    log.info("node_up", node=launch.node.name, node_id=launch.node.node_id)
            if pending:
                time.sleep(0.2)

    def fail(self, launch: Launch, why: str, nodes: list[LocalNode]) -> NoReturn:
        """Kill every node started so far and raise with the tail of the failed node's log."""
        tail = (launch.log_path.read_text(errors="replace")[-2000:]
                if launch.log_path.exists() else "")
        for node in nodes:
            processes.kill_session(node.leader_pid)
            self.reap(node)
            node.state = "killed"
        if self.network is not None:
            self.network.stop()
        raise ClusterError(f"node {launch.node.name} failed to start ({why}); its log is "
                           f"{launch.log_path}, ending:\n{tail}")

    def reap(self, node: LocalNode) -> None:
        """Collect the exit status of the node's ``ray start`` (no zombie left behind)."""
        launch = self.launches.get(node.name)
        if launch is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                launch.popen.wait(timeout=5)

    def _relaunch(self, failed: Launch, address: str, nodes: list[LocalNode]) -> Launch:
        processes.kill_session(failed.node.leader_pid)
        self.reap(failed.node)
        nodes.remove(failed.node)
        old = failed.node
        node = LocalNode(name=old.name, is_head=False, num_cpus=old.num_cpus, region=old.region,
                         zone=old.zone, labels=old.labels, resources=old.resources,
                         node_manager_port=self.free_port())
        launch = self.launch(node, ["--address", address] + self.node_args(node), nodes)
        launch.attempt = failed.attempt + 1
        return launch

    def _process_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("RAY_AUTH_TOKEN", None)
        env.pop("RAY_ADDRESS", None)
        env.update(self.env)
        # Ray's default (10 s) for a raylet to come up is too short on a loaded 2-core machine.
        env.setdefault("RAY_raylet_start_wait_time_s", "120")
        venv_bin = str(Path(sys.executable).parent)
        env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
        return env
