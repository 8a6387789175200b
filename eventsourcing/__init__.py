"""herd.eventsourcing: an event store (SQLite, PostgreSQL), supervised aggregates, handlers,
projections and process managers.

``App.start(name, aggregates=[...], store=URL, handlers=[...])`` runs each aggregate instance as
a lightweight child of the dynamic supervisor ``name`` (registry name
``<app>/<Aggregate>:<id>``), fenced by its registry epoch in the store; see ``app``,
``instance``, ``handlers`` and ``store``.
"""

from herd.eventsourcing.app import App
from herd.eventsourcing.codec import Event, EventCodec
from herd.eventsourcing.errors import (
    CommandRejected,
    EventSourcingError,
    Fenced,
    StoreError,
    UnknownEventType,
    WrongExpectedVersion,
)
from herd.eventsourcing.handlers import Handler, ProcessManager, Projection
from herd.eventsourcing.model import Aggregate, Command, CommandResult
from herd.eventsourcing.store.base import EventStore, ProjectionTx
from herd.eventsourcing.store.open import open_store

__all__ = ["Aggregate", "App", "Command", "CommandRejected", "CommandResult", "Event",
           "EventCodec", "EventSourcingError", "EventStore", "Fenced", "Handler",
           "ProcessManager", "Projection", "ProjectionTx", "StoreError", "UnknownEventType",
           "WrongExpectedVersion", "open_store"]
