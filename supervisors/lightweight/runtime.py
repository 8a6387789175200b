"""The lightweight children of one host: objects and asyncio tasks in one event loop (no Ray).

Each child is an instance of the user's class with, GenServer-like:

* a mailbox: its calls run one at a time, in arrival order (an ``asyncio.Lock``); calls to
  different children run concurrently. Sync methods run in the loop; ``async`` ones are awaited.
* an optional ``async def run(self)`` task: returning is a normal exit, raising a crash;
* an exit signal of its own: ``herd.supervisors.exit(reason)`` in its calls, its ``run`` loop or
  its constructor ends this child only (a context variable set in the child's tasks);
* ``crash_on_error``: a method that raises returns the error to the caller and crashes the child.

Every exit becomes an event ``(seq, key, incarnation, reason)`` that the host's owner collects
with :meth:`HostRuntime.next_exits` (one long poll per host, not one monitor call per child).
A call that arrives while its child is being restarted (it crashed within ``RESTART_WAIT_S``)
waits for the new incarnation instead of failing.

Limits, unlike an Erlang process: stopping a child is asyncio cancellation, which its code can
catch (``except CancelledError`` or ``except BaseException``); :meth:`HostRuntime.kill` and
:meth:`HostRuntime.stop` report a child that has not ended ``kill_grace_s`` after its
cancellation, and the owner then restarts the whole host. A child that blocks the loop blocks
every child of its host: see ``watchdog``.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import time
from collections.abc import Callable
from typing import Any

from herd.supervisors.errors import ChildNotFound, StartChildError
from herd.supervisors.lightweight.memory import estimate_bytes
from herd.supervisors.otp.exit import (
    KILLED,
    NORMAL,
    ExitSignal,
    is_normal,
    reset_child_signal,
    use_child_signal,
)
from herd.supervisors.otp.start_failure import one_line

__all__ = ["RESTART_WAIT_S", "STUCK", "ChildSignal", "HostRuntime", "LightweightChild"]

#: How long a call waits for a child that crashed to be started again by its supervisor.
RESTART_WAIT_S = 5.0
#: What ``stop`` returns when the child did not end after its cancellation.
STUCK = "stuck"


class ChildSignal(ExitSignal):
    """The exit signal of one lightweight child: ``exit()`` sets it from the child's own
    tasks, in the loop's thread, so it needs none of ``ExitSignal``'s cross-thread machinery
    (and stays small: one per child)."""

    def __init__(self, on_exit: Callable[[str], None]) -> None:  # noqa: D107
        self._reason: str | None = None
        self._on_exit = on_exit

    def set(self, reason: str) -> bool:
        if self._reason is not None:
            return False
        self._reason = reason
        self._on_exit(reason)
        return True

    async def wait_async(self) -> str:  # pragma: no cover - the owner gets exits as events
        raise NotImplementedError("lightweight exits are reported as events")


class LightweightChild:
    """One incarnation of a lightweight child."""

    __slots__ = ("active", "calls", "crash_on_error", "errors", "inc", "instance", "key", "lock",
                 "reason", "run_task", "signal", "started_at")

    def __init__(self, key: str, inc: int, crash_on_error: bool) -> None:
        self.key = key
        self.inc = inc
        self.crash_on_error = crash_on_error
        self.instance: Any = None
        self.lock = asyncio.Lock()
        self.run_task: asyncio.Task[Any] | None = None
        self.active: asyncio.Task[Any] | None = None
        """The task of the call being run now (cancelled when the child is killed)."""
        self.calls = 0
        self.errors = 0
        self.reason: str | None = None
        self.signal: ChildSignal | None = None
        self.started_at = time.time()

    def tasks(self) -> list[asyncio.Task[Any]]:
        return [t for t in (self.run_task, self.active) if t is not None and not t.done()]

    def stats(self) -> dict[str, Any]:
        return {"key": self.key, "incarnation": self.inc, "calls": self.calls,
                "errors": self.errors, "memory_bytes": estimate_bytes(self.instance),
                "running_loop": self.run_task is not None and not self.run_task.done(),
                "started_at": self.started_at}


class HostRuntime:
    """The children of one host, by key (one incarnation per key at a time)."""

    def __init__(self, max_children: int = 10_000, kill_grace_s: float = 1.0) -> None:
        self.max_children = max_children
        self.kill_grace_s = kill_grace_s
        self.children: dict[str, LightweightChild] = {}
        self._incarnations = itertools.count(1)
        self._crashed: dict[str, float] = {}
        # Calls waiting for the start of a key (``expect``, or a restart after a crash): woken
        # by that key's start only, so that thousands of waiting calls cost one wakeup each.
        self._waiting: dict[str, set[asyncio.Future[None]]] = {}
        self._events: list[tuple[int, str, int, str]] = []
        self._seq = 0
        self._new_event = asyncio.Event()
        self.starts = 0
        self.exits = 0

    # ------------------------------------------------------------------ start
    def start(self, key: str, cls: type, args: tuple[Any, ...], kwargs: dict[str, Any],
              crash_on_error: bool = True) -> int:
        """Construct a child; returns its incarnation number. ``StartChildError`` (nothing
        kept) if the host is full, the key runs already or the constructor raises."""
        if key in self.children:
            raise StartChildError(f"{key!r} already runs on this host")
        if len(self.children) >= self.max_children:
            raise StartChildError(f"its host already runs {len(self.children)} lightweight "
                                  f"children (max_children_per_host={self.max_children})")
        child = LightweightChild(key, next(self._incarnations), crash_on_error)
        child.signal = ChildSignal(lambda reason: self._exit(child, reason))
        token = use_child_signal(child.signal)
        try:
            child.instance = cls(*args, **kwargs)
        except Exception as exc:
            error = StartChildError(f"its constructor raised {type(exc).__name__}"
                                    + (f": {one_line(str(exc))}" if str(exc) else ""))
            raise error from exc
        finally:
            reset_child_signal(token)
        self.children[key] = child
        self._crashed.pop(key, None)
        self.starts += 1
        if child.reason is not None:  # exit() in the constructor: started, then exited at once
            self._publish(child, child.reason, crashed=not is_normal(child.reason))
            return child.inc
        run = getattr(child.instance, "run", None)
        if run is not None and inspect.iscoroutinefunction(run):
            child.run_task = asyncio.get_running_loop().create_task(self._run(child, run))
        for waiter in self._waiting.pop(key, ()):
            if not waiter.done():
                waiter.set_result(None)
        return child.inc

    def expect(self, keys: list[str]) -> None:
        """Children about to be started here (their names already point at this host): calls
        to them wait for their start, up to ``RESTART_WAIT_S``, as for a crashed child."""
        now = time.monotonic()
        for key in keys:
            if key not in self.children:
                self._crashed[key] = now

    async def _run(self, child: LightweightChild, run: Callable[[], Any]) -> None:
        use_child_signal(child.signal)
        try:
            await run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._exit(child, _error_reason(exc))
            return
        self._exit(child, NORMAL)

    # ------------------------------------------------------------------ calls
    async def call(self, key: str, method: str, args: tuple[Any, ...],
                   kwargs: dict[str, Any]) -> Any:
        """Run ``method`` of child ``key`` after its earlier calls; its result or its error."""
        if method.startswith("_") or method == "run":
            raise AttributeError(f"{method!r} cannot be called on a lightweight child")
        deadline = time.monotonic() + RESTART_WAIT_S
        while True:
            child = await self._current(key, deadline)
            async with child.lock:
                if child.reason is None:
                    return await self._invoke(child, method, args, kwargs)
            # it exited while this call waited in its mailbox: try its next incarnation

    async def _invoke(self, child: LightweightChild, method: str, args: tuple[Any, ...],
                      kwargs: dict[str, Any]) -> Any:
        function = getattr(child.instance, method)  # AttributeError: the caller's mistake
        token = use_child_signal(child.signal)
        child.active = asyncio.current_task()
        try:
            result = function(*args, **kwargs)
            if inspect.isawaitable(result):
                result = await result
            child.calls += 1
            return result
        except Exception as exc:
            child.errors += 1
            if child.crash_on_error:
                self._exit(child, _error_reason(exc))
            raise
        finally:
            child.active = None
            reset_child_signal(token)

    async def _current(self, key: str, deadline: float) -> LightweightChild:
        """The running incarnation of ``key``, waiting for the restart of one that crashed."""
        while True:
            child = self.children.get(key)
            if child is not None:
                return child
            crashed_at = self._crashed.get(key)
            left = deadline - time.monotonic()
            if crashed_at is None or time.monotonic() - crashed_at > RESTART_WAIT_S or left <= 0:
                raise ChildNotFound(f"no lightweight child {key!r} runs on this host")
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            waiters = self._waiting.setdefault(key, set())
            waiters.add(waiter)
            try:
                await asyncio.wait_for(waiter, left)
            except asyncio.TimeoutError:
                continue
            finally:
                waiters.discard(waiter)
                if not waiters and self._waiting.get(key) is waiters:
                    del self._waiting[key]

    # ------------------------------------------------------------------ stop
    async def stop(self, key: str, inc: int, reason: str, timeout_s: float) -> str | None:
        """OTP shutdown with a timeout: after the call in progress, run ``terminate(reason)``
        and end the ``run`` task; past ``timeout_s`` cancel everything. Returns the exit
        reason, None if that incarnation had ended already, ``STUCK`` if it does not end."""
        child = self._find(key, inc)
        if child is None:
            return None
        graceful = asyncio.get_running_loop().create_task(self._graceful(child, reason))
        done, _ = await asyncio.wait({graceful}, timeout=timeout_s)
        if done and child.reason is not None:
            return child.reason
        graceful.cancel()
        return await self._cancel(child, [graceful])

    async def kill(self, key: str, inc: int) -> str | None:
        """``brutal_kill``: cancel the child's tasks now. ``KILLED``, None if that incarnation
        had ended already, ``STUCK`` if its tasks do not end within ``kill_grace_s``."""
        child = self._find(key, inc)
        if child is None:
            return None
        return await self._cancel(child, [])

    async def _graceful(self, child: LightweightChild, reason: str) -> None:
        async with child.lock:
            if child.reason is not None:
                return
            token = use_child_signal(child.signal)
            try:
                hook = getattr(child.instance, "terminate", None)
                if callable(hook):
                    try:
                        pending = hook(reason)
                        if inspect.isawaitable(pending):
                            await pending
                    except Exception:  # a failing hook does not change how the child ends
                        pass
                if child.run_task is not None and not child.run_task.done():
                    child.run_task.cancel()
                    await asyncio.wait({child.run_task})
            finally:
                reset_child_signal(token)
            self._exit(child, reason, asked=True)

    async def _cancel(self, child: LightweightChild, others: list[asyncio.Task[Any]]) -> str:
        tasks = [*child.tasks(), *(t for t in others if not t.done())]
        current = asyncio.current_task()
        tasks = [t for t in tasks if t is not current]
        for task in tasks:
            task.cancel()
        self._exit(child, KILLED, asked=True)
        if not tasks:
            return KILLED
        _, pending = await asyncio.wait(tasks, timeout=self.kill_grace_s)
        return STUCK if pending else KILLED

    # ------------------------------------------------------------------ exits
    def _exit(self, child: LightweightChild, reason: str, asked: bool = False) -> None:
        """End ``child`` with ``reason`` (first reason wins): drop it, cancel its ``run`` task
        and the call in progress (unless that is the code exiting), publish the event.
        ``asked``: its owner stopped it (calls do not wait for a restart then)."""
        if child.reason is not None:
            return
        child.reason = reason
        if child.signal is not None:
            child.signal.set(reason)
        current = asyncio.current_task()
        for task in child.tasks():
            if task is not current:
                task.cancel()
        if self.children.get(child.key) is not child:
            return  # exit() in its constructor: start() publishes once it is recorded
        self._publish(child, reason, crashed=not asked and not is_normal(reason))

    def _publish(self, child: LightweightChild, reason: str, crashed: bool) -> None:
        if self.children.get(child.key) is child:
            del self.children[child.key]
        if crashed:
            self._crashed[child.key] = time.monotonic()
        self.exits += 1
        self._seq += 1
        self._events.append((self._seq, child.key, child.inc, reason))
        self._new_event.set()

    async def next_exits(self, after: int, timeout_s: float) -> list[tuple[int, str, int, str]]:
        """Exit events with a sequence number above ``after`` (those up to ``after`` are
        dropped: the owner has them), waiting up to ``timeout_s`` for one."""
        self._events = [e for e in self._events if e[0] > after]
        if not self._events:
            self._new_event.clear()
            try:
                await asyncio.wait_for(self._new_event.wait(), timeout_s)
            except asyncio.TimeoutError:
                return []
        return list(self._events)

    # ------------------------------------------------------------------ status
    def status(self, with_children: bool = True) -> dict[str, Any]:
        stats = [c.stats() for c in self.children.values()] if with_children else []
        return {"children": len(self.children), "max_children": self.max_children,
                "starts": self.starts, "exits": self.exits,
                "calls": sum(c.calls for c in self.children.values()),
                "memory_bytes": sum(s["memory_bytes"] for s in stats),
                "by_child": stats}

    def _find(self, key: str, inc: int) -> LightweightChild | None:
        child = self.children.get(key)
        return child if child is not None and child.inc == inc else None


def _error_reason(exc: BaseException) -> str:
    message = one_line(str(exc), 200)
    return f"error: {type(exc).__name__}" + (f": {message}" if message else "")
