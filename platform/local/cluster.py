"""Real multi-node Ray clusters on this machine: one ``ray start --block`` process per node.

Every node is started in its own session, so all of its processes (GCS, raylet, agents, workers)
can be found and signalled by session id; herd stops exactly the processes it started and never
calls ``ray stop`` (which kills every Ray process on the host by name).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from herd.platform.auth import forget_token, use_token
from herd.platform.config import ClusterConfig, HealthCheckConfig, NodeSpec
from herd.platform.errors import ClusterError
from herd.platform.local import processes
from herd.platform.logging import get_logger

log = get_logger("herd.local_cluster")

LOOPBACK = "127.0.0.1"
STATE_FILE = "cluster.json"
REGION_RESOURCE_UNITS = 1000.0
NODE_START_TIMEOUT_S = 90.0
WORKER_START_ATTEMPTS = 2


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def ray_executable() -> str:
    candidate = Path(sys.executable).parent / "ray"
    return str(candidate) if candidate.exists() else "ray"


@dataclass
class LocalNode:
    """One node of a LocalCluster and the session that holds its processes."""

    name: str
    is_head: bool
    num_cpus: float
    region: str | None
    zone: str | None
    labels: dict[str, str]
    resources: dict[str, float]
    node_manager_port: int
    leader_pid: int = 0
    node_id: str | None = None
    state: str = "starting"  # starting | running | paused | killed | stopped

    def pids(self) -> list[int]:
        """Live pids of this node's processes."""
        return processes.session_pids(self.leader_pid) if self.leader_pid else []

    @property
    def alive(self) -> bool:
        """Started by us, not stopped or killed by us, and its processes still exist (a raylet
        the GCS declared dead exits on its own)."""
        return self.state in ("running", "paused") and bool(self.pids())


@dataclass
class _Launch:
    node: LocalNode
    popen: subprocess.Popen[bytes]
    log_path: Path
    attempt: int = 1


