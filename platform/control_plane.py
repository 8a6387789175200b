"""Placement of herd's control-plane actors: detached, restartable, pinned to the head node.

Like Ray Serve's controller, a control-plane actor dies only with the cluster; its state is
written through to the GCS KV store (``herd.platform.kv``) so a restarted incarnation reloads it.
"""

from __future__ import annotations

from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from herd.platform.errors import ClusterError, NotConnectedError
from herd.platform.gcs import nodes

HERD_NAMESPACE = "herd"


def require_ray() -> None:
    if not ray.is_initialized():
        raise NotConnectedError("Ray is not initialised: call herd.platform.cluster.connect() "
                                "first")


def head_node_id() -> str:
    """Node id (hex) of the cluster's head node."""
    require_ray()
    for node in nodes():
        if node.alive and node.is_head:
            return node.node_id
    raise ClusterError("no live head node found in the GCS node table")


def pinned_options(node_id: str, *, soft: bool = False) -> dict[str, Any]:
    """Options that pin an actor to ``node_id`` (hard affinity unless ``soft``)."""
    return {"scheduling_strategy": NodeAffinitySchedulingStrategy(node_id=node_id, soft=soft)}


def control_plane_options(name: str, *, max_concurrency: int = 1000,
                          node_id: str | None = None) -> dict[str, Any]:
    """``.options(...)`` for a named herd service actor: get-or-create, detached, restartable,
    no CPU, in the ``herd`` namespace, hard-pinned to ``node_id`` (default: the head node)."""
    return {
        "name": name,
        "namespace": HERD_NAMESPACE,
        "lifetime": "detached",
        "get_if_exists": True,
        "max_restarts": -1,
        "max_task_retries": 0,
        "num_cpus": 0,
        "max_concurrency": max_concurrency,
        **pinned_options(node_id or head_node_id()),
    }


def get_named(name: str) -> Any | None:
    """The handle of a named herd actor, or None when it does not exist."""
    require_ray()
    try:
        return ray.get_actor(name, namespace=HERD_NAMESPACE)
    except ValueError:
        return None
