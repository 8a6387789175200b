"""Actor state from the GCS actor table, without the dashboard (``ray.util.state`` needs it).

Uses the core worker's GCS client (``async_get_all_actor_info`` filtered by actor id), the call
the dashboard itself makes; it is private Ray API, pinned by herd's ``ray>=2.60,<2.61``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import ray
from ray.core.generated import gcs_pb2

GCS_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class ActorStatus:
    state: str  # DEPENDENCIES_UNREADY | PENDING_CREATION | ALIVE | RESTARTING | DEAD
    node_id: str | None  # set when ALIVE


async def actor_status(actor_id: str) -> ActorStatus:
    """State of the actor with hex id ``actor_id``; an id the GCS no longer knows is DEAD."""
    gcs = ray._private.worker.global_worker.gcs_client
    future = gcs.async_get_all_actor_info(actor_id=ray.ActorID(bytes.fromhex(actor_id)),
                                          timeout=GCS_TIMEOUT_S)
    infos = await asyncio.wrap_future(future)  # a concurrent future; an asyncio one passes through
    if not infos:
        return ActorStatus("DEAD", None)
    info = next(iter(infos.values()))
    state = gcs_pb2.ActorTableData.ActorState.Name(info.state)
    return ActorStatus(state, info.address.node_id.hex() if state == "ALIVE" else None)
