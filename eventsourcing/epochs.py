"""The registry epochs of a host's aggregate instances, fetched in bursts.

Every instance needs its epoch (its fencing token) when it rehydrates; after a failover
thousands rehydrate at once on one host, and one registry round trip each
(``fencing.acheck``) would queue them all behind the registry actor. Instead the keys asked for
while no read is in flight go out together: one ``entries(keys)`` read for the whole burst,
and the keys asked for meanwhile form the next one. Only the records asked for travel (a
read of every record this node owns cost the registry a pickled list of thousands of records,
actor handles included, for every burst). A record that does not (yet) name this host as its
holder falls back to ``acheck``, which waits for it.

An epoch read a few milliseconds ago is as safe as a fresh one: the instance claims its stream
with it in the store, and a newer holder's claim (a higher epoch) refuses it either way.
"""

from __future__ import annotations

import asyncio
import itertools

import ray

from herd.registry import AsyncRegistry
from herd.registry.records import Registration
from herd.supervisors.fencing import acheck

__all__ = ["EpochLookup", "epoch_of"]

#: The most keys one burst reads.
MAX_BURST = 5000
READ_TIMEOUT_S = 10.0


class EpochLookup:
    """Batched reads of the registry records of the instances in this process (of every
    app: a burst's keys need not share anything)."""

    def __init__(self, registry: str = "default") -> None:
        self.registry = registry
        self._waiting: dict[str, list[asyncio.Future[Registration | None]]] = {}
        self._reading: asyncio.Task[None] | None = None

    async def epoch(self, key: str) -> int:
        me = ray.get_runtime_context().get_actor_id()
        future: asyncio.Future[Registration | None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append(future)
        if self._reading is None or self._reading.done():
            self._reading = asyncio.get_running_loop().create_task(self._read())
        reg = await future
        if reg is not None and reg.holder_id == me:
            return reg.epoch
        return await acheck(key, self.registry)

    async def _read(self) -> None:
        """Read the waiting keys, a burst at a time, until none is waiting."""
        registry = await AsyncRegistry.get(self.registry)
        while self._waiting:
            keys = list(itertools.islice(self._waiting, MAX_BURST))
            burst = {key: self._waiting.pop(key) for key in keys}
            try:
                found = await registry.entries(keys, timeout=READ_TIMEOUT_S)
            except Exception:  # each instance then asks on its own (acheck raises the cause)
                found = [[] for _ in keys]
            for key, regs in zip(keys, found, strict=True):
                for future in burst[key]:
                    if not future.done():
                        future.set_result(regs[0] if regs else None)


_LOOKUP = EpochLookup()


async def epoch_of(key: str) -> int:
    """The epoch of ``key`` if this actor holds it (``Superseded`` otherwise)."""
    return await _LOOKUP.epoch(key)
