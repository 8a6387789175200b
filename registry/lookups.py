"""Coalesced lookup misses of the asyncio client. The keys that coroutines of one event loop
ask the registry for while a batch gathers go out together, one ``entries`` call per shard, and
their answers fill the lookup cache as single lookups would. Thousands of commands routed at
once to names not yet cached (an app's first burst, or every aggregate of a dead node after it
moved) then cost the registry a few calls instead of one each."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

from herd.platform import rpc
from herd.registry import models
from herd.registry.records import Registration

__all__ = ["LookupBatcher"]

IN_FLIGHT = 2  # batches outstanding at once; misses arriving meanwhile wait for the next one
MAX_BATCH = 1024


class ManyFetcher(Protocol):
    """What a batch is sent to: ``AsyncRegistry``."""

    name: str

    async def fetch_many(self, keys: list[str], timeout: float) -> list[list[Registration]]:
        ...


class LookupBatcher:
    """The lookup misses of one event loop for one registry."""

    def __init__(self, registry: ManyFetcher) -> None:
        self.registry = registry
        self.waiting: dict[str, asyncio.Future[list[Registration]]] = {}
        self.deadline = 0.0
        self.scheduled = False
        self.in_flight = 0
        self.batches = 0
        self.tasks: set[asyncio.Task[None]] = set()

    async def fetch(self, key: str, timeout: float | None) -> list[Registration]:
        """The key's records, read with the other misses of this moment."""
        key = models.check_key(key)  # a bad key fails its caller, not the batch
        seconds = models.check_timeout(timeout, rpc.DEFAULT_TIMEOUT_S)
        future = self.waiting.get(key)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            future.add_done_callback(_retrieve)
            self.waiting[key] = future
        self.deadline = max(self.deadline, time.monotonic() + seconds)
        self._schedule()
        return await rpc.aget(asyncio.shield(future), seconds,
                              what=f"registry {self.registry.name}: lookup of {key!r}")

    def _schedule(self) -> None:
        if not self.scheduled and self.waiting and self.in_flight < IN_FLIGHT:
            self.scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self.scheduled = False
        if not self.waiting or self.in_flight >= IN_FLIGHT:
            return
        keys = list(self.waiting)[:MAX_BATCH]
        batch = {key: self.waiting.pop(key) for key in keys}
        deadline = self.deadline
        if not self.waiting:
            self.deadline = 0.0
        self.in_flight += 1
        self.batches += 1
        task = asyncio.get_running_loop().create_task(self._send(batch, deadline))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _send(self, batch: dict[str, asyncio.Future[list[Registration]]],
                    deadline: float) -> None:
        keys = list(batch)
        try:
            found = await self.registry.fetch_many(keys, max(0.001, deadline - time.monotonic()))
        except Exception as exc:  # every caller of the batch gets the error
            for future in batch.values():
                if not future.done():
                    future.set_exception(exc)
        else:
            for key, regs in zip(keys, found, strict=True):
                if not batch[key].done():
                    batch[key].set_result(regs)
        finally:
            self.in_flight -= 1
            self._schedule()


def _retrieve(future: asyncio.Future[list[Registration]]) -> None:
    """Mark an error as seen: a caller that timed out no longer awaits its future."""
    if not future.cancelled():
        future.exception()
