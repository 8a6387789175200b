"""The registry epochs of a host's aggregate instances, fetched in bursts.

Every instance needs its epoch (its fencing token) when it rehydrates; after a failover
thousands rehydrate at once on one host, and one registry round trip each
(``fencing.acheck``) would queue them all behind the registry actor. Instead, the first
instance of a burst asks once for every record of the app owned by this node
(``select(prefix, {"owner": node})``) and the others of the burst use that answer. A record
that does not (yet) name this host as its holder falls back to ``acheck``, which waits for it.

An epoch read a few milliseconds ago is as safe as a fresh one: the instance claims its stream
with it in the store, and a newer holder's claim (a higher epoch) refuses it either way.
"""

from __future__ import annotations

import asyncio
import time

import ray

from herd.registry import AsyncRegistry
from herd.registry.records import Registration
from herd.supervisors.fencing import acheck

__all__ = ["EpochLookup", "epoch_of"]

#: How long one burst's answer is used for later instances.
MAX_AGE_S = 0.25

_LOOKUPS: dict[str, EpochLookup] = {}


class EpochLookup:
    """The epochs of app ``app``'s records owned by this node (one per app per process)."""

    def __init__(self, app: str, registry: str = "default") -> None:
        self.prefix = f"{app}/"
        self.registry = registry
        self._known: dict[str, Registration] = {}
        self._fetched_at = 0.0
        self._fetching: asyncio.Task[None] | None = None

    async def epoch(self, key: str) -> int:
        me = ray.get_runtime_context().get_actor_id()
        reg = self._known.get(key)
        if reg is None or time.monotonic() - self._fetched_at > MAX_AGE_S:
            if self._fetching is None or self._fetching.done():
                self._fetching = asyncio.get_running_loop().create_task(self._fetch())
            await asyncio.shield(self._fetching)
            reg = self._known.get(key)
        if reg is not None and reg.holder_id == me:
            return reg.epoch
        return await acheck(key, self.registry)

    async def _fetch(self) -> None:
        node = ray.get_runtime_context().get_node_id()
        registry = await AsyncRegistry.get(self.registry)
        found = await registry.select(self.prefix, {"owner": node}, timeout=10.0)
        self._known = {r.key: r for r in found}
        self._fetched_at = time.monotonic()


async def epoch_of(app: str, key: str) -> int:
    """The epoch of ``key`` if this actor holds it (``Superseded`` otherwise)."""
    lookup = _LOOKUPS.get(app)
    if lookup is None:
        lookup = _LOOKUPS[app] = EpochLookup(app)
    return await lookup.epoch(key)
