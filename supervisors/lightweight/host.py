"""The host actor: one async Ray actor that runs many lightweight children (``runtime``).

A supervisor creates one host (on its own node, or the node its ``LightweightHosts`` config
names), on its first lightweight child, and owns it: the host dies with its supervisor. The
supervisor starts and stops children on it and collects their exits with one long poll
(``next_exits``); callers reach a child through ``call_child`` (a :class:`LightweightHandle`
or ``via(name)``).

When the loop-lag watchdog trips (a child blocks the loop for longer than ``lag_threshold_s``),
the host logs which child, writes the report to the GCS KV store under
``watchdog_key(actor_id)`` (its owner reads it to say why the host's children were killed) and
ends its process: its owner sees every child exit with ``"killed"`` and restarts them on a new
host, per their supervisor's strategy.

After each batched start the host calls ``gc.freeze()``: its children are long-lived, and a
full collection walking tens of thousands of them stalls the loop for longer than the
watchdog's threshold on a loaded machine. The cost: reference cycles among objects frozen
then are never collected (objects freed by reference counting are freed as usual).
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
from types import FrameType
from typing import Any

import ray
from ray import cloudpickle
from ray.actor import ActorClass

from herd.platform import kv
from herd.platform.logging import get_logger
from herd.platform.metrics import start_sampling
from herd.supervisors.errors import StartChildError
from herd.supervisors.lightweight.memory import rss_bytes
from herd.supervisors.lightweight.metrics import HostMetrics
from herd.supervisors.lightweight.runtime import HostRuntime
from herd.supervisors.lightweight.watchdog import LoopWatchdog, blocking_key
from herd.supervisors.otp.classes import ShippedClass, resolve_actor

__all__ = ["HOST_MAX_CONCURRENCY", "LightweightHost", "LightweightHostServer", "watchdog_key"]

log = get_logger("herd.supervisors.lightweight.host")

#: Calls a host runs at once (every child's call waits in its own mailbox, not in Ray's queue).
HOST_MAX_CONCURRENCY = 100_000
WATCHDOG_PREFIX = "supervisors/lightweight-watchdog/"
#: Children a host starts (or estimates for status) before it yields its loop.
YIELD_EVERY = 200
#: Exit status of a host that ended itself because its loop was blocked.
BLOCKED_EXIT_STATUS = 70


def portable(error: BaseException) -> BaseException:
    """``error``, if it survives pickling (herd's errors do); else a ``RuntimeError`` that
    names it, so that one odd exception cannot fail a whole batch of answers."""
    try:
        cloudpickle.loads(cloudpickle.dumps(error))
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")
    return error


def watchdog_key(actor_id: str) -> str:
    return f"{WATCHDOG_PREFIX}{actor_id}"


class LightweightHostServer:
    """The host; ``LightweightHost`` is its Ray actor class."""

    def __init__(self, owner: str, max_children: int = 10_000, lag_threshold_s: float = 1.0,
                 kill_grace_s: float = 1.0) -> None:
        self.owner = owner
        self.runtime = HostRuntime(max_children, kill_grace_s)
        self.lag_threshold_s = lag_threshold_s
        self.watchdog: LoopWatchdog | None = None
        self._classes: dict[bytes, type] = {}
        self._log = log.bind(supervisor=owner)

    async def ready(self) -> dict[str, Any]:
        """Start the watchdog (first call only); the host's pid, node and actor id."""
        if self.watchdog is None:
            self.watchdog = LoopWatchdog(self.lag_threshold_s, self._blocked, self._who)
            self.watchdog.start()
            node_id = ray.get_runtime_context().get_node_id()
            self.sampling = start_sampling(HostMetrics(self, node_id).sample)
        context = ray.get_runtime_context()
        return {"pid": os.getpid(), "node_id": context.get_node_id(),
                "actor_id": context.get_actor_id()}

    # ------------------------------------------------------------------ children
    async def start_child(self, key: str, actor: Any, args: tuple[Any, ...],
                          kwargs: dict[str, Any], crash_on_error: bool = True) -> int:
        """Construct child ``key``; its incarnation number (``StartChildError`` if it fails)."""
        return self.runtime.start(key, self._class(actor), args, kwargs, crash_on_error)

    async def start_children(self, items: list[tuple[str, Any, tuple[Any, ...], dict[str, Any],
                                                      bool]]) -> list[int | str]:
        """Start many children in one call; per item its incarnation or why it failed. The loop
        is yielded every ``YIELD_EVERY`` children (the watchdog and the other children run)."""
        started: list[int | str] = []
        gc_was_on = gc.isenabled()
        gc.disable()  # no collection pass over the host's whole heap in the middle of a batch
        try:
            await self._start_each(items, started)
        finally:
            # Children are long-lived: move them out of the collector's generations so that
            # later collections do not walk tens of thousands of them (and stall the loop).
            gc.freeze()
            if gc_was_on:
                gc.enable()
        return started

    async def _start_each(self, items: list[tuple[str, Any, tuple[Any, ...], dict[str, Any],
                                                  bool]], started: list[int | str]) -> None:
        for index, (key, actor, args, kwargs, crash_on_error) in enumerate(items):
            if index and not index % YIELD_EVERY:
                await asyncio.sleep(0)
            try:
                started.append(self.runtime.start(key, self._class(actor), args, kwargs,
                                                  crash_on_error))
            except StartChildError as exc:
                started.append(str(exc))

    async def expect_children(self, keys: list[str]) -> None:
        """Calls to ``keys`` wait for their start (see ``HostRuntime.expect``)."""
        self.runtime.expect(keys)

    async def call_child(self, key: str, method: str, args: tuple[Any, ...],
                         kwargs: dict[str, Any]) -> Any:
        return await self.runtime.call(key, method, args, kwargs)

    async def call_children(self, keys: list[str], method: str, args: tuple[Any, ...],
                            kwargs: dict[str, Any]) -> list[tuple[bool, Any]]:
        """``call_child`` of every key at once (each waits for its child as ``call_child``
        does); per key, in order, ``(True, result)`` or ``(False, "<error>")``."""
        answers = await asyncio.gather(*(self.runtime.call(k, method, args, kwargs)
                                         for k in keys), return_exceptions=True)
        return [(False, repr(a)) if isinstance(a, BaseException) else (True, a)
                for a in answers]

    async def call_many(self, calls: list[tuple[str, str, tuple[Any, ...], dict[str, Any]]]
                        ) -> list[tuple[bool, Any]]:
        """Many ``call_child`` calls in one (``HostBatcher``), each to its own child and
        method; per call, in order, ``(True, result)`` or ``(False, exception)``."""
        answers = await asyncio.gather(*(self.runtime.call(key, method, args, kwargs)
                                         for key, method, args, kwargs in calls),
                                       return_exceptions=True)
        return [(False, portable(a)) if isinstance(a, BaseException) else (True, a)
                for a in answers]

    async def stop_child(self, key: str, inc: int, reason: str, timeout_s: float) -> str | None:
        return await self.runtime.stop(key, inc, reason, timeout_s)

    async def kill_child(self, key: str, inc: int) -> str | None:
        return await self.runtime.kill(key, inc)

    async def next_exits(self, after: int, timeout_s: float) -> list[tuple[int, str, int, str]]:
        return await self.runtime.next_exits(after, timeout_s)

    async def status(self, with_children: bool = True) -> dict[str, Any]:
        """Children count, calls, estimated memory (per child too), loop lag, RSS."""
        by_child = []
        if with_children:  # estimated in slices: a large host must not stall its loop here
            children = list(self.runtime.children.values())
            for first in range(0, len(children), YIELD_EVERY):
                by_child += [c.stats() for c in children[first:first + YIELD_EVERY]]
                await asyncio.sleep(0)
        return {**self.runtime.status(False), "by_child": by_child,
                "memory_bytes": sum(s["memory_bytes"] for s in by_child),
                **(self.watchdog.status() if self.watchdog else {}),
                "owner": self.owner, "pid": os.getpid(), "rss_bytes": rss_bytes()}

    # ------------------------------------------------------------------ helpers
    def _class(self, actor: Any) -> type:
        """The user's class (a shipped class is unpickled once per host)."""
        if isinstance(actor, ShippedClass):
            cached = self._classes.get(actor.data)
            if cached is not None:
                return cached
        try:
            resolved = resolve_actor(actor)
        except ValueError as exc:
            raise StartChildError(f"its class is not usable: {exc}") from None
        cls = (resolved.__ray_metadata__.modified_class.__ray_actor_class__
               if isinstance(resolved, ActorClass) else resolved)
        if isinstance(actor, ShippedClass):
            self._classes[actor.data] = cls
        return cls

    def _who(self, frame: FrameType | None) -> str | None:
        instances = {id(c.instance): key for key, c in list(self.runtime.children.items())}
        return blocking_key(frame, instances)

    def _blocked(self, lag_s: float, child_key: str | None) -> None:
        """Watchdog thread: the loop is blocked; report and end the process (see module doc)."""
        report = {"lag_s": round(lag_s, 3), "child": child_key,
                  "threshold_s": self.lag_threshold_s}
        self._log.error("lightweight_loop_blocked", **report)
        try:
            kv.put(watchdog_key(ray.get_runtime_context().get_actor_id()),
                   json.dumps(report).encode())
        finally:
            os._exit(BLOCKED_EXIT_STATUS)


LightweightHost = ray.remote(num_cpus=0, max_restarts=0, max_task_retries=0,
                             max_concurrency=HOST_MAX_CONCURRENCY)(LightweightHostServer)
