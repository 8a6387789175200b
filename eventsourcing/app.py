"""``App``: an event-sourced application on a herd cluster (driver side).

    bank = App.start("bank", aggregates=[Account], store="sqlite:///var/herd/bank.db",
                     handlers=[Balances])
    bank.dispatch(Deposit(aggregate_id="a-1", amount=10))      # acknowledged once durable
    bank.query(Account, "a-1")                                  # {"version": 2, "state": {...}}

Every aggregate instance is a lightweight child of the dynamic supervisor ``<app>``, child id
``<Aggregate>:<id>``, registry name ``<app>/<Aggregate>:<id>`` (a ``/`` cannot be part of a
child id), started on the first command for its id. When its node dies the supervisor moves it
exactly once; its next command rehydrates it on the survivor. Handlers are children
``handler:<name>`` of the same supervisor (``herd.eventsourcing.handlers``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from pydantic import ValidationError
from ray import cloudpickle

from herd.eventsourcing.appspec import AppOptions, AppSpec, delete_spec, save_spec, spec_key
from herd.eventsourcing.handler_runtime import HandlerInstance
from herd.eventsourcing.handlers import Projection
from herd.eventsourcing.model import Aggregate
from herd.eventsourcing.report import handler_report
from herd.eventsourcing.router import Router
from herd.eventsourcing.store.base import EventStore
from herd.eventsourcing.store.open import open_store
from herd.eventsourcing.sync import run_sync
from herd.platform import kv, rpc
from herd.platform.errors import ConfigError
from herd.platform.logging import get_logger
from herd.platform.validation import format_validation_error
from herd.supervisors import ChildAlreadyStarted, ChildSpec, DynamicSupervisor
from herd.supervisors.errors import ChildNotFound

__all__ = ["App"]

log = get_logger("herd.eventsourcing.app")
T = TypeVar("T")


class App(Router):
    """Handle of a running event-sourced app."""

    @classmethod
    def start(cls, name: str, aggregates: Iterable[type[Aggregate]], store: str, *,
              handlers: Iterable[type] = (), timeout: float | None = None,
              **options: Any) -> App:
        """Start app ``name``: create the store's schema, record the app's classes, start its
        dynamic supervisor (one member per node ``members`` admits) and its handlers.
        ``options``: see ``AppOptions`` (``idle_timeout_s``, ``command_timeout_s``, ...)."""
        try:
            settings = AppOptions(store=store, **options)
        except ValidationError as exc:
            raise format_validation_error(exc, "App.start", AppOptions) from None
        spec = AppSpec.build(name, settings, list(aggregates), list(handlers))
        run_sync(_create_schema(settings.store), timeout or rpc.DEFAULT_TIMEOUT_S)
        save_spec(spec)
        supervisor = DynamicSupervisor.start(
            name, members=settings.members, max_restarts=10, max_seconds=5,
            lightweight={"max_children_per_host": settings.max_children_per_host},
            timeout=timeout)
        app = cls(spec, supervisor)
        for handler in spec.handlers:
            app._start_handler(handler, timeout)
        log.info("eventsourcing_app_started", app=name, aggregates=sorted(spec.aggregates),
                 handlers=sorted(spec.handlers), store=settings.store.split("@")[-1])
        return app

    @classmethod
    def get(cls, name: str) -> App:
        """The running app ``name`` (started elsewhere, e.g. by ``herd run``)."""
        raw = kv.get(spec_key(name))
        if raw is None:
            raise ConfigError("no event-sourced app of that name is running", field="app",
                              value=name)
        return cls(cloudpickle.loads(raw), DynamicSupervisor.get(name))

    def stop(self, timeout: float | None = None) -> None:
        self.supervisor.stop(timeout=timeout)
        delete_spec(self.name)

    # ------------------------------------------------------------------------ handlers
    def projections(self, timeout: float | None = None) -> list[dict[str, Any]]:
        """Each handler's position, lag behind the store's head and parking (if parked)."""
        return run_sync(handler_report(self.spec.options.store, list(self.spec.handlers)),
                        timeout or rpc.DEFAULT_TIMEOUT_S)

    def unpark(self, handler: str, timeout: float | None = None) -> None:
        """Let a parked handler retry the event it stopped at."""
        run_sync(_on_store(self.spec.options.store, lambda s: s.unpark(handler)),
                 timeout or rpc.DEFAULT_TIMEOUT_S)

    def rebuild(self, projection: str, timeout: float | None = None) -> None:
        """Rebuild a projection from position 0: stop it, empty its tables (``reset``) and set
        its checkpoint to 0 in one transaction, start it again."""
        cls = self.spec.handlers.get(projection)
        if cls is None or not issubclass(cls, Projection):
            raise ConfigError("no projection of that name in this app", field="projection",
                              value=projection)
        with contextlib.suppress(ChildNotFound):
            self.supervisor.terminate_child(f"handler:{projection}", timeout=timeout)
        instance = cls()
        run_sync(_on_store(self.spec.options.store,
                           lambda s: s.project(projection, 0, None, instance.reset)),
                 timeout or rpc.DEFAULT_TIMEOUT_S)
        run_sync(_on_store(self.spec.options.store, lambda s: s.unpark(projection)),
                 timeout or rpc.DEFAULT_TIMEOUT_S)
        self._start_handler(projection, timeout)

    def _start_handler(self, handler: str, timeout: float | None) -> None:
        spec = ChildSpec(id=f"handler:{handler}", actor=HandlerInstance,
                         args=(self.name, self.spec.generation, handler), kind="lightweight",
                         restart="permanent", crash_on_error=False)
        with contextlib.suppress(ChildAlreadyStarted):
            self.supervisor.start_child(spec, timeout=timeout)


async def _create_schema(url: str) -> None:
    store = await open_store(url)
    await store.close()


async def _on_store(url: str, work: Callable[[EventStore], Awaitable[T]]) -> T:
    store = await open_store(url)
    try:
        return await work(store)
    finally:
        await store.close()

