"""What ``herd events projections`` and ``App.projections`` show: each handler's position, its
lag behind the head of the store, and its parking."""

from __future__ import annotations

from typing import Any

from herd.eventsourcing.store.open import open_store

__all__ = ["handler_report"]


async def handler_report(url: str, names: list[str] | None = None) -> list[dict[str, Any]]:
    """One row per handler (``names``, or every handler with a checkpoint or parking)."""
    store = await open_store(url)
    try:
        head = await store.head()
        checkpoints = await store.checkpoints()
        parked = {p.handler: p for p in await store.parked()}
    finally:
        await store.close()
    rows = []
    for name in sorted(set(names or ()) | set(checkpoints) | set(parked)):
        position = checkpoints.get(name, 0)
        park = parked.get(name)
        rows.append({"handler": name, "position": position, "head": head,
                     "lag": head - position,
                     "parked": None if park is None else {"position": park.position,
                                                          "error": park.error,
                                                          "attempts": park.attempts}})
    return rows
