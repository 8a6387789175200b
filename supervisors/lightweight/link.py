"""A supervisor's side of its host: create it, start and stop children on it, learn their exits.

:class:`HostLink` runs in the supervisor's event loop. It creates the host actor on first use
(pinned to a node, owned by the supervisor), keeps one long poll on the host's exit events and
turns each into the result of that incarnation's futures (``reported`` and ``exited``: for a
lightweight child they resolve together, nothing outlives the exit). When the host dies (its
process or node died, the watchdog ended it, or the link restarted it), every child still on it
exits with ``"killed"`` and the next start creates a new host.

Stopping, as OTP's shutdown: ``brutal_kill`` cancels the child's tasks; a timeout in
milliseconds (or ``infinity``) runs ``terminate(reason)`` after the call in progress, then
cancels. A child that is still running ``kill_grace_s`` after its cancellation (it caught
``CancelledError``) cannot be ended any other way: the link kills the host, so the child's
siblings on that host exit with ``"killed"`` too and their supervisor restarts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass
from typing import Any

import ray
from ray.actor import ActorHandle
from ray.exceptions import RayActorError, RayError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from herd.platform import kv
from herd.platform.logging import get_logger
from herd.supervisors.lightweight.handle import LightweightHandle, route_meta
from herd.supervisors.lightweight.host import LightweightHost, watchdog_key
from herd.supervisors.lightweight.runtime import STUCK
from herd.supervisors.otp.classes import ShippedClass
from herd.supervisors.otp.exit import KILLED
from herd.supervisors.otp.spec import ChildSpec, LightweightHosts

__all__ = ["HostLink", "LightweightStart"]

log = get_logger("herd.supervisors.lightweight.link")

HOST_START_TIMEOUT_S = 60.0
POLL_S = 30.0
#: Children per ``start_children`` call of ``start_many``.
START_CHUNK = 1000
#: Added to a host call's own timeout for the reply to arrive.
CALL_MARGIN_S = 10.0


@dataclass
class LightweightStart:
    """What starting a lightweight child gives its supervisor."""

    handle: LightweightHandle
    info: dict[str, Any]
    reported: asyncio.Future[str]
    exited: asyncio.Future[str]
    inc: int


class HostLink:
    """The host of one supervisor's lightweight children."""

    def __init__(self, owner: str, config: LightweightHosts) -> None:
        self.owner = owner
        self.config = config
        self.host: ActorHandle | None = None
        self.host_info: dict[str, Any] = {}
        self.last_failure: str | None = None
        self.culprit: str | None = None
        """The child the watchdog named when it ended the last host (None if no child was to
        blame: the host's process or node died, or it was restarted for a stuck child)."""
        self._live: dict[tuple[str, int], tuple[asyncio.Future[str], asyncio.Future[str]]] = {}
        self._early: dict[tuple[str, int], str] = {}
        self._poller: asyncio.Task[Any] | None = None
        self._creating: asyncio.Lock = asyncio.Lock()
        self._shipped: dict[Any, ShippedClass] = {}
        self._log = log.bind(supervisor=owner)

    @property
    def alive(self) -> bool:
        return self.host is not None

    # ------------------------------------------------------------------ start
    async def start(self, key: str, spec: ChildSpec) -> LightweightStart:
        """Start ``spec`` as child ``key`` on the host (created if needed). Raises what the
        host raised (``StartChildError`` through Ray's ``RayTaskError``) or ``RayError``."""
        host = await self._host()
        inc = await _within(host.start_child.remote(key, self._ship(spec.actor), spec.args,
                                                    spec.kwargs, spec.crash_on_error),
                            spec.start_timeout)
        return self._started(host, key, inc)

    async def start_many(self, items: list[tuple[str, ChildSpec]], timeout_s: float,
                         on: ActorHandle | None = None) -> list[LightweightStart | str]:
        """Start many children in a few host calls (``START_CHUNK`` children each, sent at
        once; the host is created if needed); per item, in order, its ``LightweightStart`` or
        why it did not start (the host's one-line reason). Raises ``RayError`` /
        ``asyncio.TimeoutError`` when the host fails. ``on``: only on that host (every item
        fails if it is not the host any more)."""
        if not items:
            return []
        host = await self._host()
        if on is not None and host is not on:
            return [f"its host died (now {self.last_failure})"] * len(items)
        calls = [(key, self._ship(spec.actor), spec.args, spec.kwargs, spec.crash_on_error)
                 for key, spec in items]
        parts = await asyncio.gather(*(
            _within(host.start_children.remote(calls[first:first + START_CHUNK]), timeout_s)
            for first in range(0, len(calls), START_CHUNK)))
        answers = [answer for part in parts for answer in part]
        return [answer if isinstance(answer, str) else self._started(host, key, answer)
                for (key, _), answer in zip(items, answers, strict=True)]

    async def ensure(self) -> ActorHandle:
        """The host, created now if there is none (so that no process start is on the path
        of the next start, e.g. a failover)."""
        return await self._host()

    async def expect(self, host: ActorHandle, keys: list[str]) -> None:
        """Tell ``host`` that ``keys`` are about to start there: calls to them, routed there
        once the registry names the host, wait for their start instead of failing."""
        await _within(host.expect_children.remote(keys), CALL_MARGIN_S)

    def _started(self, host: ActorHandle, key: str, inc: int) -> LightweightStart:
        loop = asyncio.get_running_loop()
        reported: asyncio.Future[str] = loop.create_future()
        exited: asyncio.Future[str] = loop.create_future()
        self._live[(key, inc)] = (reported, exited)
        early = self._early.pop((key, inc), None)
        if early is not None:
            self._resolve((key, inc), early)
        # No incarnation number here: it goes into the registry meta, which a restart on the
        # same host leaves as it is.
        info = {"pid": self.host_info.get("pid"), "node_id": self.host_info.get("node_id"),
                **route_meta(key)}
        return LightweightStart(LightweightHandle(host, key), info, reported, exited, inc)

    def _ship(self, actor: Any) -> Any:
        """The class as a :class:`ShippedClass`, pickled once per class (the host caches it)."""
        if isinstance(actor, ShippedClass):
            return actor
        shipped = self._shipped.get(actor)
        if shipped is None:
            shipped = self._shipped[actor] = ShippedClass.of(actor)
        return shipped

    async def _host(self) -> ActorHandle:
        async with self._creating:
            if self.host is None:
                options: dict[str, Any] = {}
                node_id = self.config.node_id or ray.get_runtime_context().get_node_id()
                options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_id, soft=False)
                host = LightweightHost.options(**options).remote(
                    self.owner, self.config.max_children_per_host, self.config.lag_threshold_s,
                    self.config.kill_grace_s)
                try:
                    self.host_info = await _within(host.ready.remote(), HOST_START_TIMEOUT_S)
                except BaseException:
                    ray.kill(host, no_restart=True)
                    raise
                self.host = host
                self._poller = asyncio.get_running_loop().create_task(self._poll(host))
                self._log.info("lightweight_host_started", **self.host_info)
            return self.host

    # ------------------------------------------------------------------ stop
    async def stop(self, started: LightweightStart, spec: ChildSpec, reason: str) -> str:
        """Stop one incarnation per ``spec.shutdown``; its exit reason once it is gone."""
        key, inc, host = started.handle.key, started.inc, started.handle.host
        if not started.reported.done() and self.host is host:
            grace = self.config.kill_grace_s
            try:
                if spec.shutdown == "brutal_kill":
                    outcome = await _within(host.kill_child.remote(key, inc), grace + CALL_MARGIN_S)
                else:
                    deadline = spec.shutdown_deadline_s()
                    outcome = await _within(host.stop_child.remote(key, inc, reason, deadline),
                                            deadline + grace + CALL_MARGIN_S)
            except (RayError, asyncio.TimeoutError) as exc:
                outcome = STUCK
                self._log.warning("lightweight_stop_failed", key=key, error=repr(exc))
            if outcome == STUCK:
                await self.restart_host(f"child {key!r} did not end {grace:g} s after its "
                                        f"cancellation")
        try:
            return await asyncio.wait_for(asyncio.shield(started.exited), CALL_MARGIN_S)
        except asyncio.TimeoutError:
            return KILLED

    async def restart_host(self, why: str) -> None:
        """Kill the host: all its children exit with ``"killed"``; the next start makes a new
        one."""
        host = self.host
        if host is None:
            return
        self.last_failure, self.culprit = why, None
        self._log.error("lightweight_host_restart", why=why, children=len(self._live))
        ray.kill(host, no_restart=True)
        self._host_gone(host)

    async def status(self) -> dict[str, Any]:
        """The host's status (its children's calls and memory), or why there is none."""
        if self.host is None:
            return {"host": None, "last_failure": self.last_failure}
        status: dict[str, Any] = await _within(self.host.status.remote(), CALL_MARGIN_S)
        return {**status, "last_failure": self.last_failure}

    def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
        if self.host is not None:
            ray.kill(self.host, no_restart=True)
            self._host_gone(self.host)

    # ------------------------------------------------------------------ exits
    async def _poll(self, host: ActorHandle) -> None:
        after = 0
        while self.host is host:
            try:
                events = await _within(host.next_exits.remote(after, POLL_S),
                                       POLL_S + CALL_MARGIN_S)
            except asyncio.TimeoutError:
                continue
            except RayActorError:
                self._host_died(host)
                return
            for seq, key, inc, reason in events:
                after = max(after, seq)
                if (key, inc) in self._live:
                    self._resolve((key, inc), reason)
                else:
                    self._early[(key, inc)] = reason

    def _host_died(self, host: ActorHandle) -> None:
        if self.host is not host:
            return
        why, self.culprit = "its process or node died", None
        with contextlib.suppress(Exception):
            raw = kv.get(watchdog_key(self.host_info.get("actor_id") or ""))
            if raw is not None:
                report = json.loads(raw)
                why = (f"its event loop was blocked {report['lag_s']} s by child "
                       f"{report['child']!r} (lag_threshold_s={report['threshold_s']})")
                kv.delete(watchdog_key(self.host_info.get("actor_id") or ""))
        self.last_failure = why
        self._log.error("lightweight_host_died", why=why, children=len(self._live))
        self._host_gone(host)

    def _host_gone(self, host: ActorHandle) -> None:
        if self.host is not host:
            return
        self.host = None
        live, self._live = self._live, {}
        self._early.clear()
        for reported, exited in live.values():
            for future in (reported, exited):
                if not future.done():
                    future.set_result(KILLED)

    def _resolve(self, ident: tuple[str, int], reason: str) -> None:
        futures = self._live.pop(ident, None)
        if futures is None:
            return
        for future in futures:
            if not future.done():
                future.set_result(reason)


async def _within(ref: Any, timeout_s: float) -> Any:
    async def wait() -> Any:
        return await ref
    return await asyncio.wait_for(wait(), timeout_s)
