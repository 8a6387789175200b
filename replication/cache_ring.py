"""Which nodes hold a key of a partitioned cache, and what moves when nodes join or leave
(pure: no Ray).

The holders of a key are its owner on herd's consistent-hash ring over the live nodes followed by
``backups`` more: the owner of the key on the ring without the nodes already chosen, which is the
next distinct node clockwise. A membership change moves ~1/N of the keys.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable

from herd.supervisors.strategies.hash_ring import HashRingStrategy

__all__ = ["CacheRing", "RehomePlan"]


class CacheRing:
    """Holders of keys over a set of node ids (rings are cached per node set)."""

    def __init__(self, backups: int = 1) -> None:
        self.backups = backups
        self.strategy = HashRingStrategy()

    def holders(self, key: Hashable, nodes: Iterable[str]) -> list[str]:
        """Owner first, then up to ``backups`` backups (fewer when there are fewer nodes)."""
        left = set(nodes)
        chosen: list[str] = []
        text = repr(key)
        while left and len(chosen) <= self.backups:
            owner = self.strategy.ring(left).owner(text)
            chosen.append(owner)
            left.discard(owner)
        return chosen


class RehomePlan:
    """What node ``me`` does with the keys it holds when the live nodes change from ``before``
    to ``after``: send each key to its new holders that did not hold it before (``sends``:
    node -> keys; every surviving holder sends, so a key reaches them while any holder lives)
    and forget the keys it no longer holds once they are sent (``drops``)."""

    def __init__(self, ring: CacheRing, me: str, keys: Iterable[Hashable],
                 before: Iterable[str], after: Iterable[str]) -> None:
        old, new = sorted(set(before) | {me}), sorted(set(after) | {me})
        self.sends: dict[str, list[Hashable]] = {}
        self.drops: list[Hashable] = []
        for key in keys:
            had = set(ring.holders(key, old))
            holders = ring.holders(key, new)
            for node in holders:
                if node != me and node not in had:
                    self.sends.setdefault(node, []).append(key)
            if me not in holders:
                self.drops.append(key)
