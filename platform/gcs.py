"""Reading Ray's GCS directly: the node table and actor states, without the dashboard
(``ray.util.state`` needs it).

``NodeInfo.from_gcs`` is the one parser of a node entry, whichever form the GCS gave it in (a
``ray.nodes()`` dict or a ``GcsNodeInfo`` message). ``nodes()`` blocks; ``anodes()`` and
``actor_status()`` are asynchronous queries through the core worker's GCS client
(``async_get_all_node_info``, ``async_get_all_actor_info``: the calls the dashboard itself
makes). They are private Ray API, pinned by herd's ``ray>=2.60,<2.61``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.core.generated import gcs_pb2

from herd.platform.rpc import aget

GCS_TIMEOUT_S = 5.0
HEAD_RESOURCE = "node:__internal_head__"
RAY_LABEL_PREFIX = "ray.io/"


@dataclass(frozen=True)
class NodeInfo:
    """One node as the GCS node table shows it (labels without Ray's own ``ray.io/*``)."""

    node_id: str
    address: str
    alive: bool
    labels: dict[str, str] = field(default_factory=dict)
    resources: dict[str, float] = field(default_factory=dict)
    is_head: bool = False
    port: int = 0  # the raylet's node manager port

    @property
    def region(self) -> str | None:
        return self.labels.get("region")

    @property
    def zone(self) -> str | None:
        return self.labels.get("zone")

    @classmethod
    def from_gcs(cls, entry: Mapping[str, Any] | gcs_pb2.GcsNodeInfo) -> NodeInfo:
        """Parse an entry of ``ray.nodes()`` or a ``GcsNodeInfo`` message."""
        if isinstance(entry, gcs_pb2.GcsNodeInfo):
            node_id, address = entry.node_id.hex(), entry.node_manager_address
            alive = entry.state == gcs_pb2.GcsNodeInfo.GcsNodeState.ALIVE
            labels, resources = dict(entry.labels), dict(entry.resources_total)
            port = entry.node_manager_port
        else:
            node_id, address = entry["NodeID"], entry.get("NodeManagerAddress", "")
            alive = bool(entry.get("Alive"))
            labels, resources = dict(entry.get("Labels") or {}), dict(entry.get("Resources") or {})
            port = int(entry.get("NodeManagerPort") or 0)
        return cls(node_id=node_id, address=address, alive=alive,
                   labels={k: v for k, v in labels.items() if not k.startswith(RAY_LABEL_PREFIX)},
                   resources=resources, is_head=HEAD_RESOURCE in resources, port=port)

    def as_dead(self) -> NodeInfo:
        return dataclasses.replace(self, alive=False)


def nodes() -> list[NodeInfo]:
    """Every node the GCS knows (dead ones too), blocking; sorted by node id."""
    return sorted(map(NodeInfo.from_gcs, ray.nodes()), key=lambda n: n.node_id)


async def anodes(timeout: float = GCS_TIMEOUT_S) -> list[NodeInfo]:
    """``nodes()`` without blocking the event loop."""
    found, _ = await aget(gcs_client().async_get_all_node_info(timeout=timeout),
                          timeout=timeout + 1, what="GCS node table")
    return sorted(map(NodeInfo.from_gcs, found.values()), key=lambda n: n.node_id)


def gcs_client() -> Any:
    """This process's GCS client (Ray must be initialised). Its ``async_*`` methods return
    asyncio futures of the running loop: call them from a coroutine."""
    return ray._private.worker.global_worker.gcs_client


@dataclass(frozen=True)
class ActorStatus:
    state: str  # DEPENDENCIES_UNREADY | PENDING_CREATION | ALIVE | RESTARTING | DEAD
    node_id: str | None  # set when ALIVE


async def actor_status(actor_id: str) -> ActorStatus:
    """State of the actor with hex id ``actor_id``; an id the GCS no longer knows is DEAD."""
    future = gcs_client().async_get_all_actor_info(actor_id=ray.ActorID(bytes.fromhex(actor_id)),
                                                   timeout=GCS_TIMEOUT_S)
    infos = await aget(future, timeout=GCS_TIMEOUT_S + 1, what="GCS actor table")
    if not infos:
        return ActorStatus("DEAD", None)
    info = next(iter(infos.values()))
    state = gcs_pb2.ActorTableData.ActorState.Name(info.state)
    return ActorStatus(state, info.address.node_id.hex() if state == "ALIVE" else None)
