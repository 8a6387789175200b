"""Local clusters of real ``ray start`` processes on this machine: :class:`LocalCluster`
(``cluster.py``), :class:`LocalNode` (``node.py``), how a node's ``ray start`` is built, run and
awaited (``launch.py``), process bookkeeping by session (``processes.py``), and the reaper that
stops an owned cluster when its driver dies (``reaper.py``)."""

from herd.platform.local.cluster import LocalCluster
from herd.platform.local.node import LocalNode

__all__ = ["LocalCluster", "LocalNode"]
