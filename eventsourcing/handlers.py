"""Event handlers, projections and process managers (what a user writes).

Each is a class with a cluster-wide ``name``: exactly one instance of it runs (a child of the
app's supervisor, moved when its node dies), reading every event in global order from its
durable checkpoint. ``events`` limits what it is given (default: every event of the app's
aggregates); an event of a listed type that cannot be decoded is an error like any other.

* ``Handler.handle(event, recorded)``: at-least-once (its checkpoint is saved after the
  handling, so an event handled just before a crash is handed again); may be ``async``.
* ``Projection.project(event, recorded, tx)``: writes with ``tx.execute(sql, params)`` into the
  store's database, in the same transaction as its checkpoint: exactly-once effect.
  ``reset(tx)`` empties its tables for a rebuild (``App.rebuild(name)``).
* ``ProcessManager.react(event, recorded) -> list[Command]``: the commands it dispatches; its
  state (``snapshot()``/``restore()``) is saved with its checkpoint. Each command gets the
  idempotency key ``<name>:<position>:<i>``, so a re-delivered event never acts twice.

A handler that raises is retried with backoff (``handler_retries``, ``handler_backoff_s``),
then parked: it stops at that position and records the error (``herd events projections``,
``App.parked()``) until ``App.unpark(name)``; nothing is skipped.
"""

from __future__ import annotations

from typing import Any, ClassVar

from herd.eventsourcing.codec import Event
from herd.eventsourcing.model import Command
from herd.eventsourcing.store.base import ProjectionTx
from herd.eventsourcing.store.records import RecordedEvent

__all__ = ["Handler", "ProcessManager", "Projection"]


class _Base:
    name: ClassVar[str] = ""
    events: ClassVar[tuple[type[Event], ...] | None] = None


class Handler(_Base):
    def handle(self, event: Event, recorded: RecordedEvent) -> Any:
        raise NotImplementedError(f"{type(self).__name__}.handle")


class Projection(_Base):
    def project(self, event: Event, recorded: RecordedEvent, tx: ProjectionTx) -> None:
        raise NotImplementedError(f"{type(self).__name__}.project")

    def reset(self, tx: ProjectionTx) -> None:
        """Empty the projection's tables (called by ``App.rebuild``)."""


class ProcessManager(_Base):
    def react(self, event: Event, recorded: RecordedEvent) -> list[Command]:
        raise NotImplementedError(f"{type(self).__name__}.react")

    def snapshot(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def restore(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)
