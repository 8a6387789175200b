"""Group commit: appends that arrive while a transaction is being written wait for the next
one and share it, so one fsync acknowledges many commands (no Ray, no I/O of its own)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from herd.eventsourcing.store.planner import Outcome
from herd.eventsourcing.store.records import AppendRequest, AppendResult

__all__ = ["GroupCommit"]

Commit = Callable[[Sequence[AppendRequest]], Awaitable[list[Outcome]]]


class GroupCommit:
    """Queue appends; one task commits them in batches of up to ``max_batch`` requests."""

    def __init__(self, commit: Commit, max_batch: int = 1024) -> None:
        self._commit = commit
        self.max_batch = max_batch
        self._pending: list[tuple[AppendRequest, asyncio.Future[AppendResult]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self.batches = 0
        self.appends = 0

    async def submit(self, request: AppendRequest) -> AppendResult:
        """The request's result once its batch has committed; its refusal
        (``WrongExpectedVersion``, ``Fenced``) or the batch's error, raised."""
        future: asyncio.Future[AppendResult] = asyncio.get_running_loop().create_future()
        self._pending.append((request, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        while self._pending:
            batch = self._pending[:self.max_batch]
            del self._pending[:self.max_batch]
            try:
                outcomes = await self._commit([request for request, _ in batch])
            except BaseException as exc:  # the transaction failed: every request in it failed
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc if isinstance(exc, Exception)
                                             else RuntimeError("append cancelled"))
                if not isinstance(exc, Exception):
                    raise
                continue
            self.batches += 1
            self.appends += len(batch)
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                if future.done():
                    continue
                if isinstance(outcome, AppendResult):
                    future.set_result(outcome)
                else:
                    future.set_exception(outcome)
