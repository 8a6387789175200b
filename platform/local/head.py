"""The head node of a local cluster with GCS fault tolerance: started, SIGKILLed and started again.

With fault tolerance on (the default), the GCS keeps its tables in RocksDB under
``<run_dir>/gcs-storage`` (``RAY_gcs_storage=rocksdb``, ``RAY_gcs_storage_path``: no Redis), so
a head started again on the same port and storage path restores the cluster: worker raylets
reconnect within ``RAY_gcs_rpc_server_reconnect_timeout_s`` and their actors keep running.

``ray start --head`` refuses to start when the address recorded in its temp dir
(``ray_current_cluster``, written by the previous head) is the address a running raylet of this
machine names as its GCS: on a restart, every worker raylet of the cluster does. The head's own
record of the address is therefore removed before every start (the first one included), which
keeps the head a plain ``ray start`` whose processes are real pids of this machine (running it in a
PID namespace of its own, the other way out, would make the pids its actors report useless to
anyone who signals them).

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

__all__ = ["ADDRESS_FILE", "GCS_STORAGE_DIR", "HEAD_RESTART_TIMEOUT_S", "HeadProcess",
           "driver_namespace"]

log = get_logger("herd.local_cluster")

GCS_STORAGE_DIR = "gcs-storage"
ADDRESS_FILE = "ray_current_cluster"  # Ray's record of the last `ray start` in a temp dir
# Worker raylets and drivers exit when the GCS is gone for RAY_gcs_rpc_server_reconnect_timeout_s
# (Ray's default: 60 s); a restart that takes longer comes back to an empty cluster.
HEAD_RESTART_TIMEOUT_S = 90.0


class HeadProcess:
    """How one cluster's head is started, and how it is started again after a crash.

    ``fault_tolerant`` turns on GCS storage in RocksDB; without it the head starts as any node
    does and :meth:`restart` refuses.
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
        return {"RAY_gcs_storage": "rocksdb", "RAY_gcs_storage_path": str(self.storage_path)}

    def start(self, node: LocalNode, args: list[str], nodes: list[LocalNode]) -> Launch:
        """Launch the head (``args`` are its whole ``ray start`` arguments, kept for restarts);
        appends it to ``nodes``."""
        self.args = list(args)
        if self.fault_tolerant:
            self.storage_path.mkdir(parents=True, exist_ok=True)
        self._forget_address(node)
        return self.launcher.launch(node, self.args, nodes, env=self.env())

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
        self._forget_address(node)
        # A scratch list: the node is already one of the cluster's nodes.
        launch = self.launcher.launch(node, self.args, [], env=self.env())
        node.node_id = self._wait_new_head(launch, address, old_id, began + timeout_s)
        node.state = "running"
        took = time.monotonic() - began
        log.info("head_restarted", old_node_id=old_id, node_id=node.node_id,
                 seconds=round(took, 3))
        return took

    def _forget_address(self, node: LocalNode) -> None:
        """Remove the previous head's record of the cluster address (see the module's docs)."""
        (self.launcher.ray_tmp / node.name / ADDRESS_FILE).unlink(missing_ok=True)

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
