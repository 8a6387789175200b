"""Noticing that a holder died, inside the registry actor.

* herd children (``herd.platform.monitor.is_monitorable``): one outstanding call of their
  monitor method per holder. It returns the exit reason when the child exits and fails with
  ``ActorDiedError`` milliseconds after its process dies (any cause: exception, ``ray.kill``,
  SIGKILL, node death once Ray notices). No polling.
* any other Ray actor: an outstanding call is impossible (a builtin method such as
  ``__ray_ready__`` returns at once, and user methods are the user's). Every ``POLL_INTERVAL_S``
  the states of all such holders are read from the GCS actor table (one asynchronous GCS query
  per holder, concurrently) and a holder in state ``DEAD`` is reported. Bound: a non-herd
  holder is reported at most ``POLL_INTERVAL_S`` + one GCS query (a few ms) after the GCS marks
  the actor dead -- at once for an exit, ``ray.kill`` or a killed process, after the health
  check declares the node dead for a node failure. A restarting actor (``max_restarts``) keeps
  its registrations: its handle stays valid.

A holder with no records left is forgotten; its monitor call is cancelled with ``ray.cancel``
so that it does not hold a slot of the child's monitor concurrency group.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError

from herd.platform.gcs import actor_status
from herd.platform.logging import get_logger
from herd.platform.monitor import MONITOR_METHOD, is_monitorable

POLL_INTERVAL_S = 0.25
UNAVAILABLE_RETRY_S = 0.1

GoneCallback = Callable[[str, str], None]


class HolderMonitor:
    """Calls ``on_gone(holder_id, reason)`` (on the actor's event loop) once a watched holder
    exits or dies."""

    def __init__(self, on_gone: GoneCallback, poll_interval_s: float = POLL_INTERVAL_S,
                 **log_context: Any) -> None:
        self._on_gone = on_gone
        self._interval = poll_interval_s
        self._calls: dict[str, tuple[ray.ObjectRef, asyncio.Task[None]]] = {}
        self._polled: dict[str, Any] = {}
        self._poll_task: asyncio.Task[None] | None = None
        self._log = get_logger("herd.registry.holders", **log_context)

    def start(self) -> None:
        self._poll_task = asyncio.get_running_loop().create_task(self._poll_loop())

    def watch(self, holder_id: str, handle: Any) -> None:
        if holder_id in self._calls or holder_id in self._polled:
            return
        if is_monitorable(handle):
            self._call(holder_id, handle)
        else:
            self._polled[holder_id] = handle

    def unwatch(self, holder_id: str) -> None:
        self._polled.pop(holder_id, None)
        call = self._calls.pop(holder_id, None)
        if call is not None:
            ref, task = call
            task.cancel()
            try:
                ray.cancel(ref)
            except Exception as exc:  # best effort: the call then ends when the child exits
                self._log.warning("monitor_cancel_failed", holder=holder_id, error=repr(exc))

    def counts(self) -> dict[str, int]:
        return {"monitored": len(self._calls), "polled": len(self._polled)}

    # ---------------------------------------------------------------------------- internals
    def _call(self, holder_id: str, handle: Any) -> None:
        ref = getattr(handle, MONITOR_METHOD).remote()
        task = asyncio.get_running_loop().create_task(self._await(holder_id, handle, ref))
        self._calls[holder_id] = (ref, task)

    async def _await(self, holder_id: str, handle: Any, ref: ray.ObjectRef) -> None:
        try:
            reason = await ref
        except ActorUnavailableError:  # transient (e.g. restarting): ask again
            await asyncio.sleep(UNAVAILABLE_RETRY_S)
            if self._calls.get(holder_id, (None,))[0] is ref:
                self._call(holder_id, handle)
            return
        except ActorDiedError:
            self._gone(holder_id, ref, "holder died")
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the monitor method itself failed: the child is broken
            self._gone(holder_id, ref, f"holder exited: monitor failed: {exc!r}")
            return
        self._gone(holder_id, ref, f"holder exited: {reason}")

    def _gone(self, holder_id: str, ref: ray.ObjectRef, reason: str) -> None:
        if self._calls.get(holder_id, (None,))[0] is not ref:
            return  # unwatched (and maybe watched again) meanwhile
        del self._calls[holder_id]
        self._log.info("holder_gone", holder=holder_id, reason=reason)
        self._on_gone(holder_id, reason)

    async def _poll_loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self._poll_once()
            except Exception as exc:  # keep polling: one bad round must not end the monitor
                self._log.error("poll_failed", error=repr(exc))

    async def _poll_once(self) -> None:
        ids = list(self._polled)
        if not ids:
            return
        states = await asyncio.gather(*(actor_status(i) for i in ids), return_exceptions=True)
        for holder_id, status in zip(ids, states, strict=False):
            if isinstance(status, BaseException):
                self._log.warning("gcs_query_failed", holder=holder_id, error=repr(status))
            elif status.state == "DEAD" and self._polled.pop(holder_id, None) is not None:
                self._log.info("holder_gone", holder=holder_id, reason="holder died")
                self._on_gone(holder_id, "holder died")
