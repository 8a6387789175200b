"""Placement decisions of a distributed dynamic supervisor on top of a strategy (pure, no Ray).

* ``member_nodes``: which nodes run a member (the ``members`` selector);
* ``eligible_nodes``: which of them own children (draining nodes left out, and the head rule
  below);
* ``requirements_of``: what a child needs from a member's node (labels, resources);
* ``place``: an owner for each child to (re)place, the same answer on every member;
* ``move_targets``: which of a member's children should move, and where (drain, active
  redistribution).

**Head rule.** With ``members="auto"`` the head node (the one that also runs the control plane:
GCS, registry, membership) is not eligible while any worker node is; it becomes eligible when
no worker is (e.g. a one-node cluster, or after every worker died), so children still have a
home (a member runs on the head all along, idle, ready for that). ``members="all"`` makes every
node eligible, the head included; a label filter makes every
node that matches it eligible, the head included.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Literal, NamedTuple, Protocol, TypeVar

from herd.platform.errors import ConfigError, NoQuorum
from herd.supervisors.errors import PlacementError

from .base import DistributionStrategy, Member, Requirements, stable_hash
from .random_choice import RandomStrategy

__all__ = [
    "DETERMINISTIC",
    "HasOptions",
    "MemberSelector",
    "NodeLike",
    "Placing",
    "eligible_nodes",
    "member_nodes",
    "member_of",
    "move_targets",
    "place",
    "requirements_of",
    "selector_admits",
]

#: ``"auto"`` (every node but the head while a worker is eligible), ``"all"`` (every node), a
#: label filter, or a list of filters (a node is eligible if it matches any).
MemberSelector = Literal["auto", "all"] | dict[str, str] | list[dict[str, str]]

#: Strategies whose owner is a function of the member set alone: only those rebalance actively.
DETERMINISTIC = frozenset({"hash_ring", "quorum"})


class NodeLike(Protocol):
    """What placement reads of a node (``herd.platform.membership.NodeInfo`` has it)."""

    @property
    def node_id(self) -> str: ...
    @property
    def alive(self) -> bool: ...
    @property
    def is_head(self) -> bool: ...
    @property
    def labels(self) -> Mapping[str, str]: ...
    @property
    def resources(self) -> Mapping[str, float]: ...


N = TypeVar("N", bound=NodeLike)


class HasOptions(Protocol):
    """A child spec as placement reads it: its Ray actor ``options``."""

    @property
    def options(self) -> Mapping[str, Any]: ...


class Placing(NamedTuple):
    """What placing one existing child needs: its record's epoch and its requirements;
    ``bounded``: it counts against a member's capacity (``place``), as a lightweight child
    counts against its host's ``max_children_per_host``."""

    epoch: int
    requirements: Requirements
    bounded: bool = False


def selector_admits(members: MemberSelector, labels: Mapping[str, str]) -> bool:
    """Does the ``members`` selector admit a node with these labels (head rule aside)?"""
    if isinstance(members, str):  # "auto" or "all"
        return True
    selectors = [members] if isinstance(members, dict) else members
    return any(all(labels.get(k) == v for k, v in sel.items()) for sel in selectors)


def member_nodes(nodes: Iterable[N], members: MemberSelector) -> list[N]:
    """The live nodes that run a member of the supervisor: those the selector admits."""
    return [n for n in nodes if n.alive and selector_admits(members, n.labels)]


def eligible_nodes(nodes: Iterable[N], members: MemberSelector, draining: Iterable[str] = (),
                   *, include_draining: bool = False) -> list[N]:
    """The live nodes whose members own children, in input order (see the head rule).

    Draining nodes are left out unless ``include_draining``; they never count as the worker
    that keeps the head out (draining the only worker makes the head eligible)."""
    gone = set(draining)
    matching = member_nodes(nodes, members)
    if members == "auto" and any(not n.is_head and n.node_id not in gone for n in matching):
        matching = [n for n in matching if not n.is_head]
    return [n for n in matching if include_draining or n.node_id not in gone]


