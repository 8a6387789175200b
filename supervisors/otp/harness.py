"""The child harness: turns a user's class into a Ray actor class that a supervisor can watch,
stop gracefully and learn the exit reason of.

``make_child_class(actor)`` accepts a plain class, a ``@ray.remote`` class (its decorator
options are kept) or an import path ``"pkg.mod:Class"``, and returns a Ray actor class that
subclasses the user's class and adds:

* ``MONITOR_METHOD`` (``herd.platform.monitor``) in the concurrency group ``MONITOR_GROUP``: the
  call stays outstanding until the child exits and returns its reason. It runs beside user calls,
  never behind them, for sync (a thread of the group waits on a ``threading.Event``), threaded and
  async actors (a coroutine awaits a future). ``MONITOR_THREADS`` calls may wait at once in a sync
  actor; async actors take any number.
* ``STOP_METHOD(reason)`` in the default group, so it runs after the call in progress, as OTP's
  shutdown signal is handled after the current message: it calls the user's optional
  ``terminate(reason)`` hook (sync or ``async``), then ends the child with ``reason``.
* ``READY_METHOD()`` in ``MONITOR_GROUP``: the child's pid and node id, once its constructor
  has returned; a ``StartChildError`` if the constructor raised (the harness catches it, see
  ``_constructor_failed``). Supervisors answer it too; ``watch_child`` uses it to know that a
  monitor call sent just before has reached the child.

A sync class stays sync: only classes with an ``async def`` method get async harness methods.
``herd.supervisors.otp.exit(reason)`` works in the constructor and in every method. Every herd child
(a harnessed worker or a supervisor) answers these three methods.
"""

from __future__ import annotations

import os
from typing import Any

import ray
from ray import ObjectRef
from ray._private.async_compat import has_async_methods
from ray.actor import ActorClass

from herd.platform import rpc
from herd.platform.logging import get_logger
from herd.platform.monitor import MONITOR_GROUP, MONITOR_METHOD
from herd.registry.sync import stop_cache_sync
from herd.supervisors.errors import StartChildError
from herd.supervisors.otp.classes import resolve_actor
from herd.supervisors.otp.exit import ExitSignal, current_signal, install_signal
from herd.supervisors.otp.start_failure import one_line

__all__ = ["MONITOR_THREADS", "READY_METHOD", "STOP_METHOD", "call_terminate_hook",
           "constructor_error", "make_child_class", "ready_info", "user_class", "watch_child"]

log = get_logger("herd.supervisors.otp.harness")

STOP_METHOD = "__herd_stop__"
READY_METHOD = "__herd_ready__"
MONITOR_THREADS = 16
MONITOR_COROUTINES = 1000

_classes: dict[Any, ActorClass] = {}
#: The error of this process's child constructor, if it raised (one child per process).
_start_error: StartChildError | None = None


