"""Joining a Ray cluster, and the local clusters tests, the demo and ``herd cluster up`` start.

``connect()`` (embedded on 127.0.0.1, an existing address, or a DNS name; idempotent; gives up
after its connect timeout with ``ClusterUnavailable``) lives in :mod:`herd.platform.connection`;
``LocalCluster`` (real ``ray start`` nodes on this machine) in :mod:`herd.platform.local`. Both
are re-exported here, the one import path users need.
"""

from __future__ import annotations

from herd.platform.connection import ClusterInfo, connect, disconnect, resolve_address
from herd.platform.local.cluster import LocalCluster
from herd.platform.local.node import LocalNode

__all__ = ["ClusterInfo", "LocalCluster", "LocalNode", "connect", "disconnect", "resolve_address"]
