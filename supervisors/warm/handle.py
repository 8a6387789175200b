"""How callers reach a child that runs in a warm shell: through the shell's ``CALL_METHOD``.

A shell's Ray class is herd's (it was started before anyone knew which child it would become),
so its actor handle has no ``incr`` method. The registry names the shell as the child's holder
with the meta ``warm_route_meta()`` (``{"route": CALL_METHOD, ...}``), which ``via(name)``
follows: ``via(name).incr.remote(1)`` is ``shell.CALL_METHOD.remote(None, "incr", (1,), {})``.
``WarmHandle`` does the same for the handle ``which_children`` reports, so user code sees the
actor-handle API of a cold child.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ray.actor import ActorHandle

__all__ = ["CALL_METHOD", "WARM_META", "WarmHandle", "warm_route_meta"]

#: The shell method that runs one call of its child: ``CALL_METHOD(key, method, args, kwargs)``
#: (``key`` is unused: one shell serves one child; it is the route signature ``via`` uses).
CALL_METHOD = "__herd_call__"
#: Methods a ``WarmHandle`` leaves to the shell itself: herd's child methods (monitor, ready,
#: stop: what supervisors and ``watch_child`` call) and Ray's (``__ray_ready__``...).
SHELL_PREFIXES = ("__herd_", "__ray_")
#: The meta key that marks a registry record whose holder is a warm shell.
WARM_META = "warm"


def warm_route_meta() -> dict[str, Any]:
    """Registry meta telling ``via`` to reach the child through its shell's ``CALL_METHOD``."""
    return {"route": CALL_METHOD, "route_key": None, WARM_META: True}


class WarmHandle:
    """Calls the child in ``shell`` like an actor handle: ``handle.incr.remote(1)`` returns an
    ObjectRef (herd's and Ray's own methods reach the shell directly). ``methods``: the
    child's public methods, when known (others then raise ``AttributeError`` here, as on an
    actor handle); None accepts any public name."""

    __slots__ = ("methods", "shell")

    def __init__(self, shell: ActorHandle, methods: Iterable[str] | None = None) -> None:
        self.shell = shell
        self.methods = frozenset(methods) if methods is not None else None

    def __getattr__(self, method: str) -> Any:
        if method.startswith(SHELL_PREFIXES):  # herd's child methods, Ray's: the shell's own
            return getattr(self.shell, method)
        if method.startswith("_") or (self.methods is not None and method not in self.methods):
            raise AttributeError(method)
        return _WarmMethod(self.shell, method)

    def __reduce__(self) -> tuple[Any, ...]:
        return WarmHandle, (self.shell, None if self.methods is None else sorted(self.methods))

    def __repr__(self) -> str:
        return f"WarmHandle({self.shell!r})"


class _WarmMethod:
    __slots__ = ("method", "shell")

    def __init__(self, shell: ActorHandle, method: str) -> None:
        self.shell = shell
        self.method = method

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.shell, CALL_METHOD).remote(None, self.method, args, kwargs)
