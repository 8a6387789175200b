"""Calls to lightweight children, coalesced per host: what one process's asyncio callers have in
flight to one host goes out as one ``call_many`` (one Ray call carries many children's calls,
as a client process multiplexes its callers on one connection). A Ray call costs far more
than the child's method here (~1 ms of CPU between the two processes), so at a few hundred
calls per second the calls themselves are what the cluster spends its cores on.

Batches form while earlier ones are on the wire: up to ``IN_FLIGHT`` per host, the first call
to an idle host goes out alone, at once. One :class:`HostBatcher` per event loop
(``loop_batcher``), shared by every caller in it.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

from ray.actor import ActorHandle
from ray.exceptions import RayError

from herd.platform.errors import HerdTimeoutError

__all__ = ["CALL_MANY_METHOD", "IN_FLIGHT", "MAX_BATCH", "HostBatcher", "loop_batcher"]

CALL_MANY_METHOD = "call_many"
#: Batches on the wire to one host at once.
IN_FLIGHT = 2
#: Calls in one batch at most.
MAX_BATCH = 512


@dataclass
class _Call:
    key: str
    method: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    deadline: float
    future: asyncio.Future[Any] = field(repr=False)

    def settle(self, ok: bool, value: Any) -> None:
        if self.future.done():  # its caller gave up
            return
        if ok:
            self.future.set_result(value)
        else:
            self.future.set_exception(value)


@dataclass
class _Host:
    handle: ActorHandle
    queue: list[_Call] = field(default_factory=list)
    senders: int = 0


class HostBatcher:
    """Sends calls to children of lightweight hosts, many per Ray call; for one event loop."""

    def __init__(self) -> None:
        self._hosts: dict[str, _Host] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.calls = 0  # calls sent
        self.batches = 0  # Ray calls that carried them

    def call(self, host: ActorHandle, key: str, method: str, args: tuple[Any, ...],
             kwargs: dict[str, Any], timeout: float) -> asyncio.Future[Any]:
        """Call ``method`` of child ``key`` on ``host``; a future of its result or its error
        (the child's own exception, Ray's if the host is gone, ``HerdTimeoutError`` if the
        host did not answer within ``timeout``)."""
        loop = asyncio.get_running_loop()
        host_id = host._actor_id.hex()
        state = self._hosts.get(host_id)
        if state is None:
            state = self._hosts[host_id] = _Host(host)
        future: asyncio.Future[Any] = loop.create_future()
        state.queue.append(_Call(key, method, args, kwargs, time.monotonic() + timeout, future))
        if state.senders < IN_FLIGHT:
            state.senders += 1
            task = loop.create_task(self._send(host_id, state))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return future

    async def _send(self, host_id: str, state: _Host) -> None:
        try:
            while state.queue:
                batch = [c for c in state.queue[:MAX_BATCH] if not c.future.done()]
                del state.queue[:MAX_BATCH]
                if batch:
                    await self._send_batch(state.handle, batch)
        finally:
            state.senders -= 1
            if not state.senders and not state.queue:
                self._hosts.pop(host_id, None)

    async def _send_batch(self, host: ActorHandle, batch: list[_Call]) -> None:
        timeout = max(c.deadline for c in batch) - time.monotonic()
        ref = getattr(host, CALL_MANY_METHOD).remote(
            [(c.key, c.method, c.args, c.kwargs) for c in batch])
        self.calls += len(batch)
        self.batches += 1
        try:
            answers = await asyncio.wait_for(ref, max(timeout, 0.001))
        except asyncio.TimeoutError:
            error: BaseException = HerdTimeoutError(
                f"lightweight host {host._actor_id.hex()[:12]} did not answer in time")
            for call in batch:
                call.settle(False, error)
            return
        except RayError as exc:  # the host is gone (or Ray could not reach it)
            for call in batch:
                call.settle(False, exc)
            return
        for call, (ok, value) in zip(batch, answers, strict=True):
            call.settle(ok, value)


_BATCHERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, HostBatcher] = (
    weakref.WeakKeyDictionary())


def loop_batcher() -> HostBatcher:
    """The running event loop's batcher (``asyncio.run`` makes a new loop each time)."""
    loop = asyncio.get_running_loop()
    batcher = _BATCHERS.get(loop)
    if batcher is None:
        batcher = _BATCHERS[loop] = HostBatcher()
    return batcher