class LocalCluster:
    """A real Ray cluster of ``nodes`` nodes (the head counts as one) bound to 127.0.0.1.

    ``regions`` are assigned round-robin to the nodes (head first); each node gets the labels
    ``region``/``zone`` and a ``region:<name>`` custom resource as a fallback selector.
    Token authentication is on unless ``auth="disabled"``; the token lives in the run
    directory with mode 0600.
    """

    def __init__(self, nodes: int = 3, regions: list[str] | None = None,
                 health_check: HealthCheckConfig | dict[str, int] | None = None,
                 auth: str = "token", num_cpus: float = 1.0, run_dir: str | Path | None = None,
                 include_dashboard: bool = False, extra_env: dict[str, str] | None = None,
                 start: bool = True, owned: bool = True) -> None:
        if nodes < 1:
            raise ClusterError(f"a cluster needs at least one node, got nodes={nodes}")
        if auth not in ("token", "disabled"):
            raise ClusterError(f"auth must be 'token' or 'disabled', got {auth!r}")
        self.nodes_count = nodes
        self.regions = list(regions or [])
        self.health_check = (HealthCheckConfig(**health_check) if isinstance(health_check, dict)
                             else health_check or HealthCheckConfig())
        self.auth = auth
        self.num_cpus = num_cpus
        self.run_dir: Path = Path(run_dir) if run_dir else Path(f"/tmp/herd/c-{secrets.token_hex(3)}")
        # Ray's unix sockets live under its temp dir and must stay under ~107 characters,
        # so the temp dirs are short paths of their own, whatever the run dir is.
        self.ray_tmp = Path(f"/tmp/herd/r-{secrets.token_hex(4)}")
        self.include_dashboard = include_dashboard
        self.extra_env = dict(extra_env or {})
        self.nodes: list[LocalNode] = []
        self.port = 0
        self.dashboard_port: int | None = None
        self._launches: dict[str, _Launch] = {}
        self._ports_handed_out: set[int] = set()
        # An owned cluster dies with the process that started it (herd.platform.local.reaper);
        # `herd cluster up` starts an unowned one that runs until `herd cluster down`.
        self.owned = owned
        if start:
            self.start()

    @classmethod
    def from_config(cls, config: ClusterConfig, run_dir: str | Path | None = None,
                    include_dashboard: bool = False, owned: bool = True) -> LocalCluster:
        """Start the ``mode: local`` topology of a ClusterConfig."""
        cluster = cls(nodes=1, regions=config.regions, health_check=config.health_check,
                      auth=config.auth, num_cpus=config.head.num_cpus, run_dir=run_dir,
                      include_dashboard=include_dashboard, start=False, owned=owned)
        cluster._start_head(config.head)
        cluster._start_workers(config.worker_specs())
        cluster.save_state()
        return cluster

    # ----------------------------------------------------------------------------------- api
    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def dashboard_url(self) -> str | None:
        return f"http://{LOOPBACK}:{self.dashboard_port}" if self.dashboard_port else None

    @property
    def head(self) -> LocalNode:
        return self.nodes[0]

    @property
    def worker_nodes(self) -> list[LocalNode]:
        return [n for n in self.nodes if not n.is_head and n.alive]

    @property
    def token_path(self) -> Path:
        return self.run_dir / "auth_token"

    def env(self) -> dict[str, str]:
        """Environment a process needs to join or connect to this cluster."""
        env = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": self.auth}
        if self.auth == "token":
            env["RAY_AUTH_TOKEN_PATH"] = str(self.token_path)
        env.update(self.extra_env)
        return env

    def start(self) -> LocalCluster:
        specs = [self._round_robin_spec(i) for i in range(self.nodes_count)]
        self._start_head(specs[0])
        self._start_workers(specs[1:])
        self.save_state()
        return self

    def connect(self, namespace: str = "herd", log_to_driver: bool = True) -> Any:
        """Connect this process's Ray driver to the cluster (sets the auth environment)."""
        from herd.platform.cluster import connect

        self._apply_driver_auth()
        return connect(address=self.address, namespace=namespace, log_to_driver=log_to_driver)

    def add_node(self, region: str | None = None, zone: str | None = None,
                 labels: dict[str, str] | None = None, resources: dict[str, float] | None = None,
                 num_cpus: float | None = None) -> LocalNode:
        """Start one more worker node and wait until the GCS reports it alive."""
        if region and self.regions and region not in self.regions:
            raise ClusterError(f"unknown region {region!r}; cluster regions are {self.regions}")
        spec = NodeSpec(num_cpus=self.num_cpus if num_cpus is None else num_cpus,
                        region=region, zone=zone, labels=labels or {}, resources=resources or {})
        node = self._start_workers([spec])[0]
        self.save_state()
        return node

    def kill_node(self, node: LocalNode | str) -> LocalNode:
        """SIGKILL every process of the node: a crash. Returns once none survives."""
        target = self._node(node)
        survivors = processes.kill_session(target.leader_pid)
        self._reap(target)
        if survivors:
            raise ClusterError(f"node {target.name}: pids {survivors} survived SIGKILL")
        target.state = "killed"
        log.info("node_killed", node=target.name, node_id=target.node_id)
        self.save_state()
        return target

    def stop_node(self, node: LocalNode | str, timeout_s: float = 15.0) -> LocalNode:
        """Graceful stop: SIGTERM to ``ray start``, then SIGKILL whatever is left at the deadline."""
        target = self._node(node)
        if target.state == "paused":
            self.resume_node(target)
        with contextlib.suppress(ProcessLookupError):
            os.kill(target.leader_pid, signal.SIGTERM)
        left = processes.wait_session_gone(target.leader_pid, timeout_s)
        if left:
            processes.kill_session(target.leader_pid)
        self._reap(target)
        target.state = "stopped"
        log.info("node_stopped", node=target.name, node_id=target.node_id, forced=bool(left))
        self.save_state()
        return target

    def pause_node(self, node: LocalNode | str) -> LocalNode:
        """SIGSTOP every process of the node: a hung node (the GCS will declare it dead)."""
        target = self._node(node)
        processes.signal_session(target.leader_pid, signal.SIGSTOP)
        target.state = "paused"
        log.info("node_paused", node=target.name, node_id=target.node_id)
        return target

    def resume_node(self, node: LocalNode | str) -> LocalNode:
        target = self._node(node)
        processes.signal_session(target.leader_pid, signal.SIGCONT)
        target.state = "running"
        log.info("node_resumed", node=target.name, node_id=target.node_id)
        return target

    def node_by_id(self, node_id: str) -> LocalNode:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise ClusterError(f"no node of this cluster has id {node_id}")

    def pids(self) -> list[int]:
        """Every live pid of every node this cluster started."""
        return sorted(pid for node in self.nodes for pid in node.pids())

    def shutdown(self, timeout_s: float = 20.0) -> None:
        """Stop every node (workers first, then the head) and verify no process survives."""
        import ray

        if ray.is_initialized():
            try:
                if ray.get_runtime_context().gcs_address == self.address:
                    ray.shutdown()
            except Exception:  # a driver already half torn down must not block the cleanup
                ray.shutdown()
        for node in self.nodes:
            if node.state == "paused":
                processes.signal_session(node.leader_pid, signal.SIGCONT)
        for node in reversed(self.nodes):
            if node.leader_pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(node.leader_pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s / 2
        for node in self.nodes:
            processes.wait_session_gone(node.leader_pid, max(0.0, deadline - time.monotonic()))
        survivors: list[int] = []
        for node in self.nodes:
            survivors += processes.kill_session(node.leader_pid, timeout_s / 2)
            self._reap(node)
            if node.state not in ("killed",):
                node.state = "stopped"
        if survivors:
            self.save_state()
            raise ClusterError(f"processes {survivors} survived the cluster shutdown")
        if os.environ.get("HERD_KEEP_RUN_DIR") == "1":
            self.save_state()
        else:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            shutil.rmtree(self.ray_tmp, ignore_errors=True)
            forget_token(self.token_path)
        log.info("cluster_stopped", address=self.address, run_dir=str(self.run_dir))

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # ------------------------------------------------------------------------- state file
    def save_state(self) -> None:
        if not self.run_dir.exists():
            return
        state = {
            "address": self.address, "port": self.port, "auth": self.auth,
            "dashboard_port": self.dashboard_port, "regions": self.regions,
            "health_check": self.health_check.model_dump(), "num_cpus": self.num_cpus,
            "ray_tmp": str(self.ray_tmp),
            "nodes": [asdict(n) for n in self.nodes],
        }
        (self.run_dir / STATE_FILE).write_text(json.dumps(state, indent=2))

    @classmethod
    def attach(cls, run_dir: str | Path) -> LocalCluster:
        """Re-open a cluster started earlier (e.g. by ``herd cluster up``) from its run dir."""
        path = Path(run_dir) / STATE_FILE
        try:
            state = json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise ClusterError(f"no cluster state at {path}") from exc
        cluster = cls(nodes=1, regions=state["regions"], health_check=state["health_check"],
                      auth=state["auth"], num_cpus=state["num_cpus"], run_dir=run_dir,
                      start=False)
        cluster.port = state["port"]
        cluster.ray_tmp = Path(state["ray_tmp"])
        cluster.dashboard_port = state.get("dashboard_port")
        cluster.nodes = [LocalNode(**n) for n in state["nodes"]]
        return cluster

    # ----------------------------------------------------------------------------- internals
    def _round_robin_spec(self, index: int) -> NodeSpec:
        if not self.regions:
            return NodeSpec(num_cpus=self.num_cpus)
        region = self.regions[index % len(self.regions)]
        zone = f"{region}-{'abcdefgh'[(index // len(self.regions)) % 8]}"
        return NodeSpec(num_cpus=self.num_cpus, region=region, zone=zone)

    def _node(self, node: LocalNode | str) -> LocalNode:
        if isinstance(node, LocalNode):
            return node
        for candidate in self.nodes:
            if node in (candidate.name, candidate.node_id):
                return candidate
        raise ClusterError(f"no node named or with id {node!r} in this cluster")

    def _prepare_run_dir(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "logs").mkdir(exist_ok=True)
        if self.auth == "token" and not self.token_path.exists():
            fd = os.open(self.token_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(32))

    def _process_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("RAY_AUTH_TOKEN", None)
        env.pop("RAY_ADDRESS", None)
        env.update(self.env())
        # Ray's default (10 s) for a raylet to come up is too short on a loaded 2-core machine.
        env.setdefault("RAY_raylet_start_wait_time_s", "120")
        venv_bin = str(Path(sys.executable).parent)
        env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
        return env

    def _node_from_spec(self, spec: NodeSpec, is_head: bool) -> LocalNode:
        labels = spec.all_labels()
        resources = dict(spec.resources)
        if spec.region:
            resources[f"region:{spec.region}"] = REGION_RESOURCE_UNITS
        index = len(self.nodes)
        return LocalNode(name="head" if is_head else f"worker-{index}", is_head=is_head,
                         num_cpus=spec.num_cpus, region=spec.region, zone=spec.zone,
                         labels=labels, resources=resources, node_manager_port=self._free_port())

    def _free_port(self) -> int:
        """A free loopback port this cluster has not handed out before. `ray start` refuses two
        equal ports, and ports handed to nodes launched together are not bound yet, so a port
        that the kernel offers twice in a row must not be used twice."""
        while True:
            port = free_port()
            if port not in self._ports_handed_out:
                self._ports_handed_out.add(port)
                return port

    def _common_args(self, node: LocalNode) -> list[str]:
        args = ["--block", "--node-ip-address", LOOPBACK, "--num-cpus", str(int(node.num_cpus)),
                "--node-manager-port", str(node.node_manager_port),
                "--object-manager-port", str(self._free_port()),
                "--dashboard-agent-listen-port", str(self._free_port()),
                "--dashboard-agent-grpc-port", str(self._free_port()),
                "--metrics-export-port", str(self._free_port()),
                "--runtime-env-agent-port", str(self._free_port()),
                "--temp-dir", str(self.ray_tmp / node.name), "--disable-usage-stats"]
        if node.resources:
            args += ["--resources", json.dumps(node.resources)]
        if node.labels:
            args += ["--labels", ",".join(f"{k}={v}" for k, v in sorted(node.labels.items()))]
        return args

    def _launch(self, node: LocalNode, args: list[str]) -> _Launch:
        log_path = self.run_dir / "logs" / f"{node.name}.log"
        with open(log_path, "ab") as out:
            popen = subprocess.Popen([ray_executable(), "start", *args], stdout=out,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=self._process_env(), start_new_session=True)
        node.leader_pid = popen.pid
        self.nodes.append(node)
        launch = _Launch(node, popen, log_path)
        self._launches[node.name] = launch
        self.save_state()
        return launch

    def _start_head(self, spec: NodeSpec) -> LocalNode:
        self._prepare_run_dir()
        self.port = self._free_port()
        node = self._node_from_spec(spec, is_head=True)
        args = ["--head", "--port", str(self.port),
                "--ray-client-server-port", str(self._free_port()),
                "--system-config", json.dumps(self.health_check.to_system_config())]
        if self.include_dashboard:
            self.dashboard_port = self._free_port()
            args += ["--include-dashboard", "true", "--dashboard-host", LOOPBACK,
                     "--dashboard-port", str(self.dashboard_port)]
        else:
            args += ["--include-dashboard", "false"]
        launch = self._launch(node, args + self._common_args(node))
        log.info("node_starting", node=node.name, head=True, port=self.port)
        self.save_state()
        if self.owned:
            self._start_reaper()
        self._wait_registered([launch])
        return node

    def _start_reaper(self) -> None:
        subprocess.Popen([sys.executable, "-m", "herd.platform.local.reaper", str(os.getpid()),
                          str(self.run_dir / STATE_FILE)], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)

    def _start_workers(self, specs: list[NodeSpec]) -> list[LocalNode]:
        launches = []
        for spec in specs:
            node = self._node_from_spec(spec, is_head=False)
            args = ["--address", self.address] + self._common_args(node)
            launches.append(self._launch(node, args))
            log.info("node_starting", node=node.name, region=node.region, zone=node.zone)
        self._wait_registered(launches)
        return [launch.node for launch in launches]

    def _apply_driver_auth(self) -> None:
        use_token(self.token_path if self.auth == "token" else None)

    def _wait_registered(self, launches: list[_Launch]) -> None:
        """Wait until the GCS lists every launched node alive; fail fast if a launcher exits."""
        from ray._raylet import GcsClient

        self._apply_driver_auth()
        deadline = time.monotonic() + NODE_START_TIMEOUT_S
        pending = {launch.node.node_manager_port: launch for launch in launches}
        client = None
        while pending:
            for port, launch in list(pending.items()):
                if launch.popen.poll() is None:
                    continue
                why = f"exited with code {launch.popen.returncode}"
                if launch.node.is_head or launch.attempt >= WORKER_START_ATTEMPTS:
                    self._fail_launch(launch, why)
                # A worker's `ray start` gives up when the GCS is slow to answer (an overloaded
                # machine): start it once more before failing the cluster.
                log.warning("node_start_retry", node=launch.node.name, why=why)
                del pending[port]
                retry = self._relaunch(launch)
                pending[retry.node.node_manager_port] = retry
                deadline = max(deadline, time.monotonic() + NODE_START_TIMEOUT_S)
            if time.monotonic() > deadline:
                self._fail_launch(next(iter(pending.values())),
                                  f"not registered within {NODE_START_TIMEOUT_S:.0f} s")
            try:
                client = client or GcsClient(address=self.address)
                infos = client.get_all_node_info(timeout=2)
            except Exception:  # GCS not up yet: keep polling until the deadline
                client = None
                time.sleep(0.2)
                continue
            for node_id, info in infos.items():
                port = info.node_manager_port
                if port in pending and info.state == 0:  # GcsNodeInfo.ALIVE
                    launch = pending.pop(port)
                    launch.node.node_id = node_id.hex()
                    launch.node.state = "running"
                    log.info("node_up", node=launch.node.name, node_id=launch.node.node_id)
            if pending:
                time.sleep(0.2)

    def _relaunch(self, failed: _Launch) -> _Launch:
        processes.kill_session(failed.node.leader_pid)
        self._reap(failed.node)
        self.nodes.remove(failed.node)
        old = failed.node
        node = LocalNode(name=old.name, is_head=False, num_cpus=old.num_cpus, region=old.region,
                         zone=old.zone, labels=old.labels, resources=old.resources,
                         node_manager_port=self._free_port())
        launch = self._launch(node, ["--address", self.address] + self._common_args(node))
        launch.attempt = failed.attempt + 1
        return launch

    def _fail_launch(self, launch: _Launch, why: str) -> None:
        tail = launch.log_path.read_text(errors="replace")[-2000:] if launch.log_path.exists() else ""
        for node in self.nodes:
            processes.kill_session(node.leader_pid)
            self._reap(node)
            node.state = "killed"
        raise ClusterError(f"node {launch.node.name} failed to start ({why}); log tail:\n{tail}")

    def _reap(self, node: LocalNode) -> None:
        launch = self._launches.get(node.name)
        if launch is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                launch.popen.wait(timeout=5)
