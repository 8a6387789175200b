"""The entries of one cache replica: LRU by ``max_entries``, TTL per entry, last writer wins by
hybrid-logical-clock version (pure: no Ray; time is passed in, in wall-clock milliseconds).

A write carries its version ``(wall_ms, logical, replica)`` (an HLC timestamp as a tuple);
``merge`` applies it only when it is newer than what the replica has for the key, entry or
tombstone, so replicas that receive the same writes in any order end with the same value. A
delete leaves a tombstone for ``tombstone_ms``, so that an older write arriving late cannot
bring the value back. Eviction is local to a replica (as in Nebulex): it does not spread.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

Version = tuple[int, int, str]
DEFAULT_TOMBSTONE_MS = 60_000

__all__ = ["CacheStats", "CacheStore", "Entry", "Version"]


@dataclass(frozen=True)
class Entry:
    value: Any
    version: Version
    expires_ms: int | None  # wall-clock ms; None: no expiry

    def alive(self, now_ms: int) -> bool:
        return self.expires_ms is None or now_ms < self.expires_ms


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    expired: int = 0
    loads: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "evictions": self.evictions,
                "expired": self.expired, "loads": self.loads}


class CacheStore:
    """LRU + TTL + LWW entries of one replica (not thread-safe: its owner serialises)."""

    def __init__(self, max_entries: int | None = None,
                 tombstone_ms: int = DEFAULT_TOMBSTONE_MS) -> None:
        self.max_entries = max_entries
        self.tombstone_ms = tombstone_ms
        self.entries: OrderedDict[Hashable, Entry] = OrderedDict()
        self.tombstones: dict[Hashable, tuple[Version, int]] = {}
        self.stats = CacheStats()

    def get(self, key: Hashable, now_ms: int) -> tuple[bool, Any]:
        """``(True, value)`` for a live entry (now the most recently used), else
        ``(False, None)``; counts a hit or a miss."""
        entry = self.peek(key, now_ms)
        if entry is None:
            self.stats.misses += 1
            return False, None
        self.entries.move_to_end(key)
        self.stats.hits += 1
        return True, entry.value

    def peek(self, key: Hashable, now_ms: int) -> Entry | None:
        """The live entry of ``key`` without touching LRU order or stats (an expired one is
        removed)."""
        entry = self.entries.get(key)
        if entry is None:
            return None
        if not entry.alive(now_ms):
            del self.entries[key]
            self.stats.expired += 1
            return None
        return entry

    def version_of(self, key: Hashable, now_ms: int) -> Version | None:
        """The newest version this replica knows of ``key`` (entry or live tombstone)."""
        entry = self.entries.get(key)
        tomb = self.tombstones.get(key)
        if tomb is not None and tomb[1] <= now_ms:
            del self.tombstones[key]
            tomb = None
        versions = [v for v in (entry.version if entry else None, tomb[0] if tomb else None)
                    if v is not None]
        return max(versions) if versions else None

    def merge(self, key: Hashable, entry: Entry | None, version: Version, now_ms: int) -> bool:
        """Apply a write (``entry``) or a delete (``None``) stamped ``version`` unless this
        replica already has a newer or equal one; True when it changed something."""
        known = self.version_of(key, now_ms)
        if known is not None and version <= known:
            return False
        if entry is None:
            self.entries.pop(key, None)
            self.tombstones[key] = (version, now_ms + self.tombstone_ms)
            return True
        self.tombstones.pop(key, None)
        self.entries[key] = entry
        self.entries.move_to_end(key)
        self._evict()
        return True

    def _evict(self) -> None:
        while self.max_entries is not None and len(self.entries) > self.max_entries:
            self.entries.popitem(last=False)
            self.stats.evictions += 1

    def drop(self, key: Hashable) -> None:
        """Forget ``key`` here without a tombstone (it moved to other replicas)."""
        self.entries.pop(key, None)

    def live_items(self, now_ms: int) -> list[tuple[Hashable, Entry]]:
        return [(key, entry) for key, entry in self.entries.items() if entry.alive(now_ms)]

    def tombstone_items(self, now_ms: int) -> list[tuple[Hashable, Version]]:
        return [(key, version) for key, (version, until) in self.tombstones.items()
                if until > now_ms]

    def __len__(self) -> int:
        return len(self.entries)
