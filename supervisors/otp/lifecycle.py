"""Starting, watching and stopping one herd child on Ray (run inside a supervisor's event loop).

A started child is an :class:`Incarnation`: its actor handle, what it reported when ready, and two
futures fed by the child's monitor call (``herd.platform.monitor``):

* ``reported``: the exit reason as soon as the child gives one (``exit()``, or its stop method
  after the ``terminate`` hook), or ``"killed"`` when Ray fails the call because the process died;
* ``exited``: the same reason once the process is gone (a child whose ready answer has a
  ``liveness`` address, a warm shell's, is known gone as soon as that connection closes:
  ``herd.platform.liveness``, sooner than Ray's death notice). A child that gave a reason is still
  running: it is asked to exit gracefully (Ray's ``__ray_terminate__``, which lets the call that
  asked to exit and every watcher's monitor call answer first) and killed if it has not gone
  within ``EXIT_GRACE_S``. Like an Erlang process after its ``'EXIT'``, an incarnation is only
  replaced once it is gone.

``shutdown`` is OTP's shutdown protocol: ``brutal_kill`` kills at once; milliseconds (or
``infinity``, bounded by ``INFINITY_GUARD_S``) first call the child's stop method, which runs its
``terminate`` hook, and kill it if it has not given its reason in time.

A worker started in a warm shell (``herd.supervisors.warm``: a process already running, of the
child's shape) is an incarnation whose ``handle`` is the shell, watched and stopped like any
child; ``warm`` is the handle that routes user calls to it, and its registry meta says so. Its
name can be registered while its constructor runs (``Naming``), as OTP registers a ``via``
name before ``init/1`` runs: calls that arrive meanwhile wait in the shell for the child.

A lightweight child (``kind="lightweight"``) is an incarnation too: ``start_lightweight`` starts
it on its supervisor's host (``herd.supervisors.lightweight.link``), its handle routes calls to
the host, its registry holder is the host, and ``shutdown`` goes through the link.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, NoReturn

import ray
from ray.actor import ActorHandle
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, RayError

from herd.platform import liveness
from herd.platform.control_plane import prefer_node_options
from herd.platform.errors import HerdError
from herd.platform.gcs import actor_status
from herd.platform.logging import get_logger
from herd.platform.monitor import MONITOR_METHOD
from herd.registry import Registration
from herd.supervisors.errors import StartChildError
from herd.supervisors.lightweight.link import HostLink, LightweightStart
from herd.supervisors.otp.classes import ShippedClass
from herd.supervisors.otp.exit import KILLED, SHUTDOWN
from herd.supervisors.otp.harness import READY_METHOD, STOP_METHOD, make_child_class
from herd.supervisors.otp.spec import ChildSpec
from herd.supervisors.otp.start_failure import describe, one_line, timed_out
from herd.supervisors.warm.handle import WarmHandle, warm_route_meta
from herd.supervisors.warm.pool import Standby, WarmPool
from herd.supervisors.warm.shell import BECOME_METHOD
from herd.supervisors.warm.spec import call_options

__all__ = ["EXIT_GRACE_S", "KILL_CONFIRM_S", "Incarnation", "Naming", "adopt", "child_options",
           "fail_start", "near_supervisor", "shutdown", "spawn", "start_lightweight",
           "start_worker", "watch"]

log = get_logger("herd.supervisors.otp.lifecycle")

#: How long to wait for Ray to confirm the death of a killed child before giving up waiting.
KILL_CONFIRM_S = 10.0
#: How long a child that gave its exit reason may take to exit gracefully before it is killed.
EXIT_GRACE_S = 1.0
#: Pause before re-issuing a monitor call that failed with ``ActorUnavailableError``.
UNAVAILABLE_RETRY_S = 0.1

_background: set[asyncio.Task[Any]] = set()


@dataclass(eq=False)
class Incarnation:
    """One run of a child: a new one (new handle) after every restart."""

    handle: ActorHandle
    info: dict[str, Any]
    reported: asyncio.Future[str]
    """The exit reason, as soon as the child gives it (its process may still be running)."""
    exited: asyncio.Future[str]
    """The exit reason, once the child's process is gone."""
    link: HostLink | None = None
    """Lightweight children: the link to their host."""
    lightweight: LightweightStart | None = None
    warm: WarmHandle | None = None
    """Children started in a warm shell (``handle`` is the shell): what callers use."""
    named: bool = False
    """Its registry name was registered while it started (``Naming``)."""
    name: Registration | None = None
    """Its registry record, once registered (None without a registry)."""
    liveness: list[Any] | None = None
    """The address whose connection closes when its process dies (``herd.platform.liveness``)."""

    @property
    def public(self) -> Any:
        """The handle users call the child through (its shell's routing handle if warm)."""
        return self.warm if self.warm is not None else self.handle

    @property
    def holder(self) -> ActorHandle:
        """The actor that holds the child's registry name (a lightweight child's host)."""
        return self.lightweight.handle.host if self.lightweight is not None else self.handle

    @property
    def pid(self) -> int | None:
        return self.info.get("pid")

    @property
    def node_id(self) -> str | None:
        return self.info.get("node_id")


