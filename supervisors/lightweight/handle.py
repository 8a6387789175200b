"""The handle of a lightweight child: looks like an actor handle, routes to its host.

``handle.incr.remote(1)`` is ``host.call_child.remote(key, "incr", (1,), {})``: an ObjectRef,
as from an actor. The registry names a lightweight child with its host as holder and the meta
``ROUTE_META`` (``{"route": "call_child", "route_key": key}``), which ``via(name)`` follows the
same way. A handle pickles (host handle and key), so it can be passed to other tasks and actors.
"""

from __future__ import annotations

from typing import Any

from ray.actor import ActorHandle

__all__ = ["ROUTE_METHOD", "LightweightHandle", "route_meta"]

#: The host method that runs one call of a child: ``call_child(key, method, args, kwargs)``.
ROUTE_METHOD = "call_child"


def route_meta(key: str) -> dict[str, str]:
    """Registry meta telling ``via`` to reach ``key`` through its holder's ``ROUTE_METHOD``."""
    return {"route": ROUTE_METHOD, "route_key": key, "lightweight": key}


class LightweightHandle:
    """Calls the lightweight child ``key`` on ``host``; attributes not starting with ``_``
    are the child's methods."""

    __slots__ = ("host", "key")

    def __init__(self, host: ActorHandle, key: str) -> None:
        self.host = host
        self.key = key

    def __getattr__(self, method: str) -> _ChildMethod:
        if method.startswith("_"):
            raise AttributeError(method)
        return _ChildMethod(self.host, self.key, method)

    def __reduce__(self) -> tuple[Any, ...]:
        return LightweightHandle, (self.host, self.key)

    def __repr__(self) -> str:
        return f"LightweightHandle({self.key!r})"


class _ChildMethod:
    __slots__ = ("host", "key", "method")

    def __init__(self, host: ActorHandle, key: str, method: str) -> None:
        self.host = host
        self.key = key
        self.method = method

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.host, ROUTE_METHOD).remote(self.key, self.method, args, kwargs)
