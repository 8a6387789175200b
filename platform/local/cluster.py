"""Real multi-node Ray clusters on this machine: one ``ray start --block`` process per node.

Every node is started in its own session (:mod:`herd.platform.local.launch`), so all of its
processes (GCS, raylet, agents, workers) can be found and signalled by session id; herd stops
exactly the processes it started and never calls ``ray stop`` (which kills every Ray process on
the host by name).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import ray

from herd.platform.auth import forget_token, use_token
from herd.platform.config import ClusterConfig, HealthCheckConfig, NodeSpec
from herd.platform.connection import LOOPBACK, ClusterInfo, connect, leave_ray
from herd.platform.errors import ClusterError
from herd.platform.local import processes
from herd.platform.local.head import HEAD_RESTART_TIMEOUT_S, HeadProcess, driver_namespace
from herd.platform.local.isolation import NodeNetwork, required
from herd.platform.local.launch import Launch, NodeLauncher, check_regions, free_port
from herd.platform.local.node import LocalNode
from herd.platform.logging import get_logger

__all__ = ["STATE_FILE", "LocalCluster", "LocalNode", "check_regions", "free_port"]

log = get_logger("herd.local_cluster")

STATE_FILE = "cluster.json"
REAPER_EXIT_S = 5.0


class LocalCluster:
    """A real Ray cluster of ``nodes`` nodes (the head counts as one) bound to 127.0.0.1.

    ``regions`` are assigned round-robin to the nodes (head first); each node gets the labels
    ``region``/``zone`` and a ``region:<name>`` custom resource as a fallback selector.
    Token authentication is on unless ``auth="disabled"``; the token lives in the run
    directory with mode 0600. GCS fault tolerance is on unless ``gcs_fault_tolerance=False``
    (RocksDB storage in the run dir: :meth:`restart_head`).
    """

    def __init__(self, nodes: int = 3, regions: list[str] | None = None,
                 health_check: HealthCheckConfig | dict[str, int] | None = None,
                 auth: str = "token", num_cpus: float = 1.0, run_dir: str | Path | None = None,
                 include_dashboard: bool = False, extra_env: dict[str, str] | None = None,
                 start: bool = True, owned: bool = True,
                 gcs_fault_tolerance: bool = True, isolated_nodes: bool = False) -> None:
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
        self.run_dir: Path = (Path(run_dir) if run_dir
                              else Path(f"/tmp/herd/c-{secrets.token_hex(3)}"))
        self.include_dashboard = include_dashboard
        self.extra_env = dict(extra_env or {})
        self.nodes: list[LocalNode] = []
        self.port = 0
        self.dashboard_port: int | None = None
        # Ray's unix sockets live under its temp dir and must stay under ~107 characters,
        # so the temp dirs are short paths of their own, whatever the run dir is.
        ray_tmp = Path(f"/tmp/herd/r-{secrets.token_hex(4)}")
        self.network = NodeNetwork().start() if isolated_nodes else None  # see partition()
        self.launcher = NodeLauncher(self.run_dir, ray_tmp, self.env(),
                                     self.token_path if auth == "token" else None,
                                     on_change=self.save_state, network=self.network)
        self.head_process = HeadProcess(self.launcher, self.run_dir, gcs_fault_tolerance)
        # An owned cluster dies with the process that started it (herd.platform.local.reaper);
        # `herd cluster up` starts an unowned one that runs until `herd cluster down`.
        self.owned = owned
        self._reaper: subprocess.Popen[bytes] | None = None
        if start:
            self.start()

    @classmethod
    def from_config(cls, config: ClusterConfig, run_dir: str | Path | None = None,
                    include_dashboard: bool = False, owned: bool = True) -> LocalCluster:
        """Start the ``mode: local`` topology of a ClusterConfig."""
        cluster = cls(nodes=1, regions=config.regions, health_check=config.health_check,
                      auth=config.auth, num_cpus=config.head.num_cpus, run_dir=run_dir,
                      include_dashboard=include_dashboard, start=False, owned=owned,
                      gcs_fault_tolerance=config.gcs_fault_tolerance)
        cluster._start_nodes(config.head, config.worker_specs())
        cluster.save_state()
        return cluster

    # ----------------------------------------------------------------------------------- api
    @property
    def address(self) -> str:
        return f"{self.network.head_address if self.network else LOOPBACK}:{self.port}"

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
    def ray_tmp(self) -> Path:
        """Parent of the nodes' Ray temp dirs (sessions, sockets, Ray's own logs)."""
        return self.launcher.ray_tmp

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
        """Start ``nodes`` nodes, assigning ``regions`` round-robin (head first)."""
        check_regions(self.regions, self.nodes_count)
        specs = [self._round_robin_spec(i) for i in range(self.nodes_count)]
        self._start_nodes(specs[0], specs[1:])
        self.save_state()
        return self

    def connect(self, namespace: str = "herd", log_to_driver: bool | None = None,
                timeout_s: float | None = None) -> ClusterInfo:
        """Connect this process's Ray driver to the cluster (sets the auth environment)."""
        use_token(self.token_path if self.auth == "token" else None)
        return connect(address=self.address, namespace=namespace, log_to_driver=log_to_driver,
                       timeout_s=timeout_s)

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
        self.launcher.reap(target)
        if survivors:
            raise ClusterError(f"node {target.name}: pids {survivors} survived SIGKILL")
        target.state = "killed"
        log.info("node_killed", node=target.name, node_id=target.node_id)
        self.save_state()
        return target

    def stop_node(self, node: LocalNode | str, timeout_s: float = 15.0) -> LocalNode:
        """Graceful stop: SIGTERM to ``ray start``, then SIGKILL what is left at the deadline."""
        target = self._node(node)
        if target.state == "paused":
            self.resume_node(target)
        with contextlib.suppress(ProcessLookupError):
            os.kill(target.leader_pid, signal.SIGTERM)
        left = processes.wait_session_gone(target.leader_pid, timeout_s)
        if left:
            processes.kill_session(target.leader_pid)
        self.launcher.reap(target)
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

    def partition(self, node: LocalNode | str) -> None:
        """Cut a worker's only link (isolated_nodes=True): its processes run on, cut off."""
        required(self.network, "partition").partition(self._node(node).name)

    def heal(self, node: LocalNode | str) -> None:
        required(self.network, "heal").heal(self._node(node).name)

    def restart_head(self, timeout_s: float = HEAD_RESTART_TIMEOUT_S) -> float:
        """SIGKILL the head (if ``kill_node`` did not) and start it again on the same ports and
        GCS storage; returns the seconds until the GCS lists the new head (``head.node_id`` is
        updated). ``ClusterError`` without GCS fault tolerance. This process's driver, attached
        to the old head's raylet, is connected again: get handles again by name afterwards
        (:mod:`herd.platform.local.head` says why); other drivers must reconnect themselves."""
        self.head_process.check_restartable()
        namespace = driver_namespace(self.address)
        took = self.head_process.restart(self.head, self.address, timeout_s)
        self.save_state()
        if namespace is not None:
            leave_ray()
            self.connect(namespace=namespace, timeout_s=timeout_s)
        return took

    def node_by_id(self, node_id: str) -> LocalNode:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise ClusterError(f"no node of this cluster has id {node_id}")

    @property
    def pids(self) -> list[int]:
        """Every live pid of every node this cluster started."""
        return sorted(pid for node in self.nodes for pid in node.pids)

    def shutdown(self, timeout_s: float = 20.0, graceful: bool = False) -> None:
        """Stop every node and verify no process survives. By default every process of every
        node is stopped, then killed: a local cluster holds nothing a graceful stop would save
        (herd's durable state is fsynced as it is written), and Ray's graceful stop waits
        seconds for its agents. ``graceful=True`` sends SIGTERM first (workers first, then the
        head) and kills what is left after ``timeout_s / 2``."""
        if ray.is_initialized():
            try:
                if ray.get_runtime_context().gcs_address == self.address:
                    leave_ray()
            except Exception:  # a driver already half torn down must not block the cleanup
                ray.shutdown()
        leaders = [node.leader_pid for node in self.nodes if node.leader_pid]
        if graceful:
            self._stop_gracefully(timeout_s / 2)
        survivors = processes.kill_sessions(leaders, timeout_s / 2)
        for node in self.nodes:
            self.launcher.reap(node)
            if node.state not in ("killed",):
                node.state = "stopped"
        if self.network is not None:
            self.network.stop()
        if survivors:
            self.save_state()
            raise ClusterError(f"processes {survivors} survived the cluster shutdown")
        if os.environ.get("HERD_KEEP_RUN_DIR") == "1":
            self.save_state()
        else:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            shutil.rmtree(self.ray_tmp, ignore_errors=True)
            forget_token(self.token_path)
        self._reap_reaper()
        log.info("cluster_stopped", address=self.address, run_dir=str(self.run_dir))

    def _stop_gracefully(self, timeout_s: float) -> None:
        for node in self.nodes:
            if node.state == "paused":
                processes.signal_session(node.leader_pid, signal.SIGCONT)
            elif self.network is not None and self.network.is_cut(node.name):
                processes.kill_session(node.leader_pid)  # cut off, it cannot stop gracefully
        processes.terminate_sessions([n.leader_pid for n in reversed(self.nodes) if n.leader_pid],
                                     timeout_s)

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
            "gcs_fault_tolerance": self.head_process.fault_tolerant,
            "head_args": self.head_process.args,
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
                      start=False, gcs_fault_tolerance=state.get("gcs_fault_tolerance", False))
        cluster.head_process.args = state.get("head_args", [])
        cluster.port = state["port"]
        cluster.launcher.ray_tmp = Path(state["ray_tmp"])
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

    def _start_nodes(self, head: NodeSpec, workers: list[NodeSpec]) -> None:
        """The head, then all the workers side by side. A worker's ``ray start`` gives up when
        the GCS answers but lists no head node yet ("No node info found for head node"), which
        a loaded machine makes likely, so the workers wait for the head's registration."""
        self.launcher.wait_registered([self._launch_head(head)], self.address, self.nodes)
        self._start_workers(workers)

    def _launch_head(self, spec: NodeSpec) -> Launch:
        self._prepare_run_dir()
        launcher = self.launcher
        self.port = launcher.free_port()
        node = launcher.node_from_spec(spec, is_head=True, index=0)
        if self.include_dashboard:
            self.dashboard_port = launcher.free_port()
        args = launcher.head_args(self.port, self.health_check, self.dashboard_port)
        launch = self.head_process.start(node, args + launcher.node_args(node), self.nodes)
        log.info("node_starting", node=node.name, head=True, port=self.port)
        if self.owned:
            self._start_reaper()
        return launch

    def _start_reaper(self) -> None:
        self._reaper = subprocess.Popen(
            [sys.executable, "-m", "herd.platform.local.reaper", str(os.getpid()),
             str(self.run_dir / STATE_FILE)], stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def _reap_reaper(self) -> None:
        """The reaper exits within a poll once every node is gone; collect its exit status."""
        if self._reaper is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._reaper.wait(timeout=REAPER_EXIT_S)

    def _launch_worker(self, spec: NodeSpec) -> Launch:
        node = self.launcher.node_from_spec(spec, is_head=False, index=len(self.nodes))
        args = ["--address", self.address] + self.launcher.node_args(node)
        launch = self.launcher.launch(node, args, self.nodes)
        log.info("node_starting", node=node.name, region=node.region, zone=node.zone)
        return launch

    def _start_workers(self, specs: list[NodeSpec]) -> list[LocalNode]:
        launches = [self._launch_worker(spec) for spec in specs]
        self.launcher.wait_registered(launches, self.address, self.nodes)
        return [launch.node for launch in launches]
