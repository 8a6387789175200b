"""The head node of a local cluster with GCS fault tolerance: started, SIGKILLed and started again.

With fault tolerance on (the default), the GCS keeps its tables in RocksDB under
``<run_dir>/gcs-storage`` (``RAY_gcs_storage=rocksdb``, ``RAY_gcs_storage_path``: no Redis), so
a head started again on the same port and storage path restores the cluster: worker raylets
reconnect within ``RAY_gcs_rpc_server_reconnect_timeout_s`` and their actors keep running.

The head runs in a PID namespace of its own (``unshare --pid --fork --mount-proc``), on its first
start as on every restart: ``ray start --head`` refuses to start while a worker raylet of the same
cluster runs on this machine (it scans the processes it can see), and inside the namespace it sees
only its own. From this machine's ``/proc`` every process of the namespace is still in the session
of the ``unshare`` process (herd's node leader), so :mod:`herd.platform.local.processes` finds,
signals and kills them as for any node.

What a driver on this machine sees (measured on Ray 2.60): it is attached to the head's raylet.
While the head is down, calls to actors on workers that it already reached keep working; GCS
reads block until the GCS is back (herd's calls time out with ``ClusterUnavailable``); after
``RAY_gcs_rpc_server_reconnect_timeout_s`` (60 s) without a GCS the driver process exits. Once
the head is back its GCS client reconnects by itself, but with its raylet gone it can neither
create actors (they stay pending) nor follow actors that restarted meanwhile (the control plane,
restarted on the new head, stays "unavailable" to it). So the driver must reconnect
(``ray.shutdown()``, then connect): ``LocalCluster.restart_head`` does that for its own process,
and handles from before are useless afterwards (a new job): get them again by name.
"""

from __future__ import annotations

import contextlib
import functools
import shutil
import subprocess
import time
from pathlib import Path
from typing import NoReturn

import ray
from ray._raylet import GcsClient

from herd.platform.auth import use_token
from herd.platform.errors import ClusterError
from herd.platform.gcs import NodeInfo
from herd.platform.local import processes
from herd.platform.local.launch import Launch, NodeLauncher
from herd.platform.local.node import LocalNode
from herd.platform.logging import get_logger

__all__ = ["GCS_STORAGE_DIR", "HEAD_RESTART_TIMEOUT_S", "HeadProcess", "pid_namespace_command"]

log = get_logger("herd.local_cluster")

GCS_STORAGE_DIR = "gcs-storage"
HEAD_RESTART_TIMEOUT_S = 90.0
# How long the worker raylets (and drivers) wait for a GCS that went away before they exit.
# Ray's default; a head restart must complete well within it.
GCS_RECONNECT_TIMEOUT_S = 60
PROBE_TIMEOUT_S = 10.0


