"""Consistent hashing with virtual nodes: deterministic owners, ~1/N of children move per change."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

from herd.platform.errors import ConfigError

from .base import DistributionStrategy, Member, stable_hash

__all__ = ["DEFAULT_VNODES", "HashRing", "HashRingStrategy"]

DEFAULT_VNODES = 128
_MAX_CACHED_RINGS = 256


def _check_vnodes(vnodes: Any) -> int:
    if isinstance(vnodes, bool) or not isinstance(vnodes, int) or vnodes < 1:
        raise ConfigError("vnodes must be an int >= 1", field="vnodes", value=vnodes)
    return vnodes


class HashRing:
    """An immutable ring of ``vnodes`` points per member id."""

    __slots__ = ("member_ids", "vnodes", "_points", "_owners")

    def __init__(self, member_ids: Iterable[str], vnodes: int = DEFAULT_VNODES) -> None:
        self.member_ids: frozenset[str] = frozenset(member_ids)
        if not self.member_ids:
            raise ValueError("a hash ring needs at least one member")
        self.vnodes = _check_vnodes(vnodes)
        # Ties between equal point hashes are broken by member id, so the order is total.
        points = sorted((stable_hash(f"{mid}#{i}"), mid)
                        for mid in self.member_ids for i in range(self.vnodes))
        self._points: list[int] = [p for p, _ in points]
        self._owners: list[str] = [m for _, m in points]

    def owner(self, key: str) -> str:
        """The member id owning ``key``: the first point clockwise from the key's hash."""
        i = bisect_right(self._points, stable_hash(key))
        return self._owners[i % len(self._owners)]

    def __len__(self) -> int:
        return len(self._points)


class HashRingStrategy(DistributionStrategy):
    """Owner = consistent hash of the child id over the eligible members' ring."""

    name: ClassVar[str] = "hash_ring"

    def __init__(self, vnodes: int = DEFAULT_VNODES) -> None:
        self.vnodes = _check_vnodes(vnodes)
        self._rings: dict[frozenset[str], HashRing] = {}

    def ring(self, member_ids: Iterable[str]) -> HashRing:
        """The (cached) ring over ``member_ids``."""
        key = frozenset(member_ids)
        ring = self._rings.get(key)
        if ring is None:
            ring = HashRing(key, self.vnodes)
            if len(self._rings) >= _MAX_CACHED_RINGS:
                self._rings.clear()
            self._rings[key] = ring
        return ring

    def _select(self, child_id: str, eligible: Sequence[Member]) -> Member:
        by_id = {m.id: m for m in eligible}
        return by_id[self.ring(by_id).owner(child_id)]

    def __getstate__(self) -> dict[str, Any]:
        # The ring cache is derived data: do not ship it to Ray workers.
        return {"vnodes": self.vnodes}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.vnodes = state["vnodes"]
        self._rings = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vnodes={self.vnodes})"
