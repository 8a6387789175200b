"""``AppLauncher``: an actor child that starts an event-sourced app, so an app YAML run by
``herd run`` can hold one (the YAML names import paths; the supervisors layer stays unaware
of event sourcing)::

    supervisors:
      - kind: static
        name: bank-launcher
        children:
          - id: bank
            actor: "herd.eventsourcing.launcher:AppLauncher"
            kwargs:
              name: bank
              store: "sqlite:///tmp/herd/bank.db"
              aggregates: ["herd.eventsourcing.examples.bank:Account"]
              handlers: ["herd.eventsourcing.examples.bank:Balances"]

Stopping the launcher (``herd stop``) stops the app's dynamic supervisor; the events stay in
the store.
"""

from __future__ import annotations

from typing import Any

from herd.eventsourcing.app import App
from herd.platform.errors import ConfigError
from herd.supervisors.otp.classes import resolve_actor

__all__ = ["AppLauncher"]


def _classes(paths: list[str], field: str) -> list[type]:
    found = []
    for path in paths:
        try:
            found.append(resolve_actor(path))
        except ValueError as exc:
            raise ConfigError(str(exc), field=field, value=path) from None
    return found  # type: ignore[return-value]


class AppLauncher:
    """Starts app ``name`` in its constructor; ``stop`` (its ``terminate``) stops it."""

    def __init__(self, name: str, store: str, aggregates: list[str],
                 handlers: list[str] | None = None, options: dict[str, Any] | None = None
                 ) -> None:
        self.app = App.start(name, aggregates=_classes(aggregates, "aggregates"), store=store,
                             handlers=_classes(handlers or [], "handlers"), **(options or {}))

    def status(self) -> dict[str, Any]:
        return {"app": self.app.name, "projections": self.app.projections()}

    def terminate(self, reason: str) -> None:
        self.app.stop()
