"""Supervisor errors that ``herd.platform.errors`` does not name: the ``{error, ...}`` replies of
OTP's ``supervisor`` API (``already_started``, ``already_present``, ``running``, ``restarting``).

Each takes only the child id, so it pickles across Ray calls unchanged.
"""

from __future__ import annotations

from herd.platform.errors import SupervisorError

__all__ = ["ChildAlreadyPresent", "ChildAlreadyStarted", "ChildRestarting", "ChildRunning"]


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
