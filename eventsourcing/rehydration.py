"""The rules of an aggregate instance's state (pure: no Ray, no I/O).

* rehydration: restore the latest snapshot (state, version and the idempotency window), then
  apply every later event in version order; a gap or a repeat in versions is an error;
* idempotency: the keys of the commands an aggregate accepted, with their results, for the
  last ``capacity`` keyed commands; kept in each event's metadata and in snapshots, so a new
  instance (after passivation or a failover) still answers a retry from the record;
* snapshots: due every ``snapshot_every`` events.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from herd.eventsourcing.codec import Event
from herd.eventsourcing.model import Aggregate, CommandResult

__all__ = ["AggregateState", "IdempotencyWindow", "snapshot_due"]

DEFAULT_WINDOW = 1000


class IdempotencyWindow:
    """The results of the last ``capacity`` keyed commands, by key (oldest dropped first)."""

    def __init__(self, capacity: int = DEFAULT_WINDOW) -> None:
        self.capacity = capacity
        self._results: OrderedDict[str, CommandResult] = OrderedDict()

    def get(self, key: str | None) -> CommandResult | None:
        return None if key is None else self._results.get(key)

    def remember(self, key: str | None, result: CommandResult) -> None:
        if key is None:
            return
        self._results[key] = result
        self._results.move_to_end(key)
        while len(self._results) > self.capacity:
            self._results.popitem(last=False)

    def __len__(self) -> int:
        return len(self._results)

    def dump(self) -> list[dict[str, Any]]:
        return [{"key": k, **r.model_dump(mode="json")} for k, r in self._results.items()]

    def load(self, items: Iterable[dict[str, Any]]) -> None:
        for item in items:
            values = dict(item)
            key = str(values.pop("key"))
            self.remember(key, CommandResult.model_validate(values))


@dataclass
class AggregateState:
    """One aggregate instance: the user's object, its version and what it remembers."""

    aggregate: Aggregate
    version: int = 0
    snapshot_version: int = 0
    window: IdempotencyWindow = field(default_factory=IdempotencyWindow)

    def restore(self, version: int, state_json: str) -> None:
        """Start from a snapshot taken at ``version``."""
        state = json.loads(state_json)
        self.aggregate.restore(state["state"])
        self.window.load(state.get("idempotency", ()))
        self.version = self.snapshot_version = version

    def snapshot_json(self) -> str:
        return json.dumps({"state": self.aggregate.snapshot(), "idempotency": self.window.dump()},
                          separators=(",", ":"))

    def replay(self, version: int, event: Event, metadata: dict[str, Any],
               position: int) -> None:
        """Apply a stored event; ``version`` must be the next one."""
        if version != self.version + 1:
            raise ValueError(f"aggregate {self.aggregate.id!r}: event version {version} after "
                             f"version {self.version}")
        self.aggregate.apply(event)
        self.version = version
        key = metadata.get("idempotency_key")
        if isinstance(key, str) and metadata.get("last_of_command", True):
            self.window.remember(key, CommandResult(
                aggregate_id=self.aggregate.id, version=version,
                events=tuple(metadata.get("command_events", ())), position=position))

    def accepted(self, events: list[Event], first_version: int) -> None:
        """Apply the events of a command once they are durable."""
        if first_version != self.version + 1:
            raise ValueError(f"aggregate {self.aggregate.id!r}: appended at {first_version} "
                             f"after version {self.version}")
        for event in events:
            self.aggregate.apply(event)
        self.version += len(events)


def snapshot_due(version: int, snapshot_version: int, every: int) -> bool:
    return every > 0 and version - snapshot_version >= every
