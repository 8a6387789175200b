"""A moved child's state: ``handoff()`` on the old incarnation before it stops, ``restore(state)``
on the new one once it has started (both optional methods of the user's class). The state waits
in the GCS KV store in between, and is given to one incarnation only."""

from __future__ import annotations

from typing import Any

from herd.platform import rpc
from herd.supervisors.dynamic import records

HANDOFF_TIMEOUT_S = 10.0


async def hand_off(sup: str, child_id: str, handle: Any, log: Any) -> None:
    """Save what ``handle.handoff()`` returns, if the child has that method (best effort)."""
    if not hasattr(handle, "handoff"):
        return
    try:
        state = await rpc.aget(handle.handoff.remote(), HANDOFF_TIMEOUT_S,
                               what=f"handoff {child_id!r}")
        await records.asave_handoff(sup, child_id, state)
    except Exception as exc:
        log.warning("handoff_failed", child_id=child_id, error=repr(exc))


async def restore(sup: str, child_id: str, handle: Any, log: Any) -> None:
    """Give the saved state, if any, to ``handle.restore(state)``, then drop it."""
    found, state = await records.atake_handoff(sup, child_id)
    if not found:
        return
    try:
        if hasattr(handle, "restore"):
            await rpc.aget(handle.restore.remote(state), HANDOFF_TIMEOUT_S,
                           what=f"restore {child_id!r}")
            log.info("child_restored", child_id=child_id)
    except Exception as exc:
        log.warning("restore_failed", child_id=child_id, error=repr(exc))
    finally:
        await records.adrop_handoff(sup, child_id)
