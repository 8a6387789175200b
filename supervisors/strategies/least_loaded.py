"""Placement on the member owning the fewest children."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from .base import DistributionStrategy, Member

__all__ = ["LeastLoadedStrategy"]


class LeastLoadedStrategy(DistributionStrategy):
    """Fewest ``load`` wins; ties go to the smallest member id (deterministic).

    ``owners`` counts each assignment it makes, so a batch spreads evenly.
    """

    name: ClassVar[str] = "least_loaded"
    load_aware: ClassVar[bool] = True

    def _select(self, child_id: str, eligible: Sequence[Member]) -> Member:
        return min(eligible, key=lambda m: (m.load, m.id))
