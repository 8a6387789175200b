"""Write-through persistence of one registry shard in the GCS KV store (``herd.platform.kv``).

Layout under ``registry/<name>/<shard>/``: ``e/<entry_id>`` one pickled :class:`Entry` per
record (with its actor handle), ``hw`` the counter's high-water mark, ``s/<id>`` the actor
subscriptions. A change is written before it is acknowledged. Before any record is deleted the
high-water mark is raised to the counter after the change, so the counter recovered on restart
-- ``max(hw, every stored epoch)`` -- is never below an epoch or event number handed out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from herd.platform import kv
from herd.registry.layout import shard_prefix
from herd.registry.records import Entry
from herd.registry.state import Change


@dataclass(frozen=True)
class Subscription:
    """An actor subscribed to a shard's events: ``getattr(handle, method).remote(event)``."""

    sub_id: str
    handle: Any
    method: str
    prefix: str


class ShardStore:
    def __init__(self, name: str, shard: int) -> None:
        self._prefix = shard_prefix(name, shard)

    def load(self) -> tuple[list[Entry], int]:
        """Every stored record and the high-water mark."""
        entries = [kv.get_object(k) for k in kv.keys(self._prefix + "e/")]
        return [e for e in entries if e is not None], int(kv.get_object(self._prefix + "hw", 0))

    def write(self, change: Change) -> None:
        if change.deletes:
            kv.put_object(self._prefix + "hw", change.counter)
        for entry in change.puts:
            kv.put_object(f"{self._prefix}e/{entry.registration.entry_id}", entry)
        for reg in change.deletes:
            kv.delete(f"{self._prefix}e/{reg.entry_id}")

    def subscriptions(self) -> list[Subscription]:
        found = [kv.get_object(k) for k in kv.keys(self._prefix + "s/")]
        return [s for s in found if s is not None]

    def put_subscription(self, sub: Subscription) -> None:
        kv.put_object(f"{self._prefix}s/{sub.sub_id}", sub)

    def delete_subscription(self, sub_id: str) -> None:
        kv.delete(f"{self._prefix}s/{sub_id}")
