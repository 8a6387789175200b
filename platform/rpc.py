"""Remote calls with deadlines: every ``ray.get`` in herd goes through here."""

from __future__ import annotations

import os
from typing import Any

import ray
from ray.exceptions import GetTimeoutError

from herd.platform.errors import HerdTimeoutError

DEFAULT_TIMEOUT_S = float(os.environ.get("HERD_CALL_TIMEOUT_S", "30"))


def get(refs: Any, timeout: float | None = None, what: str = "remote call") -> Any:
    """``ray.get`` with a deadline (default ``HERD_CALL_TIMEOUT_S``, 30 s).

    Raises ``HerdTimeoutError`` naming ``what`` when the deadline passes; the remote errors
    themselves (``RayActorError``, task exceptions) propagate unchanged.
    """
    deadline = DEFAULT_TIMEOUT_S if timeout is None else timeout
    try:
        return ray.get(refs, timeout=deadline)
    except GetTimeoutError as exc:
        raise HerdTimeoutError(f"{what} did not answer within {deadline:.1f} s") from exc


def call(method: Any, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
    """Call an actor method (``handle.method``) and wait for its result with a deadline."""
    name = getattr(method, "_method_name", None) or getattr(method, "__name__", "method")
    return get(method.remote(*args, **kwargs), timeout=timeout, what=f"call {name}")
