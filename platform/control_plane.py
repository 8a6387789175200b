"""Placement of herd's control-plane actors: detached, restartable, kept on the head node.

Like Ray Serve's controller, a control-plane actor dies only with the cluster, or with the head
when GCS fault tolerance restarts it; its state is written through to the GCS KV store
(``herd.platform.kv``) so a restarted incarnation reloads it.

They are kept on the head by a sliver of the resource Ray gives every head node
(``node:__internal_head__``), not by the head's node id: a restarted head has a new node id, and
an actor hard-pinned to the old one would stay pending forever (ray#42390). The resource needs no
setup, so it also works on clusters herd did not start.
"""

from __future__ import annotations

from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from herd.platform.errors import NotConnectedError
from herd.platform.gcs import HEAD_RESOURCE, nodes

HERD_NAMESPACE = "herd"
# Share of the head's one unit of HEAD_RESOURCE per control-plane actor: room for 1000 of them.
HEAD_RESOURCE_SHARE = 0.001
RAY_NODE_ID_LABEL = "ray.io/node-id"  # a label Ray gives every node


def require_ray() -> None:
    if not ray.is_initialized():
        raise NotConnectedError("Ray is not initialised: call herd.platform.cluster.connect() "
                                "first")


def pinned_options(node_id: str, *, soft: bool = False) -> dict[str, Any]:
    """Options that pin an actor to ``node_id`` (hard affinity unless ``soft``)."""
    return {"scheduling_strategy": NodeAffinitySchedulingStrategy(node_id=node_id, soft=soft)}


def head_options() -> dict[str, Any]:
    """Options that keep an actor on whichever node is the head, across head restarts."""
    return {"resources": {HEAD_RESOURCE: HEAD_RESOURCE_SHARE}}


def off_head_options() -> dict[str, Any]:
    """Options that keep an actor off the head while another node can take it (the head when it
    is the only node): for actors whose death would take worker children with them (their
    owners), so that a head restart restarts none. Excludes the head of the moment: after a head
    restart an actor placed again (its node died) may land on the new head."""
    require_ray()
    heads = [node.node_id for node in nodes() if node.alive and node.is_head]
    if not heads:
        return {}
    return {"label_selector": {RAY_NODE_ID_LABEL: f"!{heads[0]}"},
            "fallback_strategy": [{"label_selector": {}}]}


def prefer_node_options(node_id: str) -> dict[str, Any]:
    """Options that place an actor on ``node_id`` while it can take it, elsewhere otherwise
    (a label selector with a fallback: unlike soft node affinity, it also holds for actors that
    request no resources)."""
    return {"label_selector": {RAY_NODE_ID_LABEL: node_id},
            "fallback_strategy": [{"label_selector": {}}]}


def control_plane_options(name: str, *, max_concurrency: int = 1000,
                          node_id: str | None = None) -> dict[str, Any]:
    """``.options(...)`` for a named herd service actor: get-or-create, detached, restartable,
    no CPU, in the ``herd`` namespace, on the head node (whichever node that is after a head
    restart), or hard-pinned to ``node_id`` (a per-node service)."""
    require_ray()
    return {
        "name": name,
        "namespace": HERD_NAMESPACE,
        "lifetime": "detached",
        "get_if_exists": True,
        "max_restarts": -1,
        "max_task_retries": 0,
        "num_cpus": 0,
        "max_concurrency": max_concurrency,
        **(pinned_options(node_id) if node_id else head_options()),
    }


def get_named(name: str) -> Any | None:
    """The handle of a named herd actor, or None when it does not exist."""
    require_ray()
    try:
        return ray.get_actor(name, namespace=HERD_NAMESPACE)
    except ValueError:
        return None
