"""The warm shell: a herd child process started before its child is known.

A ``WarmShell`` actor is created with the shape of the children it may become (resources,
runtime environment, placement) and the classes of those children, which it loads at once
(importing a child's module can take longer than everything else a restart does), and answers
herd's child methods from the start, so a supervisor watches it exactly as it watches a
harnessed child:

* ``BECOME_METHOD(shipped, args, kwargs, call_options)`` loads the child's class (a
  ``ShippedClass``) in this process and runs its constructor (sync or ``async``). It answers
  what the harness's ready call answers: the pid and node id (plus the child's public method
  names), or the same ``StartChildError`` as a cold start (class not importable, constructor
  raised). A shell becomes one child, once: after that incarnation it is ended, never reused.
* ``CALL_METHOD(key, method, args, kwargs)`` runs one call of the child: an ``async`` method
  awaited on the actor's loop (at most ``max_concurrency`` at once if the child set it); a
  sync one, and a sync constructor, on the child's own thread (one, so calls run one at a time
  and in order as in a sync actor, and code that runs its own event loop works), or on
  ``max_concurrency`` threads. A call that arrives while the constructor runs (the child's
  name is registered meanwhile) waits for it, and fails as the start failed if it raised.
* ``MONITOR_METHOD`` / ``READY_METHOD`` (concurrency group ``MONITOR_GROUP``, beside user
  calls) and ``STOP_METHOD`` as in ``herd.supervisors.otp.harness``; its ready and become
  answers carry a ``liveness`` address (``herd.platform.liveness``), so its supervisor sees
  the process die before Ray says so; ``exit(reason)`` works in
  the constructor and in every method.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import ray

from herd.platform import liveness
from herd.platform.logging import get_logger
from herd.platform.monitor import MONITOR_GROUP, MONITOR_METHOD
from herd.registry.sync import stop_cache_sync
from herd.supervisors.errors import StartChildError
from herd.supervisors.otp.classes import ShippedClass
from herd.supervisors.otp.exit import ExitSignal, install_signal
from herd.supervisors.otp.harness import (
    READY_METHOD,
    STOP_METHOD,
    call_terminate_hook,
    constructor_error,
    ready_info,
    user_class,
)
from herd.supervisors.warm.handle import CALL_METHOD

__all__ = ["BECOME_METHOD", "MONITOR_CALLS", "WarmShell"]

log = get_logger("herd.supervisors.warm.shell")

BECOME_METHOD = "__herd_become__"
#: Monitor and ready calls that may wait at once (the group's coroutines).
MONITOR_CALLS = 1000


class WarmShell:
    """A standby process; ``WarmShellActor`` is its Ray actor class."""

    def __init__(self, preload: Sequence[ShippedClass] = ()) -> None:
        self._signal = ExitSignal(on_set=stop_cache_sync)
        install_signal(self._signal)
        self._liveness = list(liveness.serve())
        for shipped in preload:
            try:
                shipped.load()
            except StartChildError as exc:  # that child's start will say so, as a cold one would
                log.debug("preload_failed", error=str(exc))
        self._child: Any = None
        self._taken = False
        self._settled = asyncio.Event()
        """Set once the constructor has returned or raised (``_failed`` then says why)."""
        self._failed: StartChildError | None = None
        self._threads: ThreadPoolExecutor | None = None
        self._async_limit: asyncio.Semaphore | None = None

    async def become(self, shipped: ShippedClass, args: tuple[Any, ...],
                     kwargs: dict[str, Any], call_options: dict[str, Any]) -> dict[str, Any]:
        if self._taken:
            raise StartChildError("this warm shell has served a child already")
        self._taken = True
        try:
            return await self._construct(shipped, args, kwargs, call_options)
        except BaseException as exc:
            self._failed = StartChildError(f"the child failed to start: {exc}")
            raise
        finally:
            self._settled.set()

    async def _construct(self, shipped: ShippedClass, args: tuple[Any, ...],
                         kwargs: dict[str, Any], call_options: dict[str, Any]
                         ) -> dict[str, Any]:
        cls = user_class(shipped.load())
        concurrency = call_options.get("max_concurrency")
        if concurrency is not None:
            self._async_limit = asyncio.Semaphore(concurrency)
        self._threads = ThreadPoolExecutor(concurrency or 1, thread_name_prefix="herd-child")
        child = cls.__new__(cls)
        try:
            if inspect.iscoroutinefunction(cls.__init__):
                await cls.__init__(child, *args, **kwargs)
            else:
                await asyncio.get_running_loop().run_in_executor(
                    self._threads, functools.partial(cls.__init__, child, *args, **kwargs))
        except Exception as exc:
            log.debug("constructor_failed", exc_info=exc)
            raise constructor_error(exc) from None
        self._child = child
        methods = [name for name, _ in inspect.getmembers(cls, callable)
                   if not name.startswith("_")]
        return {**ready_info(), "liveness": self._liveness, "methods": methods}

    async def call(self, key: Any, method: str, args: tuple[Any, ...],
                   kwargs: dict[str, Any]) -> Any:
        await self._settled.wait()  # the caller's deadline bounds it (a name is registered
        if self._failed is not None:  # only once ``become`` was sent)
            raise self._failed
        if self._child is None or self._threads is None or method.startswith("_"):
            raise AttributeError(f"the child has no method {method!r}")
        bound = getattr(self._child, method)
        if inspect.iscoroutinefunction(bound):
            if self._async_limit is None:
                return await bound(*args, **kwargs)
            async with self._async_limit:
                return await bound(*args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(
            self._threads, functools.partial(bound, *args, **kwargs))

    async def stop(self, reason: str) -> str:
        if self._signal.reason is None:
            if self._child is not None:
                pending = call_terminate_hook(self._child, reason)
                if inspect.isawaitable(pending):
                    try:
                        await pending
                    except Exception:
                        log.exception("terminate_hook_failed", reason=reason)
            self._signal.set(reason)
        return self._signal.reason or reason

    async def monitor(self) -> str:
        return await self._signal.wait_async()

    async def ready(self) -> dict[str, Any]:
        return {**ready_info(), "liveness": self._liveness}


for _name, _method, _group in ((BECOME_METHOD, WarmShell.become, None),
                               (CALL_METHOD, WarmShell.call, None),
                               (STOP_METHOD, WarmShell.stop, None),
                               (MONITOR_METHOD, WarmShell.monitor, MONITOR_GROUP),
                               (READY_METHOD, WarmShell.ready, MONITOR_GROUP)):
    setattr(WarmShell, _name, ray.method(concurrency_group=_group)(_method) if _group else _method)
for _name in ("become", "call", "stop", "monitor", "ready"):
    delattr(WarmShell, _name)

WarmShellActor = ray.remote(concurrency_groups={MONITOR_GROUP: MONITOR_CALLS})(WarmShell)
