"""Distribution strategies: which member (one per Ray node) owns each dynamic child, and the
placement decisions built on them (``placement``: eligible nodes, requirements, placing orphans,
moves). Pure, no Ray."""

from __future__ import annotations

from typing import Any

from herd.platform.errors import ConfigError

from .base import DistributionStrategy, Member, Requirements, RequirementsOf, stable_hash
from .hash_ring import DEFAULT_VNODES, HashRing, HashRingStrategy
from .least_loaded import LeastLoadedStrategy
from .placement import (
    DETERMINISTIC,
    MemberSelector,
    Placing,
    eligible_nodes,
    member_nodes,
    member_of,
    move_targets,
    place,
    requirements_of,
    selector_admits,
)
from .quorum import QuorumStrategy
from .random_choice import RandomStrategy

__all__ = [
    "DEFAULT_VNODES",
    "DETERMINISTIC",
    "STRATEGIES",
    "DistributionStrategy",
    "HashRing",
    "HashRingStrategy",
    "LeastLoadedStrategy",
    "Member",
    "MemberSelector",
    "Placing",
    "QuorumStrategy",
    "RandomStrategy",
    "Requirements",
    "RequirementsOf",
    "available_strategies",
    "eligible_nodes",
    "make_strategy",
    "member_nodes",
    "member_of",
    "move_targets",
    "place",
    "requirements_of",
    "selector_admits",
    "stable_hash",
]

#: Strategy classes by their ``name``.
STRATEGIES: dict[str, type[DistributionStrategy]] = {
    cls.name: cls
    for cls in (HashRingStrategy, RandomStrategy, LeastLoadedStrategy, QuorumStrategy)
}


def available_strategies() -> list[str]:
    """The names ``make_strategy`` accepts, sorted."""
    return sorted(STRATEGIES)


def make_strategy(name: str | DistributionStrategy, **options: Any) -> DistributionStrategy:
    """Build the strategy called ``name`` with ``options`` (an instance is returned as is).

    Raises ``ConfigError`` for an unknown name or options the strategy does not accept.
    """
    if isinstance(name, DistributionStrategy):
        if options:
            raise ConfigError("options cannot be given with a strategy instance",
                              field="distribution", value=sorted(options))
        return name
    cls = STRATEGIES.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ConfigError(f"unknown distribution strategy {name!r}; "
                          f"choices: {', '.join(available_strategies())}",
                          field="distribution", value=name)
    try:
        return cls(**options)
    except TypeError as exc:
        raise ConfigError(f"invalid options {sorted(options)} for strategy {name!r}: {exc}",
                          field="distribution", value=options) from exc
