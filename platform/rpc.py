"""Remote calls with deadlines: every ``ray.get`` in herd goes through here, and so does every
wait on an object ref inside an asyncio actor (``aget``).

Async actors must never block their event loop: they ``await aget(ref, ...)`` instead of
``get``, and the few Ray calls that have no asynchronous form (getting or creating a named
actor, ``ray.nodes()``) go through ``blocking``: a dedicated, bounded thread pool, so they never
compete with asyncio's default executor (6 threads on a 2-core machine) or block the loop.

While the cluster's head is down (GCS unreachable), a call that times out, or fails with an
actor error, raises :class:`ClusterUnavailable` (a ``HerdTimeoutError``) within its timeout, so
that no caller reacts to an outage by re-creating actors (which would block until the GCS is
back); with GCS fault tolerance, calls work again once the head is back.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import os
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import ray
from ray.exceptions import GetTimeoutError, RayActorError

from herd.platform.connection import gcs_outage
from herd.platform.errors import ClusterUnavailable, HerdTimeoutError

DEFAULT_TIMEOUT_S = float(os.environ.get("HERD_CALL_TIMEOUT_S", "30"))
BLOCKING_THREADS = 8

T = TypeVar("T")

_blocking_pool = ThreadPoolExecutor(BLOCKING_THREADS, thread_name_prefix="herd-blocking")


def get(refs: Any, timeout: float | None = None, what: str = "remote call") -> Any:
    """``ray.get`` with a deadline (default ``HERD_CALL_TIMEOUT_S``, 30 s).

    Raises ``HerdTimeoutError`` naming ``what`` when the deadline passes. While the GCS does not
    answer, a timeout or an actor error (unreachable, or seen dead: nobody can tell without the
    GCS) raises ``ClusterUnavailable`` instead. Otherwise the remote errors themselves
    (``RayActorError``, task exceptions) propagate unchanged.
    """
    deadline = DEFAULT_TIMEOUT_S if timeout is None else timeout
    try:
        return ray.get(refs, timeout=deadline)
    except GetTimeoutError as exc:
        raise unavailable(what, gcs_outage()) or timed_out(what, deadline) from exc
    except RayActorError as exc:
        outage = unavailable(what, gcs_outage())
        if outage is None:
            raise
        raise outage from exc


async def aget(ref: Awaitable[T] | concurrent.futures.Future[T], timeout: float | None = None,
               what: str = "remote call") -> T:
    """Await an object ref (or any awaitable, e.g. a GCS client future) with a deadline, without
    blocking the event loop: the asyncio twin of ``get``. ``HerdTimeoutError`` naming ``what``
    when the deadline passes; remote errors propagate unchanged."""
    deadline = DEFAULT_TIMEOUT_S if timeout is None else timeout
    awaitable = asyncio.wrap_future(ref) if isinstance(ref, concurrent.futures.Future) else ref
    try:
        return await asyncio.wait_for(awaitable, deadline)
    except (asyncio.TimeoutError, GetTimeoutError) as exc:
        outage = unavailable(what, await blocking(gcs_outage))
        raise outage or timed_out(what, deadline) from exc
    except RayActorError as exc:
        outage = unavailable(what, await blocking(gcs_outage))
        if outage is None:
            raise
        raise outage from exc


def timed_out(what: str, deadline: float) -> HerdTimeoutError:
    return HerdTimeoutError(f"{what} did not answer within {deadline:.1f} s")


def unavailable(what: str, outage: str | None) -> ClusterUnavailable | None:
    """The error of a call that failed during an outage (``outage``: why the GCS does not
    answer), or None when the GCS answers."""
    if outage is None:
        return None
    return ClusterUnavailable(f"{what} failed: the cluster's head is down or unreachable "
                              f"({outage})")


async def blocking(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a blocking function (a Ray call with no asynchronous form) on herd's bounded thread
    pool and await its result."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_blocking_pool, functools.partial(fn, *args, **kwargs))


def call(method: Any, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
    """Call an actor method (``handle.method``) and wait for its result with a deadline."""
    return get(method.remote(*args, **kwargs), timeout=timeout, what=f"call {_name(method)}")


async def acall(method: Any, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
    """The asyncio twin of ``call``."""
    return await aget(method.remote(*args, **kwargs), timeout=timeout, what=f"call {_name(method)}")


def _name(method: Any) -> str:
    return str(getattr(method, "_method_name", None) or getattr(method, "__name__", "method"))