def ready_info() -> dict[str, Any]:
    """What a started child reports: its process id and node id."""
    return {"pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id()}


def watch_child(handle: Any, timeout: float | None = None, what: str = "child") -> ObjectRef:
    """Issue a monitor call on a herd child and return its ObjectRef once the call has reached
    the child (a ready call in the same concurrency group, sent after it, has answered): the
    call then returns the child's exit reason even if the child exits at once. A call that
    reaches a child already gone fails with ``ActorDiedError`` instead."""
    monitor_ref = getattr(handle, MONITOR_METHOD).remote()
    rpc.get(getattr(handle, READY_METHOD).remote(), timeout=timeout, what=f"{what} ready")
    return monitor_ref


def make_child_class(actor: Any) -> ActorClass:
    """The harnessed Ray actor class for ``actor`` (cached per class in this process, so Ray
    exports each class definition once). An actor of it whose constructor raised stays up and
    answers ``READY_METHOD`` with a ``StartChildError``: whoever created it ends it with
    ``ray.kill`` (``lifecycle.adopt`` does)."""
    resolved = resolve_actor(actor)
    cached = _classes.get(resolved)
    if cached is not None:
        return cached
    user_cls = user_class(resolved)
    defaults = dict(resolved._default_options) if isinstance(resolved, ActorClass) else {}
    is_async = has_async_methods(user_cls)
    child_cls = _subclass(user_cls, is_async)
    groups = dict(defaults.pop("concurrency_groups", None) or {})
    groups[MONITOR_GROUP] = MONITOR_COROUTINES if is_async else MONITOR_THREADS
    actor_cls = ray.remote(concurrency_groups=groups, **defaults)(child_cls)
    _classes[resolved] = actor_cls
    return actor_cls


def user_class(resolved: type | ActorClass) -> type:
    """The user's own class: ``resolved`` itself, or the class under a ``@ray.remote`` one."""
    if isinstance(resolved, ActorClass):
        cls: type = resolved.__ray_metadata__.modified_class.__ray_actor_class__
        return cls
    return resolved


def call_terminate_hook(instance: Any, reason: str) -> Any:
    """Run the child's optional ``terminate(reason)`` hook; what it returned (an awaitable
    for an ``async`` hook), None if it has none or it raised (logged)."""
    hook = getattr(instance, "terminate", None)
    if not callable(hook):
        return None
    try:
        return hook(reason)
    except Exception:
        log.exception("terminate_hook_failed", reason=reason)
        return None


def _subclass(user_cls: type, is_async: bool) -> type:
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        install_signal(ExitSignal(on_set=stop_cache_sync))
        try:
            user_cls.__init__(self, *args, **kwargs)
        except Exception as exc:
            _constructor_failed(exc)

    if is_async:
        @ray.method(concurrency_group=MONITOR_GROUP)
        async def monitor(self: Any) -> str:
            return await _signal().wait_async()

        @ray.method(concurrency_group=MONITOR_GROUP)
        async def ready(self: Any) -> dict[str, Any]:
            return _ready()

        async def stop(self: Any, reason: str) -> str:
            signal = _signal()
            if signal.reason is None:
                pending = call_terminate_hook(self, reason)
                if pending is not None and hasattr(pending, "__await__"):
                    try:
                        await pending
                    except Exception:
                        log.exception("terminate_hook_failed", reason=reason)
                signal.set(reason)
            return signal.reason or reason
    else:
        @ray.method(concurrency_group=MONITOR_GROUP)
        def monitor(self: Any) -> str:
            return _signal().wait()

        @ray.method(concurrency_group=MONITOR_GROUP)
        def ready(self: Any) -> dict[str, Any]:
            return _ready()

        def stop(self: Any, reason: str) -> str:
            signal = _signal()
            if signal.reason is None:
                call_terminate_hook(self, reason)
                signal.set(reason)
            return signal.reason or reason

    namespace = {"__init__": __init__, MONITOR_METHOD: monitor, READY_METHOD: ready,
                 STOP_METHOD: stop, "__module__": user_cls.__module__,
                 "__qualname__": user_cls.__qualname__, "__doc__": user_cls.__doc__}
    return type(user_cls.__name__, (user_cls,), namespace)


def constructor_error(exc: Exception) -> StartChildError:
    """The ``StartChildError`` a child's ready call raises when its constructor raised ``exc``."""
    message = one_line(str(exc))
    error = StartChildError(f"its constructor raised {type(exc).__name__}"
                            + (f": {message}" if message else ""))
    error.__cause__ = exc
    return error


def _constructor_failed(exc: Exception) -> None:
    """Keep the error of a constructor that raised for the ready call, and let ``__init__``
    return. Ray aborts the process of a threaded or async actor whose constructor raises
    (``*** SIGABRT received`` and a C++ stack trace in its log: the core worker is destroyed
    with its thread pools still running), and every harnessed child is threaded (it has a
    concurrency group). Its supervisor kills the process once the ready call has failed,
    which ends it quietly, as Ray ends a plain actor whose constructor raised."""
    global _start_error
    log.debug("constructor_failed", exc_info=exc)
    _start_error = constructor_error(exc)


def _ready() -> dict[str, Any]:
    if _start_error is not None:
        raise _start_error
    return ready_info()


def _signal() -> ExitSignal:
    signal = current_signal()
    assert signal is not None, "the harness installs the exit signal in __init__"
    return signal
