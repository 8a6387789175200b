"""Majority quorum over a static member list, with hash-ring placement.

A side of a partition may place and run children only while its live members form a strict
majority of the *static* list (never of the shrinking live list), so at most one side of any split
keeps running. With ``size=N`` every live member counts, so the guarantee holds only while the
cluster never holds more than ``N`` distinct members; prefer an explicit ``members`` list.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import ClassVar

from herd.platform.errors import ConfigError

from .base import DistributionStrategy, Member, Requirements, RequirementsOf
from .hash_ring import DEFAULT_VNODES, HashRingStrategy

__all__ = ["QuorumStrategy"]


class QuorumStrategy(DistributionStrategy):
    """Places with the hash ring over live static members; ``NoQuorum`` without a majority."""

    name: ClassVar[str] = "quorum"

    def __init__(self, members: Sequence[str] | None = None, size: int | None = None,
                 vnodes: int = DEFAULT_VNODES) -> None:
        if (members is None) == (size is None):
            raise ConfigError("quorum needs exactly one of members (static ids) or size",
                              field="members", value={"members": members, "size": size})
        self.static_members: frozenset[str] | None = None
        self.size: int
        if members is not None:
            if isinstance(members, (str, bytes)) or not isinstance(members, Sequence):
                raise ConfigError("members must be a sequence of member ids",
                                  field="members", value=members)
            ids = list(members)
            bad = [m for m in ids if not isinstance(m, str) or not m]
            if not ids or bad:
                raise ConfigError("members must be a non-empty list of non-empty string ids",
                                  field="members", value=members)
            duplicates = sorted({m for m in ids if ids.count(m) > 1})
            if duplicates:
                raise ConfigError(f"duplicate member ids {duplicates}",
                                  field="members", value=members)
            self.static_members = frozenset(ids)
            self.size = len(ids)
        else:
            if isinstance(size, bool) or not isinstance(size, int) or size < 1:
                raise ConfigError("size must be an int >= 1", field="size", value=size)
            self.size = size
        self._ring = HashRingStrategy(vnodes)

    @property
    def vnodes(self) -> int:
        """Virtual nodes per member of the placement ring."""
        return self._ring.vnodes

    @property
    def majority(self) -> int:
        """How many live static members make a quorum: ``size // 2 + 1``."""
        return self.size // 2 + 1

    def voters(self, members: Sequence[Member]) -> list[Member]:
        """The live members that count towards quorum (and may own children)."""
        unique = self.eligible(members)
        if self.static_members is None:
            return unique
        return [m for m in unique if m.id in self.static_members]

    def has_quorum(self, members: Sequence[Member]) -> bool:
        """True iff the live static members are a strict majority of the static list."""
        return 2 * len(self.voters(members)) > self.size

    def choose(self, child_id: str, members: Sequence[Member],
               requirements: Requirements | None = None) -> Member:
        """Hash-ring owner among live static members; ``NoQuorum`` / ``PlacementError`` else."""
        return super().choose(child_id, self.voters(members), requirements)

    def owners(self, child_ids: Iterable[str], members: Sequence[Member],
               requirements_of: RequirementsOf = None) -> dict[str, str]:
        """Map every child id to its owner among live static members (raises like ``choose``)."""
        return super().owners(child_ids, self.voters(members), requirements_of)

    def _select(self, child_id: str, eligible: Sequence[Member]) -> Member:
        return self._ring._select(child_id, eligible)

    def __repr__(self) -> str:
        if self.static_members is not None:
            return f"{type(self).__name__}(members={sorted(self.static_members)})"
        return f"{type(self).__name__}(size={self.size})"
