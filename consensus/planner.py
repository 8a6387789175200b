"""What the leader of a group does to keep its size without an operator (pure): restart a
member whose process died on a live node (it recovers from its log), remove a voter whose node
died, add a fresh learner on a node that hosts no member, promote a learner once it caught up.
One membership change at a time (the Raft core refuses a second one anyway)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = ["Action", "MemberView", "plan"]


@dataclass(frozen=True)
class MemberView:
    id: str
    node_id: str
    voter: bool
    node_alive: bool
    process_alive: bool
    match: int


@dataclass(frozen=True)
class Action:
    kind: Literal["restart", "remove", "add_learner", "promote"]
    member: str
    node_id: str = ""


def plan(members: Sequence[MemberView], leader: str, commit: int, replicas: int,
         free_nodes: Sequence[str], next_id: str, catch_up_lag: int,
         regions: Mapping[str, str] | None = None) -> list[Action]:
    """The actions for this round (restarts, and at most one membership change)."""
    actions = [Action("restart", m.id, m.node_id) for m in members
               if m.id != leader and m.node_alive and not m.process_alive]
    dead = [m for m in members if m.id != leader and not m.node_alive]
    learners = [m for m in members if not m.voter and m.node_alive]
    voters = [m for m in members if m.voter]
    if dead:
        return [*actions, Action("remove", sorted(dead, key=lambda m: m.voter)[0].id)]
    for learner in learners:
        caught_up = learner.process_alive and learner.match + catch_up_lag >= commit
        if caught_up and len(voters) < replicas:
            return [*actions, Action("promote", learner.id)]
    if len(voters) + len(learners) < replicas and free_nodes:
        used = {(regions or {}).get(m.node_id) for m in members}
        spread = sorted(free_nodes, key=lambda n: ((regions or {}).get(n) in used, n))
        return [*actions, Action("add_learner", next_id, spread[0])]
    return actions