@functools.cache
def pid_namespace_command() -> tuple[str, ...]:
    """The prefix that runs a command in a PID namespace of its own: plain ``unshare`` as root,
    with a user namespace (``--map-root-user``) otherwise; empty when neither is permitted."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return ()
    base = (unshare, "--pid", "--fork", "--mount-proc", "--kill-child=SIGTERM")
    for prefix in (base, (unshare, "--user", "--map-root-user", *base[1:])):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            probe = subprocess.run([*prefix, "true"], capture_output=True,
                                   timeout=PROBE_TIMEOUT_S, check=False)
            if probe.returncode == 0:
                return prefix
    return ()


class HeadProcess:
    """How one cluster's head is started, and how it is started again after a crash.

    ``fault_tolerant`` turns on GCS storage in RocksDB and the head's own PID namespace; without
    it the head starts as any node does and :meth:`restart` refuses.
    """

    def __init__(self, launcher: NodeLauncher, run_dir: Path, fault_tolerant: bool) -> None:
        self.launcher = launcher
        self.fault_tolerant = fault_tolerant
        self.storage_path = run_dir / GCS_STORAGE_DIR
        self.args: list[str] = []

    def env(self) -> dict[str, str]:
        """The head's own environment on top of the cluster's."""
        if not self.fault_tolerant:
            return {}
        return {"RAY_gcs_storage": "rocksdb", "RAY_gcs_storage_path": str(self.storage_path),
                "RAY_gcs_rpc_server_reconnect_timeout_s": str(GCS_RECONNECT_TIMEOUT_S)}

    def command_prefix(self) -> list[str]:
        if not self.fault_tolerant:
            return []
        prefix = pid_namespace_command()
        if not prefix:
            raise ClusterError(
                "GCS fault tolerance needs the head in a PID namespace of its own (`unshare "
                "--pid --fork --mount-proc`), which this machine does not permit; start the "
                "cluster with gcs_fault_tolerance=False")
        return list(prefix)

    def start(self, node: LocalNode, args: list[str], nodes: list[LocalNode]) -> Launch:
        """Launch the head (``args`` are its whole ``ray start`` arguments, kept for restarts);
        appends it to ``nodes``."""
        self.args = list(args)
        if self.fault_tolerant:
            self.storage_path.mkdir(parents=True, exist_ok=True)
        return self.launcher.launch(node, self.args, nodes, prefix=self.command_prefix(),
                                    env=self.env())

    def check_restartable(self) -> None:
        """``ClusterError`` unless this head can be restarted with its state."""
        if not self.fault_tolerant:
            raise ClusterError(
                "restart_head() needs GCS fault tolerance: this cluster was started with "
                "gcs_fault_tolerance=False, so its GCS state would be lost with the head")
        if not self.args:
            raise ClusterError("restart_head(): the head's command line is unknown (the "
                               "cluster was started by an older herd)")

    def restart(self, node: LocalNode, address: str,
                timeout_s: float = HEAD_RESTART_TIMEOUT_S) -> float:
        """SIGKILL every process of the head, start it again with the same arguments (ports,
        temp dir, storage path) and wait until the GCS lists the new head alive; sets the node's
        new ``node_id``. Returns the seconds from the kill until the new head registered.

        The head may be dead already (killed as a node). A driver of this process must be
        connected again afterwards (see the module's docstring).
        """
        self.check_restartable()
        old_id = node.node_id
        began = time.monotonic()
        survivors = processes.kill_session(node.leader_pid) if node.leader_pid else []
        self.launcher.reap(node)
        if survivors:
            raise ClusterError(f"head: pids {survivors} survived SIGKILL")
        node.state = "killed"
        log.info("head_killed", node_id=old_id, address=address)
        # A scratch list: the node is already one of the cluster's nodes.
        launch = self.launcher.launch(node, self.args, [], prefix=self.command_prefix(),
                                      env=self.env())
        node.node_id = self._wait_new_head(launch, address, old_id, began + timeout_s)
        node.state = "running"
        took = time.monotonic() - began
        log.info("head_restarted", old_node_id=old_id, node_id=node.node_id,
                 seconds=round(took, 3))
        return took

    def _wait_new_head(self, launch: Launch, address: str, old_id: str | None,
                       deadline: float) -> str:
        """Poll the GCS until a live head other than ``old_id`` is listed; its node id."""
        use_token(self.launcher.token_path)
        client = None
        while time.monotonic() < deadline:
            if launch.popen.poll() is not None:
                self._fail(launch, f"exited with code {launch.popen.returncode}")
            try:
                client = client or GcsClient(address=address)
                infos = client.get_all_node_info(timeout=2)
            except Exception:  # the GCS is not up yet: keep polling until the deadline
                client = None
                time.sleep(0.2)
                continue
            for info in map(NodeInfo.from_gcs, infos.values()):
                if info.is_head and info.alive and info.node_id != old_id:
                    return info.node_id
            time.sleep(0.1)
        self._fail(launch, "the new head did not register in time")

    def _fail(self, launch: Launch, why: str) -> NoReturn:
        tail = (launch.log_path.read_text(errors="replace")[-2000:]
                if launch.log_path.exists() else "")
        processes.kill_session(launch.node.leader_pid)
        self.launcher.reap(launch.node)
        launch.node.state = "killed"
        raise ClusterError(f"head restart failed ({why}); its log is {launch.log_path}, "
                           f"ending:\n{tail}")


def driver_namespace(address: str) -> str | None:
    """The namespace of this process's Ray driver when it is connected to ``address``."""
    if not ray.is_initialized():
        return None
    try:
        context = ray.get_runtime_context()
        return context.namespace if context.gcs_address == address else None
    except Exception:  # a driver already half torn down counts as not connected
        return None