# Options that decide where a child can run: a child with any of them is placed by them alone
# (with a default placement added, a request no node can meet fails at once with Ray's
# "not schedulable" instead of herd's placement timeout, which names what was asked for).
PLACEMENT_OPTIONS = ("scheduling_strategy", "label_selector", "placement_group", "resources",
                     "num_gpus", "memory", "accelerator_type")


@dataclass(frozen=True)
class Naming:
    """How a start registers the child's name early: ``register(holder, meta)`` and, if the
    child then fails to start, ``unregister(holder)``."""

    register: Callable[[ActorHandle, dict[str, Any]], Awaitable[Registration | None]]
    unregister: Callable[[ActorHandle], Awaitable[None]]


def child_options(spec: ChildSpec) -> dict[str, Any]:
    """Ray options of a child: the spec's ``options`` plus herd's (no Ray restarts, no retries)."""
    return {**spec.options, "max_restarts": 0, "max_task_retries": 0}


def near_supervisor(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` of a child, placed on its supervisor's node (this process's) while that node
    can take it, unless they place it themselves. As in OTP: the child fate-shares with its
    supervisor (its owner) anyway, and a supervisor kept off the head keeps its children off it,
    so a head restart restarts none of them."""
    if any(key in options for key in PLACEMENT_OPTIONS):
        return options
    return {**prefer_node_options(ray.get_runtime_context().get_node_id()), **options}


async def start_worker(spec: ChildSpec, pool: WarmPool | None = None,
                       naming: Naming | None = None) -> Incarnation:
    """Create the actor of a worker child and wait until its constructor has returned; in a
    ready shell of ``pool`` when it has one of the child's shape (then no process starts, and
    with ``naming`` its name is registered while the constructor runs: ``named`` is then set).

    Raises ``StartChildError`` with a one-line reason (and leaves nothing running) whatever
    stops it: its class cannot be imported, its constructor raises, Ray cannot create or place
    it, or it is not up within ``spec.start_timeout``. A shell whose child fails to start is
    ended, never returned to the pool."""
    try:
        actor_cls = make_child_class(spec.actor)
        options = child_options(spec)
        shell = pool.take(pool.shape_for(spec)) if pool is not None else None
        if shell is None:
            handle = actor_cls.options(**near_supervisor(options)).remote(*spec.args,
                                                                           **spec.kwargs)
    except Exception as exc:
        fail_start(spec.id, exc)
    if shell is not None:
        return await _start_in_shell(shell, spec, actor_cls, options, naming)
    return await adopt(handle, spec.id, getattr(handle, READY_METHOD).remote(),
                       spec.start_timeout, {**actor_cls._default_options, **options})


async def _start_in_shell(standby: Standby, spec: ChildSpec, actor_cls: Any,
                          options: dict[str, Any], naming: Naming | None) -> Incarnation:
    """Turn a warm shell into the child: its class loaded and constructed in the shell, its
    name (with ``naming``) registered meanwhile."""
    shell = standby.handle
    try:
        shipped = (spec.actor if isinstance(spec.actor, ShippedClass)
                   else ShippedClass.of(spec.actor))
        became = getattr(shell, BECOME_METHOD).remote(
            shipped, spec.args, spec.kwargs, call_options(actor_cls._default_options, options))
    except BaseException as exc:
        ray.kill(shell, no_restart=True)
        if isinstance(exc, Exception):
            fail_start(spec.id, exc)
        raise
    meta = {k: v for k, v in standby.info.items() if k != "liveness"}
    registering = (spawn(naming.register(shell, {**meta, **warm_route_meta()}))
                   if naming is not None else None)
    try:
        incarnation = await adopt(shell, spec.id, became, spec.start_timeout,
                                  {**actor_cls._default_options, **options})
    except BaseException:
        if registering is not None and naming is not None:
            await _unname(registering, naming, shell)
        raise
    incarnation.warm = WarmHandle(shell, incarnation.info.pop("methods", None))
    incarnation.info.update(warm_route_meta())
    if registering is not None:
        try:
            incarnation.name = await registering
        except (HerdError, RayError) as exc:
            await shutdown(incarnation, spec.model_copy(update={"shutdown": "brutal_kill"}))
            raise StartChildError(f"child {spec.id!r} could not be registered: "
                                  f"{one_line(str(exc))}") from None
        incarnation.named = True
    return incarnation


async def _unname(registering: asyncio.Task[Registration | None], naming: Naming,
                  holder: ActorHandle) -> None:
    """Undo an early registration of a child that failed to start (best effort: the registry
    also drops the names of holders it sees end)."""
    try:
        await registering
    except Exception:
        return  # it was never registered
    await naming.unregister(holder)


async def start_lightweight(link: HostLink, spec: ChildSpec, key: str) -> Incarnation:
    """Start a lightweight child on ``link``'s host as ``key``; ``StartChildError`` naming the
    cause (nothing is left on the host) if its class, its constructor or the host fails."""
    try:
        started = await link.start(key, spec)
    except asyncio.TimeoutError:
        raise StartChildError(f"child {spec.id!r} did not start within "
                              f"{spec.start_timeout:.1f} s on its host") from None
    except Exception as exc:
        fail_start(spec.id, exc)
    return Incarnation(handle=started.handle, info=started.info, reported=started.reported,
                       exited=started.exited, link=link, lightweight=started)


async def adopt(handle: ActorHandle, child_id: str, ready_ref: Any, timeout_s: float,
                options: dict[str, Any]) -> Incarnation:
    """Watch a freshly created herd child: wait for ``ready_ref`` (its ready/init call) and
    start the monitor. Kills the actor and raises ``StartChildError`` if it does not come up
    (``options``: its Ray options, to say why when it could not be placed)."""
    monitor_ref = getattr(handle, MONITOR_METHOD).remote()
    try:
        info = await asyncio.wait_for(_await(ready_ref), timeout_s)
    except Exception as exc:
        state = (await _actor_state(handle)
                 if isinstance(exc, asyncio.TimeoutError) else None)
        ray.kill(handle, no_restart=True)
        spawn(_drain(monitor_ref))
        if isinstance(exc, asyncio.TimeoutError):
            raise StartChildError(f"child {child_id!r} "
                                  f"{timed_out(timeout_s, state, options)}") from None
        fail_start(child_id, exc)
    loop = asyncio.get_running_loop()
    info = dict(info or {})
    incarnation = Incarnation(handle=handle, info=info, liveness=info.pop("liveness", None),
                              reported=loop.create_future(), exited=loop.create_future())
    spawn(watch(incarnation, monitor_ref))
    return incarnation


def fail_start(child_id: str, exc: BaseException) -> NoReturn:
    """Raise the ``StartChildError`` for ``exc``: one line saying why, and as its cause the
    original exception where there is one (e.g. what the constructor raised)."""
    why, cause = describe(exc)
    raise StartChildError(f"child {child_id!r} failed to start: {why}") from cause


async def _actor_state(handle: ActorHandle) -> str | None:
    """The actor's state in the GCS (None if it cannot be read)."""
    try:
        return (await actor_status(handle._actor_id.hex())).state
    except Exception as exc:  # only used to word an error: never fail because of it
        log.debug("actor_state_unknown", error=repr(exc))
        return None


async def watch(incarnation: Incarnation, monitor_ref: Any) -> None:
    """Resolve ``reported`` with the child's exit reason, end its process, resolve ``exited``:
    the monitor call's answer, or ``"killed"`` as soon as the child's liveness connection
    closes (its process is gone; Ray's notice, later, is then only collected)."""
    monitored = spawn(_monitor_reason(incarnation, monitor_ref))
    reason: str | None = None
    if incarnation.liveness is not None:
        closing = spawn(liveness.closed(incarnation.liveness))
        await asyncio.wait({monitored, closing}, return_when=asyncio.FIRST_COMPLETED)
        if monitored.done():
            closing.cancel()
        elif closing.exception() is None:  # the kernel closed its sockets: it has died
            reason = KILLED
            ray.kill(incarnation.handle, no_restart=True)  # a process about to end, to be sure
    if reason is None:
        reason = await monitored
    _resolve(incarnation.reported, reason)
    if reason != KILLED:
        await _end_process(incarnation.handle)
    _resolve(incarnation.exited, reason)


async def _monitor_reason(incarnation: Incarnation, monitor_ref: Any) -> str:
    """The monitor call's answer: the exit reason the child gave, or why Ray failed it."""
    while True:
        try:
            return str(await _await(monitor_ref))
        except ActorUnavailableError:  # not known dead yet (e.g. its node is unreachable)
            await asyncio.sleep(UNAVAILABLE_RETRY_S)
            monitor_ref = getattr(incarnation.handle, MONITOR_METHOD).remote()
        except ActorDiedError:
            return KILLED
        except RayActorError as exc:
            return f"error: {one_line(str(exc))}"


async def shutdown(incarnation: Incarnation, spec: ChildSpec, reason: str = SHUTDOWN) -> str:
    """Stop a child per ``spec.shutdown`` and return its exit reason once its process is gone
    (``reason`` when it stopped in time, ``"killed"`` when it had to be killed)."""
    if incarnation.link is not None and incarnation.lightweight is not None:
        return await incarnation.link.stop(incarnation.lightweight, spec, reason)
    if not incarnation.reported.done():
        if spec.shutdown != "brutal_kill":
            spawn(_drain(getattr(incarnation.handle, STOP_METHOD).remote(reason)))
            try:
                await asyncio.wait_for(asyncio.shield(incarnation.reported),
                                       spec.shutdown_deadline_s())
            except asyncio.TimeoutError:
                log.warning("shutdown_timeout", child_id=spec.id, shutdown=spec.shutdown)
        if not incarnation.reported.done():
            ray.kill(incarnation.handle, no_restart=True)
    try:
        return await asyncio.wait_for(asyncio.shield(incarnation.exited),
                                      EXIT_GRACE_S + KILL_CONFIRM_S)
    except asyncio.TimeoutError:
        log.warning("exit_not_confirmed", child_id=spec.id)
        return incarnation.reported.result() if incarnation.reported.done() else KILLED


async def _end_process(handle: ActorHandle) -> None:
    """End a child that gave its exit reason: gracefully (queued calls and monitor replies go
    out first), then by force after ``EXIT_GRACE_S``; return once Ray reports it gone."""
    terminated = handle.__ray_terminate__.remote()
    try:
        await asyncio.wait_for(_await(terminated), EXIT_GRACE_S)
    except ActorDiedError:
        return
    except (asyncio.TimeoutError, RayActorError):
        pass
    ray.kill(handle, no_restart=True)
    with contextlib.suppress(RayActorError, asyncio.TimeoutError):
        await asyncio.wait_for(_await(terminated), KILL_CONFIRM_S)


def _resolve(future: asyncio.Future[str], reason: str) -> None:
    if not future.done():
        future.set_result(reason)


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
    with contextlib.suppress(RayActorError):
        await ref
