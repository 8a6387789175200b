"""Starting, watching and stopping one herd child on Ray (run inside a supervisor's event loop).

A started child is an :class:`Incarnation`: its actor handle, what it reported when ready, and a
future that resolves with its exit reason. The future is fed by the child's monitor call
(``herd.platform.monitor``): the reason the child gave, or ``"killed"`` when Ray fails the call
because the process died. Once a child has exited, its process is ended with ``ray.kill`` (a child
that called ``exit()`` is still running until then).

``shutdown`` is OTP's shutdown protocol: ``brutal_kill`` kills at once; milliseconds (or
``infinity``, bounded by ``INFINITY_GUARD_S``) first call the child's stop method, which runs its
``terminate`` hook, and kill it if it has not exited in time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import ray
from ray.actor import ActorHandle
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, RayTaskError

from herd.platform.errors import StartChildError
from herd.platform.logging import get_logger
from herd.platform.monitor import MONITOR_METHOD
from herd.supervisors.exit import KILLED, SHUTDOWN
from herd.supervisors.harness import READY_METHOD, STOP_METHOD, make_child_class
from herd.supervisors.spec import ChildSpec

__all__ = ["KILL_CONFIRM_S", "Incarnation", "adopt", "child_options", "shutdown", "spawn",
           "start_worker", "watch"]

log = get_logger("herd.supervisors.lifecycle")

#: How long to wait for Ray to confirm the death of a killed child before giving up waiting.
KILL_CONFIRM_S = 10.0
#: Pause before re-issuing a monitor call that failed with ``ActorUnavailableError``.
UNAVAILABLE_RETRY_S = 0.1
_MAX_ERROR_CHARS = 600

_background: set[asyncio.Task[Any]] = set()


@dataclass(eq=False)
class Incarnation:
    """One run of a child: a new one (new handle) after every restart."""

    handle: ActorHandle
    info: dict[str, Any]
    exited: asyncio.Future[str]

    @property
    def pid(self) -> int | None:
        return self.info.get("pid")

    @property
    def node_id(self) -> str | None:
        return self.info.get("node_id")


def child_options(spec: ChildSpec) -> dict[str, Any]:
    """Ray options of a child: the spec's ``options`` plus herd's (no Ray restarts, no retries)."""
    return {**spec.options, "max_restarts": 0, "max_task_retries": 0}


async def start_worker(spec: ChildSpec) -> Incarnation:
    """Create the actor of a worker child and wait until its constructor has returned.

    Raises ``StartChildError`` (and leaves nothing running) when the constructor raises or the
    child is not up within ``spec.start_timeout`` (e.g. no node satisfies its options)."""
    actor_cls = make_child_class(spec.actor)
    handle = actor_cls.options(**child_options(spec)).remote(*spec.args, **spec.kwargs)
    return await adopt(handle, spec.id, getattr(handle, READY_METHOD).remote(), spec.start_timeout)


async def adopt(handle: ActorHandle, child_id: str, ready_ref: Any,
                timeout_s: float) -> Incarnation:
    """Watch a freshly created herd child: wait for ``ready_ref`` (its ready/init call) and
    start the monitor. Kills the actor and raises ``StartChildError`` if it does not come up."""
    monitor_ref = getattr(handle, MONITOR_METHOD).remote()
    try:
        info = await asyncio.wait_for(_await(ready_ref), timeout_s)
    except (asyncio.TimeoutError, RayActorError, RayTaskError) as exc:
        ray.kill(handle, no_restart=True)
        spawn(_drain(monitor_ref))
        if isinstance(exc, asyncio.TimeoutError):
            why = (f"did not start within {timeout_s:.1f} s (no node satisfies its options, or "
                   f"its constructor is slow)")
        else:  # the constructor raised, or a nested supervisor's own start failed
            cause = exc.cause if isinstance(exc, RayTaskError) and exc.cause else exc
            why = f"failed to start: {_short(cause)}"
        raise StartChildError(f"child {child_id!r} {why}") from None
    exited: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    incarnation = Incarnation(handle=handle, info=dict(info or {}), exited=exited)
    spawn(watch(incarnation, monitor_ref))
    return incarnation


async def watch(incarnation: Incarnation, monitor_ref: Any) -> None:
    """Resolve ``incarnation.exited`` with the child's exit reason, then end its process."""
    while True:
        try:
            reason = await _await(monitor_ref)
            break
        except ActorUnavailableError:  # not known dead yet (e.g. its node is unreachable)
            await asyncio.sleep(UNAVAILABLE_RETRY_S)
            monitor_ref = getattr(incarnation.handle, MONITOR_METHOD).remote()
        except ActorDiedError:
            reason = KILLED
            break
        except RayActorError as exc:
            reason = f"error: {_short(exc)}"
            break
    if reason != KILLED:
        ray.kill(incarnation.handle, no_restart=True)
    if not incarnation.exited.done():
        incarnation.exited.set_result(reason)


async def shutdown(incarnation: Incarnation, spec: ChildSpec, reason: str = SHUTDOWN) -> str:
    """Stop a child per ``spec.shutdown`` and return its exit reason (``reason`` when it stopped
    in time, ``"killed"`` when it had to be killed)."""
    if incarnation.exited.done():
        return incarnation.exited.result()
    if spec.shutdown != "brutal_kill":
        spawn(_drain(getattr(incarnation.handle, STOP_METHOD).remote(reason)))
        try:
            return await asyncio.wait_for(asyncio.shield(incarnation.exited),
                                          spec.shutdown_deadline_s())
        except asyncio.TimeoutError:
            log.warning("shutdown_timeout", child_id=spec.id, shutdown=spec.shutdown)
    ray.kill(incarnation.handle, no_restart=True)
    try:
        return await asyncio.wait_for(asyncio.shield(incarnation.exited), KILL_CONFIRM_S)
    except asyncio.TimeoutError:
        log.warning("kill_not_confirmed", child_id=spec.id, waited_s=KILL_CONFIRM_S)
        return KILLED


def spawn(coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
    """Run ``coro`` as a background task of the running loop, holding a reference to it until
    it is done (the loop itself keeps only weak ones)."""
    task = asyncio.get_running_loop().create_task(coro)
    _background.add(task)
    task.add_done_callback(_background.discard)
    return task


async def _await(ref: Any) -> Any:
    return await ref


async def _drain(ref: Any) -> None:
    """Collect a call's result so Ray does not report an unhandled error for it."""
    try:
        await ref
    except RayActorError:
        pass


def _short(exc: BaseException) -> str:
    """An error on one line, keeping its end (where Ray puts the user's exception)."""
    text = " ".join(str(exc).split())
    return text if len(text) <= _MAX_ERROR_CHARS else "..." + text[-(_MAX_ERROR_CHARS - 3):]
