"""How many standby shells a node needs per shape under ``standby="auto"`` (pure, no Ray).

A node's pool must cover what can land on it at once: its own children's crash restarts (one at
a time for a dynamic supervisor, each child with its own budget) and the children it would take
over if another node died. ``takeovers`` answers the second with the supervisor's own placement
(``herd.supervisors.strategies.placement.place``, as the planner places orphans), one set of
child ids per other member; ``standby_needed`` turns those sets into a count per shape: the
largest takeover, at least one shell for a shape this node owns children of, at most
``cap``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Hashable, Mapping, Sequence
from typing import TypeVar

from herd.supervisors.dynamic.child_record import ChildRecord
from herd.supervisors.strategies import DistributionStrategy, Member
from herd.supervisors.strategies.placement import Placing, place

__all__ = ["standby_needed", "takeovers"]

S = TypeVar("S", bound=Hashable)


def takeovers(me: str, strategy: DistributionStrategy, records: Sequence[ChildRecord],
              members: Sequence[Member]) -> list[frozenset[str]]:
    """For each other member, the actor children ``me`` would own if that member's node
    died now."""
    sets = []
    for dead in members:
        if dead.id == me:
            continue
        orphans = {r.child_id: Placing(r.epoch, r.requirements) for r in records
                   if r.owner == dead.id and not r.lightweight}
        if not orphans:
            continue
        owners = place(strategy, orphans, [m for m in members if m.id != dead.id])
        sets.append(frozenset(c for c, owner in owners.items() if owner == me))
    return sets


def standby_needed(shapes: Mapping[str, S], own: Collection[str],
                   takeover_sets: Sequence[Collection[str]], cap: int) -> dict[S, int]:
    """Shells per shape: ``shapes`` maps child ids to their shape (children a shell cannot
    become are left out); ``own``: the children this node runs; ``takeover_sets``: what it
    would take over, per node that may die. Shapes needing none are left out."""
    needed: Counter[S] = Counter()
    for child_id in own:
        if child_id in shapes:
            needed[shapes[child_id]] = 1
    for taken in takeover_sets:
        counts = Counter(shapes[c] for c in taken if c in shapes)
        for shape, count in counts.items():
            needed[shape] = max(needed[shape], count)
    return {shape: min(count, cap) for shape, count in needed.items() if count > 0}
