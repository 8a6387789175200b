"""Supervisor errors: ``SupervisorError`` and its subclasses, among them the ``{error, ...}``
replies of OTP's ``supervisor`` API (``already_started``, ``already_present``, ``running``,
``restarting``).

Each child-state error takes only the child id, so it pickles across Ray calls unchanged. A
``StartChildError`` keeps its ``__cause__`` (e.g. the exception a child's constructor raised)
across Ray calls when that exception pickles; plain pickling would drop it.
"""

from __future__ import annotations

from typing import Any

from ray import cloudpickle

from herd.platform.errors import HerdError

__all__ = [
    "ChildAlreadyPresent",
    "ChildAlreadyStarted",
    "ChildNotFound",
    "ChildRestarting",
    "ChildRunning",
    "PlacementError",
    "StartChildError",
    "SupervisorError",
    "SupervisorRestarting",
    "SupervisorStopped",
]


class SupervisorError(HerdError):
    """Base class of supervisor errors."""


class StartChildError(SupervisorError):
    """A child could not be started (its constructor raised, its class cannot be imported where
    it runs, or it could not be placed in time). The message is one line; ``__cause__`` is the
    original exception where there is one that pickles."""

    def __reduce__(self) -> tuple[Any, ...]:
        state = dict(self.__dict__)
        if self.__cause__ is not None and _pickles(self.__cause__):
            state["__cause__"] = self.__cause__
            state["__suppress_context__"] = True
        return type(self), self.args, state


class PlacementError(StartChildError):
    """No member/node satisfies a child's resources or labels."""


class ChildNotFound(SupervisorError, KeyError):
    """No child with that id under this supervisor."""

    def __str__(self) -> str:
        return str(self.args[0])


class SupervisorStopped(SupervisorError):
    """The supervisor has exited (intensity exceeded, auto_shutdown or stop)."""


class SupervisorRestarting(SupervisorStopped):
    """The supervisor's actor was restarted (its node died, or its process) and has not started
    its children again yet: a passing state, unlike its parent class; ask again shortly."""


class _ChildStateError(SupervisorError):
    """A request that the child's current state does not allow."""

    what = "is in the wrong state"

    def __init__(self, child_id: str) -> None:
        self.child_id = child_id
        super().__init__(child_id)

    def __str__(self) -> str:
        return f"child {self.child_id!r} {self.what}"


class ChildAlreadyStarted(_ChildStateError):
    """``start_child`` with the id of a running child (OTP ``{error, {already_started, Pid}}``)."""

    what = "is already started"


class ChildAlreadyPresent(_ChildStateError):
    """``start_child`` with the id of a stopped child whose spec is kept (OTP ``already_present``):
    use ``restart_child`` or ``delete_child``."""

    what = "is already present (stopped); restart_child or delete_child it"


class ChildRunning(_ChildStateError):
    """``restart_child``/``delete_child`` of a running child (OTP ``{error, running}``)."""

    what = "is running; terminate_child it first"


class ChildRestarting(_ChildStateError):
    """``restart_child``/``delete_child`` while the supervisor retries a failed restart
    (OTP ``{error, restarting}``)."""

    what = "is being restarted by its supervisor"


def _pickles(exc: BaseException) -> bool:
    try:
        cloudpickle.dumps(exc)
    except Exception:
        return False
    return True
