"""Group commit of a registry shard's writes, inside the registry actor.

Every write (an operation, a batch, a holder's death) is a planner handed to :meth:`submit`.
One writer task takes every planner waiting, plans them together as one change
(:meth:`RegistryState.plan_group`: each sees the effect of those before it), stores that change
with one KV put (``ShardStore.write``), commits it, and only then answers each of them. Writes
that arrive while a put is in flight wait for the next group. So under load the shard makes one
KV round trip per group, not per write, and nothing is acknowledged or visible before it is
durable. Compaction of the store runs between groups.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Callable, Iterator
from typing import Any

from herd.platform.logging import get_logger
from herd.registry import metrics as registry_metrics
from herd.registry.change import Change
from herd.registry.state import Planner, RegistryState
from herd.registry.store import ShardStore

Committed = Callable[[Change], None]

#: A group that takes longer than this is logged with its split (plan, store, after commit).
SLOW_GROUP_S = 0.2


class GroupCommit:
    def __init__(self, state: RegistryState, store: ShardStore, committed: Committed,
                 **log_context: Any) -> None:
        self._state = state
        self._store = store
        self._committed = committed
        self._waiting: list[tuple[Planner, asyncio.Future[Any]]] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._log = get_logger("herd.registry.commit", **log_context)
        self._metrics = registry_metrics.of(str(log_context.get("registry")),
                                            str(log_context.get("shard")))
        self.groups = 0
        self.writes = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def submit(self, planner: Planner) -> Any:
        """The planned write's result (or its :class:`Rejection`) once it is durable and
        committed; the store's error if the group could not be stored."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.append((planner, future))
        self._wakeup.set()
        return await future

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._waiting:
                group, self._waiting = self._waiting, []
                await self._commit(group)
            if self._store.compaction_due():
                try:
                    await self._store.compact()
                except Exception as exc:  # the segments still hold everything: try later
                    self._log.error("compaction_failed", error=repr(exc))

    async def _commit(self, group: list[tuple[Planner, asyncio.Future[Any]]]) -> None:
        began = time.monotonic()
        try:
            with _no_gc():  # a batch allocates a lot: no collections of the whole heap
                change, outcomes = self._state.plan_group([planner for planner, _ in group])
            planned = time.monotonic()
            if not change.empty:
                await self._store.write(change)
                self._state.commit(change)
            stored = time.monotonic()
            self._metrics.committed(len(group), stored - began)
        except Exception as exc:  # KV unavailable (or a bug): every write of the group fails
            self._log.error("group_commit_failed", writes=len(group), error=repr(exc))
            for _, future in group:
                if not future.done():
                    future.set_exception(exc)
            return
        if not change.empty:
            try:
                self._committed(change)
            except Exception as exc:  # committed and durable all the same: answer
                self._log.error("after_commit_failed", error=repr(exc))
        if time.monotonic() - began > SLOW_GROUP_S:
            self._log.info("slow_group_commit", writes=len(group), records=len(change.puts),
                           plan_s=round(planned - began, 3), store_s=round(stored - planned, 3),
                           after_s=round(time.monotonic() - stored, 3))
        self.groups += 1
        self.writes += len(group)
        for (_, future), outcome in zip(group, outcomes, strict=True):
            if not future.done():
                future.set_result(outcome.result if isinstance(outcome, Change) else outcome)


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
