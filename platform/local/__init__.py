"""Local clusters of real ``ray start`` processes on this machine: :class:`LocalCluster` and
:class:`LocalNode` (``cluster.py``), how a node is launched and stopped (``processes.py``), and the
reaper that stops an owned cluster when its driver dies (``reaper.py``)."""

from herd.platform.local.cluster import LocalCluster, LocalNode

__all__ = ["LocalCluster", "LocalNode"]
