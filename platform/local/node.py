"""One node of a :class:`~herd.platform.local.cluster.LocalCluster`: what it was started with and
the session that holds its processes."""

from __future__ import annotations

from dataclasses import dataclass

from herd.platform.local import processes

NODE_STATES = ("starting", "running", "paused", "killed", "stopped")


@dataclass
class LocalNode:
    """A ``ray start --block`` node; ``leader_pid`` leads the session of all its processes."""

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
    state: str = "starting"  # one of NODE_STATES

    @property
    def pids(self) -> list[int]:
        """Live pids of this node's processes."""
        return processes.session_pids(self.leader_pid) if self.leader_pid else []

    @property
    def alive(self) -> bool:
        """Started by us, not stopped or killed by us, and its processes still exist (a raylet
        the GCS declared dead exits on its own)."""
        return self.state in ("running", "paused") and bool(self.pids)
