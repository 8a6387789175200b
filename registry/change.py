"""A planned write of a registry shard (``herd.registry.state`` plans them, the actor stores
and commits them), and the merge of several into one (group commit)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from herd.registry.records import Entry, Event, Registration


@dataclass(frozen=True)
class Change:
    """A planned write: records to store, records to delete, the events it emits, the shard's
    counter after it, and what the operation returns. A retried operation that was already
    committed plans an empty change carrying the earlier result."""

    counter: int
    puts: tuple[Entry, ...] = ()
    deletes: tuple[Registration, ...] = ()
    events: tuple[Event, ...] = ()
    result: Any = None

    @property
    def empty(self) -> bool:
        return not self.puts and not self.deletes



def merge(counter: int, changes: Sequence[Change]) -> Change:
    """One change with the effect of ``changes`` applied in order (``counter``: the shard's
    counter before them). A record put and later deleted in the group is only deleted."""
    puts: dict[int, Entry] = {}
    deletes: dict[int, Registration] = {}
    events: list[Event] = []
    for change in changes:
        for reg in change.deletes:
            puts.pop(reg.entry_id, None)
            deletes[reg.entry_id] = reg
        for entry in change.puts:
            puts[entry.registration.entry_id] = entry
        events.extend(change.events)
        counter = change.counter
    return Change(counter, tuple(puts.values()), tuple(deletes.values()), tuple(events))
