"""The one running instance of a named handler: a lightweight child ``handler:<name>`` of the
app's supervisor (permanent: restarted on a crash, moved when its node dies). Its ``run`` loop
follows the store from the handler's checkpoint (see ``handlers`` for the guarantees of each
kind) and parks the handler after its retries."""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from typing import Any

from herd.eventsourcing.appspec import AppSpec, load_spec
from herd.eventsourcing.codec import event_type_of
from herd.eventsourcing.handlers import Handler, ProcessManager, Projection
from herd.eventsourcing.policy import HandlerRetry
from herd.eventsourcing.router import Router
from herd.eventsourcing.store.base import EventStore, ProjectionTx
from herd.eventsourcing.store.open import shared_store
from herd.eventsourcing.store.records import Parked, RecordedEvent
from herd.platform.logging import get_logger
from herd.supervisors import DynamicSupervisor

__all__ = ["HandlerInstance"]

log = get_logger("herd.eventsourcing.handlers")
PARKED_POLL_S = 0.5


class HandlerInstance:
    def __init__(self, app: str, generation: str, handler: str) -> None:
        self.app, self.generation, self.handler_name = app, generation, handler
        self.position = 0
        self.handled = 0

    async def status(self) -> dict[str, Any]:
        return {"position": self.position, "handled": self.handled}

    async def run(self) -> None:
        spec = await load_spec(self.app, self.generation)
        store = await shared_store(spec.options.store)
        handler = spec.handlers[self.handler_name]()
        interest = ({event_type_of(e) for e in handler.events}
                    if handler.events is not None else None)
        retry = HandlerRetry(spec.options.handler_retries, spec.options.handler_backoff_s)
        self.position, state = await store.checkpoint(self.handler_name)
        if isinstance(handler, ProcessManager) and state:
            handler.restore(json.loads(state))
        dispatcher = _Dispatcher(spec) if isinstance(handler, ProcessManager) else None
        while True:
            await self._wait_unparked(store)
            batch = await store.read_all(self.position, spec.options.handler_batch)
            wanted = [e for e in batch if interest is None or e.type in interest]
            if not batch:
                await asyncio.sleep(0.02)
                continue
            if not wanted:  # nothing of interest: only the checkpoint moves
                await store.save_checkpoint(self.handler_name, batch[-1].position,
                                            _state_of(handler))
                self.position = batch[-1].position
                continue
            if isinstance(handler, Projection) and await self._project_batch(
                    spec, store, handler, wanted, batch[-1].position):
                continue
            for recorded in wanted:
                if not await self._one(spec, store, handler, recorded, retry, dispatcher):
                    break
            else:
                if self.position < batch[-1].position:
                    await store.save_checkpoint(self.handler_name, batch[-1].position,
                                                _state_of(handler))
                    self.position = batch[-1].position

    async def _project_batch(self, spec: AppSpec, store: EventStore, projection: Projection,
                             events: list[RecordedEvent], last: int) -> bool:
        """The whole batch in one transaction with the checkpoint; False if it failed (then
        the events are taken one at a time, to retry and park the one that fails)."""
        def apply(tx: ProjectionTx) -> None:
            for recorded in events:
                projection.project(spec.codec.decode(recorded), recorded, tx)
        try:
            await store.project(self.handler_name, last, None, apply)
        except Exception:
            return False
        self.position = last
        self.handled += len(events)
        return True

    async def _one(self, spec: AppSpec, store: EventStore, handler: Any,
                   recorded: RecordedEvent, retry: HandlerRetry,
                   dispatcher: _Dispatcher | None) -> bool:
        """Handle one event (with its retries); False once the handler is parked on it."""
        while True:
            try:
                await self._attempt(spec, store, handler, recorded, dispatcher)
                retry.succeeded()
                self.handled += 1
                return True
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                wait = retry.failed(recorded.position)
                log.warning("handler_failed", app=self.app, handler=self.handler_name,
                            position=recorded.position, attempt=retry.attempts, error=error)
                if wait is None:
                    await store.park(Parked(self.handler_name, recorded.position, error,
                                            retry.attempts, time.time()))
                    retry.succeeded()
                    log.error("handler_parked", app=self.app, handler=self.handler_name,
                              position=recorded.position, error=error)
                    return False
                await asyncio.sleep(wait)

    async def _attempt(self, spec: AppSpec, store: EventStore, handler: Any,
                       recorded: RecordedEvent, dispatcher: _Dispatcher | None) -> None:
        event = spec.codec.decode(recorded)
        if isinstance(handler, Projection):
            await store.project(self.handler_name, recorded.position, None,
                                lambda tx: handler.project(event, recorded, tx))
            self.position = recorded.position
            return
        if isinstance(handler, ProcessManager) and dispatcher is not None:
            before = handler.snapshot()
            try:
                commands = handler.react(event, recorded)
                for i, command in enumerate(commands):
                    key = f"{self.handler_name}:{recorded.position}:{i}"
                    await dispatcher.dispatch(command.model_copy(update={
                        "idempotency_key": key,
                        "causation_id": recorded.meta().get("idempotency_key"),
                        "correlation_id": recorded.meta().get("correlation_id")}))
            except BaseException:
                handler.restore(before)  # react again from the same state on the retry
                raise
        elif isinstance(handler, Handler):
            result = handler.handle(event, recorded)
            if inspect.isawaitable(result):
                await result
        await store.save_checkpoint(self.handler_name, recorded.position, _state_of(handler))
        self.position = recorded.position

    async def _wait_unparked(self, store: EventStore) -> None:
        while any(p.handler == self.handler_name for p in await store.parked()):
            await asyncio.sleep(PARKED_POLL_S)


class _Dispatcher:
    """A process manager's way to the app's aggregates (``Router.dispatch`` in a thread)."""

    def __init__(self, spec: AppSpec) -> None:
        self.spec = spec
        self._app: Any = None

    async def dispatch(self, command: Any) -> Any:
        return await asyncio.to_thread(self._dispatch, command)

    def _dispatch(self, command: Any) -> Any:
        if self._app is None:
            self._app = Router(self.spec, DynamicSupervisor.get(self.spec.name))
        return self._app.dispatch(command)


def _state_of(handler: Any) -> str | None:
    return json.dumps(handler.snapshot()) if isinstance(handler, ProcessManager) else None