def member_of(node: NodeLike, load: int = 0) -> Member:
    """A strategy ``Member`` for a node."""
    return Member(id=node.node_id, labels=dict(node.labels), load=load,
                  resources=dict(node.resources))


def requirements_of(spec: HasOptions) -> Requirements:
    """What a member's node must offer to run the child: exact label matches from the child's
    ``label_selector`` option and its resource demands (CPU, GPU, memory, custom)."""
    options = spec.options
    labels = dict(options.get("label_selector") or {})
    for key, value in labels.items():
        if not isinstance(value, str) or value.startswith(("!", "in(", "!in(")):
            raise ConfigError("dynamic supervisors place by exact label values only",
                              field=f"options.label_selector.{key}", value=value)
    resources: dict[str, float] = dict(options.get("resources") or {})
    for option, resource in (("num_cpus", "CPU"), ("num_gpus", "GPU"), ("memory", "memory")):
        if options.get(option):
            resources[resource] = float(options[option])
    return Requirements(labels=labels, resources=resources)


def place(strategy: DistributionStrategy, children: Mapping[str, Placing],
          members: Sequence[Member], capacity: Mapping[str, int] | None = None
          ) -> dict[str, str]:
    """Owner (member id) of each child that some member can run; children no member admits are
    left out. Every member computes the same answer from the same view: children are taken in
    id order, a load-aware strategy counts each assignment, and ``random`` draws from a
    generator seeded by the child's id and epoch (so survivors agree on one owner per orphan).
    ``capacity``: member id -> how many more ``bounded`` children it can take; a member with
    none left is not offered one (the strategy chooses among the others), and a bounded child
    no member has room for is left out."""
    current = list(members)
    room = dict(capacity) if capacity is not None else None
    owners: dict[str, str] = {}
    for child_id in sorted(children):
        placing = children[child_id]
        chooser = strategy
        if strategy.name == RandomStrategy.name:
            chooser = RandomStrategy(seed=stable_hash(f"{child_id}/{placing.epoch}"))
        offered = current if room is None or not placing.bounded else [
            m for m in current if room.get(m.id, 0) > 0]
        try:
            chosen = chooser.choose(child_id, offered, placing.requirements)
        except (PlacementError, NoQuorum):
            continue
        owners[child_id] = chosen.id
        if room is not None and placing.bounded:
            room[chosen.id] = room.get(chosen.id, 0) - 1
        if strategy.load_aware:
            current = [replace(m, load=m.load + 1) if m.id == chosen.id else m for m in current]
    return owners


def move_targets(strategy: DistributionStrategy, me: str, own: Mapping[str, Placing],
                 members: Sequence[Member], *, redistribution: str,
                 draining: bool, capacity: Mapping[str, int] | None = None) -> dict[str, str]:
    """Which of member ``me``'s children should move, and where.

    Draining: all of them, placed over ``members`` (which exclude ``me``). Active
    redistribution: with ``hash_ring``/``quorum``, those the strategy now gives to another
    member; with ``least_loaded``, one at a time to the least loaded member while that evens the
    loads (``me`` has at least two more); with ``random``, none (a random owner is never
    "wrong"). Passive: none. ``capacity``: as for ``place``, for a drain (a rebalance moves
    children towards even loads, so it does not fill a member past the others)."""
    if draining:
        return place(strategy, own, members, capacity)
    if redistribution != "active" or not own:
        return {}
    if strategy.name in DETERMINISTIC:
        targets = {}
        for child_id, placing in own.items():
            try:
                target = strategy.choose(child_id, members, placing.requirements).id
            except (PlacementError, NoQuorum):
                continue
            if target != me:
                targets[child_id] = target
        return targets
    if not strategy.load_aware:
        return {}
    loads = {m.id: m.load for m in members}
    if me not in loads:
        return {}
    targets = {}
    for child_id in sorted(own):
        others = [m for m in strategy.eligible(members, own[child_id].requirements) if m.id != me]
        if not others:
            continue
        best = min(others, key=lambda m: (loads[m.id], m.id))
        if loads[best.id] + 1 < loads[me]:
            targets[child_id] = best.id
            loads[best.id] += 1
            loads[me] -= 1
    return targets

