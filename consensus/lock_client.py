"""``LockClient``: one client's view of a lock in a ``Lock`` group: acquire (or renew) with a
lease, answer its fencing token; release raises ``NotLockHolder`` when this client does not
hold it (another does, or its lease ran out and someone else took it)."""

from __future__ import annotations

from herd.consensus.errors import NotLockHolder
from herd.consensus.group import Group

__all__ = ["LockClient"]


class LockClient:
    def __init__(self, group: Group, name: str, client: str) -> None:
        self.group, self.name, self.client = group, name, client

    def acquire(self, ttl: float = 10.0, timeout: float = 5.0) -> int | None:
        """The fencing token if granted (or renewed), None while another holds the lock."""
        result = self.group.command(("acquire", self.name, self.client, ttl), timeout=timeout)
        return int(result["token"]) if result["granted"] else None

    def release(self, timeout: float = 5.0) -> None:
        outcome = self.group.command(("release", self.name, self.client), timeout=timeout)
        if outcome == "not_holder":
            raise NotLockHolder(f"{self.name}: {self.client} does not hold it")
        if outcome == "expired":
            raise NotLockHolder(f"{self.name}: the lease of {self.client} had run out")
