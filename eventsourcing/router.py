"""Commands to an app's aggregates: validation, routing to the instance of each id (started
on first use), retries while it starts, moves or was replaced (see ``app``)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError
from ray.exceptions import ActorDiedError, ActorUnavailableError

from herd.eventsourcing.appspec import AppSpec
from herd.eventsourcing.errors import CommandRejected, Fenced, WrongExpectedVersion
from herd.eventsourcing.instance import AggregateInstance, child_id
from herd.eventsourcing.model import Aggregate, Command, CommandResult
from herd.eventsourcing.policy import backoff_s
from herd.platform import rpc
from herd.platform.errors import ConfigError, HerdError, HerdTimeoutError
from herd.platform.validation import format_validation_error
from herd.platform.waiting import time_left
from herd.registry import Registry
from herd.registry.connection import named
from herd.registry.errors import NotRegistered
from herd.supervisors import ChildAlreadyStarted, ChildSpec, DynamicSupervisor
from herd.supervisors.errors import ChildNotFound
from herd.supervisors.fencing import Superseded
from herd.supervisors.lightweight import ROUTE_METHOD
from herd.supervisors.lightweight.batching import loop_batcher

__all__ = ["RETRYABLE", "Router"]

#: Errors after which a command is sent again (it carries an idempotency key, so a retry
#: never appends twice): the instance is moving, passivated, or was replaced.
RETRYABLE = (ChildNotFound, Fenced, Superseded, WrongExpectedVersion, ActorDiedError,
             ActorUnavailableError)
RETRY_BASE_S = 0.02
#: How long a command whose aggregate's holder died waits for the supervisor to register its
#: new holder (a failover moves it) before starting the aggregate itself.
MOVE_WAIT_S = 3.0
#: The most aggregates remembered as moving (their dead holder) at once.
MOVING_MAX = 100_000


class Router:
    """Sends commands and queries of app ``spec.name`` to its aggregate instances."""

    def __init__(self, spec: AppSpec, supervisor: DynamicSupervisor) -> None:
        self.spec = spec
        self.name = spec.name
        self.supervisor = supervisor
        self.registry = Registry.get(supervisor.config.registry)
        self._moving: dict[str, Any] = {}  # name -> the handle of its holder that died

    # ------------------------------------------------------------------------ commands
    def command(self, data: Command | dict[str, Any]) -> Command:
        """``data`` as a command of this app: a ``Command`` it routes, or a dict with its
        class name under ``"type"``. ``CommandRejected`` if it does not validate."""
        if isinstance(data, Command):
            if type(data) not in self.spec.routes:
                raise ConfigError("no aggregate of this app handles that command",
                                  field="command", value=type(data).__name__)
            command = data
        elif isinstance(data, dict):
            values = dict(data)
            type_name = values.pop("type", None)
            matches = [c for c in self.spec.routes if c.__name__ == type_name]
            if not matches:
                raise CommandRejected(str(type_name), "UnknownCommand",
                                      f"no aggregate of app {self.name!r} handles it")
            try:
                command = matches[0].model_validate(values)
            except ValidationError as exc:
                raise CommandRejected(str(type_name), "ValidationError",
                                      str(format_validation_error(exc, str(type_name),
                                                                  matches[0]))) from None
        else:
            raise ConfigError("a command is a Command or a dict", field="command", value=data)
        if command.idempotency_key is None:
            command = command.model_copy(update={"idempotency_key": uuid.uuid4().hex})
        return command

    def name_of(self, command: Command) -> str:
        return f"{self.name}/{child_id(self.spec.routes[type(command)], command.aggregate_id)}"

    def dispatch(self, command: Command | dict[str, Any],
                 timeout: float | None = None) -> CommandResult:
        """Run ``command`` on its aggregate; its ``CommandResult`` once its events are durable.
        ``CommandRejected`` if the aggregate refused it; retried (same idempotency key) while
        its aggregate is starting, moving or was replaced, up to ``timeout``."""
        command = self.command(command)
        deadline = time.monotonic() + (timeout or self.spec.options.command_timeout_s)
        attempt = 0
        while True:
            try:
                return rpc.get(self._submit(command, "handle", deadline),
                               timeout=time_left(deadline),
                               what=f"command to {command.aggregate_id}")
            except RETRYABLE as exc:
                attempt = self._retry_wait(command, exc, attempt, deadline)
                time.sleep(backoff_s(attempt, RETRY_BASE_S, 0.5))

    async def dispatch_async(self, command: Command | dict[str, Any],
                             timeout: float | None = None) -> CommandResult:
        """``dispatch`` for asyncio code (many commands in flight from one driver)."""
        command = self.command(command)
        deadline = time.monotonic() + (timeout or self.spec.options.command_timeout_s)
        attempt = 0
        while True:
            try:
                answer = await self._asubmit(command, "handle", deadline)
                return await asyncio.wait_for(answer, time_left(deadline))
            except asyncio.TimeoutError:
                raise HerdTimeoutError(f"command to {command.aggregate_id}: no answer in "
                                       f"time") from None
            except RETRYABLE as exc:
                moved = False
                if _stale_record(exc):
                    name = self._name(command)
                    record = await self.registry.aio.entry(name, timeout=time_left(deadline))
                    self._forget(name, record)
                    moved = self._note_move(name, record, exc)
                attempt = self._next_attempt(command, exc, attempt, deadline)
                if not moved:  # a moved aggregate's next attempt waits for its new holder
                    await asyncio.sleep(backoff_s(attempt, RETRY_BASE_S, 0.5))

    def query(self, aggregate: type[Aggregate] | str, aggregate_id: str,
              timeout: float | None = None) -> dict[str, Any]:
        """The state and version of one aggregate (started and rehydrated if needed)."""
        type_name = aggregate if isinstance(aggregate, str) else aggregate.__name__
        deadline = time.monotonic() + (timeout or self.spec.options.command_timeout_s)
        probe = _Probe(type_name, aggregate_id)
        attempt = 0
        while True:
            try:
                return rpc.get(self._submit(probe, "query", deadline),
                               timeout=time_left(deadline), what=f"query {aggregate_id}")
            except RETRYABLE as exc:
                attempt = self._retry_wait(probe, exc, attempt, deadline)
                time.sleep(backoff_s(attempt, RETRY_BASE_S, 0.5))

    def start_aggregates(self, aggregate: type[Aggregate], ids: Iterable[str],
                         timeout: float | None = None) -> int:
        """Start the instances of many ids at once (one registry batch); how many started."""
        specs = [self._spec(aggregate.__name__, i) for i in ids]
        results = self.supervisor.start_children(specs, timeout=timeout)
        return sum(1 for r in results if not isinstance(r, HerdError)
                   or isinstance(r, ChildAlreadyStarted))

    # ------------------------------------------------------------------------ routing
    def _submit(self, target: Command | _Probe, method: str, deadline: float) -> Any:
        name = self._name(target)
        ref = self._call(target, method,
                         self.registry.entry(name, timeout=time_left(deadline)))
        if ref is None:
            self._start_instance(*_target(self, target), deadline)
            raise ChildNotFound(f"{name} is starting")
        return ref

    async def _asubmit(self, target: Command | _Probe, method: str,
                       deadline: float) -> asyncio.Future[Any]:
        """``_submit`` without blocking the event loop: neither on a registry lookup nor on
        the start of an instance (thousands of commands in flight while their aggregates
        move must not wait for each other); the call goes out coalesced with the others in
        flight to the same host (``HostBatcher``)."""
        name = self._name(target)
        if name in self._moving:
            record = await self._new_holder(name, self._moving.pop(name), deadline)
        elif self.registry.cached(name):  # a dict read: no coroutine needed
            record = self.registry.entry(name)
        else:
            record = await self.registry.aio.entry(name, timeout=time_left(deadline))
        if _routable(record):
            return loop_batcher().call(record.handle, record.meta.get("route_key"), method,
                                        _args(target), {}, time_left(deadline))
        await rpc.blocking(self._start_instance, *_target(self, target), deadline)
        raise ChildNotFound(f"{name} is starting")

    def _note_move(self, name: str, record: Any, exc: BaseException) -> bool:
        """After ``exc``: True when the aggregate's holder died (its next attempt then waits
        for the holder the supervisor's failover registers, or finds it registered already),
        False when the retry should back off."""
        if not isinstance(exc, ActorDiedError):
            return False
        if _routable(record) and record.handle._actor_id.hex() != exc.actor_id:
            return True  # the record looked up now names another holder: try it at once
        if len(self._moving) >= MOVING_MAX:
            self._moving.pop(next(iter(self._moving)))
        self._moving[name] = record.handle if _routable(record) else None
        return True

    async def _new_holder(self, name: str, dead: Any, deadline: float) -> Any:
        """The record of ``name``'s next holder (not ``dead``; None: any) once registered;
        None if none is within ``MOVE_WAIT_S`` (the caller then starts the aggregate)."""
        try:
            return await self.registry.aio.wait_for(
                name, exclude=dead, timeout=min(MOVE_WAIT_S, time_left(deadline)))
        except NotRegistered:
            return None

    def _name(self, target: Command | _Probe) -> str:
        type_name, aggregate_id = _target(self, target)
        return f"{self.name}/{child_id(type_name, aggregate_id)}"

    def _call(self, target: Command | _Probe, method: str, record: Any) -> Any:
        """Send ``method`` to the instance ``record`` names; None if there is none (the caller
        starts it)."""
        if not _routable(record):
            return None
        return getattr(record.handle, ROUTE_METHOD).remote(record.meta.get("route_key"), method,
                                                           _args(target), {})

    def _start_instance(self, type_name: str, aggregate_id: str, deadline: float) -> None:
        with contextlib.suppress(ChildAlreadyStarted):
            self.supervisor.start_child(self._spec(type_name, aggregate_id),
                                        timeout=time_left(deadline))

    def _spec(self, type_name: str, aggregate_id: str) -> ChildSpec:
        return ChildSpec(id=child_id(type_name, aggregate_id), actor=AggregateInstance,
                         args=(self.name, self.spec.generation, type_name, aggregate_id),
                         kind="lightweight", restart="transient", crash_on_error=False)

    def _retry_wait(self, target: Command | _Probe, exc: BaseException, attempt: int,
                    deadline: float) -> int:
        """Forget a stale record; raise once the deadline has passed."""
        if _stale_record(exc):
            name = self._name(target)
            self._forget(name, self.registry.entry(name, timeout=time_left(deadline)))
        return self._next_attempt(target, exc, attempt, deadline)

    def _forget(self, name: str, record: Any) -> None:
        """Drop ``record`` from the lookup cache: the next lookup asks the registry."""
        if _routable(record):
            named(self.registry.name).invalidate(name, record.handle)

    def _next_attempt(self, target: Command | _Probe, exc: BaseException, attempt: int,
                      deadline: float) -> int:
        """The next attempt's number; ``HerdTimeoutError`` once the deadline has passed."""
        if time.monotonic() >= deadline:
            raise HerdTimeoutError(f"{type(target).__name__} for {_target(self, target)[1]!r} "
                                   f"not answered in time (last: {type(exc).__name__}: "
                                   f"{exc})") from None
        return attempt + 1

def _routable(record: Any) -> bool:
    """A record with a holder to send to (else the instance must be started)."""
    return record is not None and getattr(record, "handle", None) is not None


def _args(target: Any) -> tuple[Any, ...]:
    """A command travels to its instance; a query's probe does not."""
    return (target,) if isinstance(target, Command) else ()


def _stale_record(exc: BaseException) -> bool:
    """A holder seen dead, or a host that no longer runs the child (passivated, moved): the
    cached record is stale."""
    return isinstance(exc, (ActorDiedError, ActorUnavailableError, ChildNotFound))


class _Probe:
    """A query's target (a query has no command)."""

    def __init__(self, type_name: str, aggregate_id: str) -> None:
        self.type_name, self.aggregate_id = type_name, aggregate_id


def _target(app: Router, target: Command | _Probe) -> tuple[str, str]:
    if isinstance(target, _Probe):
        return target.type_name, target.aggregate_id
    return app.spec.routes[type(target)], target.aggregate_id
