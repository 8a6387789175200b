"""One operation at a time per child: a member runs every operation on a child as an asyncio
task holding that child's lock, and counts the child as busy (the reconcile planner leaves it
alone) from when the operation is spawned until it ends."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from herd.platform.errors import HerdError

T = TypeVar("T")


class ChildTasks:
    """The in-flight operations of one member, by child id."""

    def __init__(self, log: Any) -> None:
        self.log = log
        self._locks: dict[str, asyncio.Lock] = {}
        self._busy: dict[str, int] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    def busy(self) -> frozenset[str]:
        """Children with an operation running or waiting for the lock."""
        return frozenset(self._busy)

    def spawn(self, child_id: str, operation: Callable[[], Awaitable[T]]) -> asyncio.Task[T]:
        """Run ``operation`` under the child's lock, as a task."""
        self._busy[child_id] = self._busy.get(child_id, 0) + 1

        async def locked() -> T:
            try:
                async with self._locks.setdefault(child_id, asyncio.Lock()):
                    return await operation()
            finally:
                self._release(child_id)

        task = asyncio.get_running_loop().create_task(locked())
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def spawn_many(self, child_ids: Iterable[str],
                   operation: Callable[[], Awaitable[T]]) -> asyncio.Task[T]:
        """Run ``operation`` under the locks of all ``child_ids`` (taken in sorted order, so
        two operations on overlapping sets cannot deadlock), as one task."""
        ids = sorted(set(child_ids))
        for child_id in ids:
            self._busy[child_id] = self._busy.get(child_id, 0) + 1

        async def locked() -> T:
            try:
                async with contextlib.AsyncExitStack() as held:
                    for child_id in ids:
                        await held.enter_async_context(
                            self._locks.setdefault(child_id, asyncio.Lock()))
                    return await operation()
            finally:
                for child_id in ids:
                    self._release(child_id)

        task = asyncio.get_running_loop().create_task(locked())
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _release(self, child_id: str) -> None:
        self._busy[child_id] -= 1
        if not self._busy[child_id]:  # nobody holds or waits for the lock
            del self._busy[child_id]
            self._locks.pop(child_id, None)

    async def wait_all(self, timeout: float) -> None:
        """Wait (up to ``timeout`` seconds) for the operations in flight to end."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        exc = None if task.cancelled() else task.exception()
        if isinstance(exc, HerdError):  # expected (a start that failed, a registry timeout)
            self.log.info("operation_failed", error=str(exc))
        elif exc is not None:
            self.log.error("operation_crashed", error=repr(exc))
