"""Uniformly random placement among eligible members.

Named ``random_choice`` rather than ``random`` so that no module of herd can ever shadow the
standard library's ``random`` (e.g. when this folder lands on ``sys.path``).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import ClassVar

from herd.platform.errors import ConfigError

from .base import DistributionStrategy, Member

__all__ = ["RandomStrategy"]


class RandomStrategy(DistributionStrategy):
    """Uniform choice among eligible members; pass ``seed`` or ``rng`` for reproducible tests."""

    name: ClassVar[str] = "random"

    def __init__(self, seed: int | None = None, rng: random.Random | None = None) -> None:
        if seed is not None and rng is not None:
            raise ConfigError("pass either seed or rng, not both", field="seed", value=seed)
        if rng is not None and not isinstance(rng, random.Random):
            raise ConfigError("rng must be a random.Random", field="rng", value=rng)
        self.seed = seed
        self.rng: random.Random = rng if rng is not None else random.Random(seed)

    def _select(self, child_id: str, eligible: Sequence[Member]) -> Member:
        # Sorting makes a seeded choice independent of the order members were listed in.
        return self.rng.choice(sorted(eligible, key=lambda m: m.id))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(seed={self.seed!r})"
