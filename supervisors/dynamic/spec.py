"""The configuration of a distributed dynamic supervisor, what it reports about children, and
the pure placement decisions its members take (no Ray here: unit-testable)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from herd.platform.errors import ConfigError, NoQuorum
from herd.platform.validation import format_validation_error
from herd.supervisors.errors import PlacementError
from herd.supervisors.otp.spec import ChildSpec, validate_name
from herd.supervisors.strategies import (
    STRATEGIES,
    Member,
    RandomStrategy,
    Requirements,
    make_strategy,
    stable_hash,
)
from herd.supervisors.strategies.base import DistributionStrategy

Redistribution = Literal["passive", "active"]
OnExhausted = Literal["give_up", "escalate"]
MemberSelector = Literal["auto"] | dict[str, str] | list[dict[str, str]]


class DynamicSupervisorOptions(BaseModel):
    """The settings of a dynamic supervisor a user chooses (in ``DynamicSupervisor.start`` and
    in an app's YAML).

    ``members``: ``"auto"`` (every node), a label filter such as ``{"region": "us-east"}``, or a
    list of filters (a node is eligible if it matches any). ``on_exhausted``: what happens when
    one child crashes more than ``max_restarts`` times in ``max_seconds`` (the budget is per
    child): ``give_up`` removes that child and reports it, ``escalate`` stops the supervisor.
    """

    model_config = ConfigDict(extra="forbid")

    members: MemberSelector = "auto"
    distribution: str = "hash_ring"
    distribution_options: dict[str, Any] = Field(default_factory=dict)
    redistribution: Redistribution = "passive"
    max_restarts: int = Field(default=3, ge=0)
    max_seconds: float = Field(default=5.0, gt=0)
    max_children: int | None = Field(default=None, ge=1)
    on_exhausted: OnExhausted = "give_up"
    registry: str = "default"

    @field_validator("distribution")
    @classmethod
    def _check_distribution(cls, value: str) -> str:
        if value not in STRATEGIES:
            raise ValueError(f"unknown distribution {value!r}; choose from {sorted(STRATEGIES)}")
        return value


class DynamicSupervisorSpec(DynamicSupervisorOptions):
    """``DynamicSupervisor.start`` arguments, as stored with the running supervisor."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    reconcile_interval_s: float = Field(default=1.0, gt=0)
    draining: tuple[str, ...] = ()

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: Any) -> str:
        return validate_name(value)

    @classmethod
    def build(cls, **values: Any) -> DynamicSupervisorSpec:
        try:
            spec = cls(**values)
        except ValidationError as exc:
            raise format_validation_error(exc, "DynamicSupervisor.start", cls) from None
        spec.strategy()  # surfaces bad distribution_options now, as ConfigError
        return spec

    def strategy(self) -> DistributionStrategy:
        return make_strategy(self.distribution, **self.distribution_options)

    def admits_node(self, labels: dict[str, str]) -> bool:
        """Is a node with these labels eligible to run a member?"""
        if self.members == "auto":
            return True
        selectors = [self.members] if isinstance(self.members, dict) else self.members
        return any(all(labels.get(k) == v for k, v in sel.items()) for sel in selectors)


def requirements_of(spec: ChildSpec) -> Requirements:
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


def check_child_spec(spec: ChildSpec | dict[str, Any]) -> ChildSpec:
    child = spec if isinstance(spec, ChildSpec) else ChildSpec(**spec)
    if child.type != "worker":
        raise ConfigError("a dynamic supervisor starts workers; nest a Supervisor in a worker "
                          "spec's place only through a static tree", field="type",
                          value=child.type)
    if child.significant:
        raise ConfigError("dynamic supervisors have no significant children",
                          field="significant", value=True)
    requirements_of(child)
    return child


@dataclass(frozen=True)
class DynamicChildInfo:
    """A child of a dynamic supervisor as the registry records it.

    ``epoch`` is the record's fencing token; ``incarnation`` counts starts of the child (1 for
    the first); ``status`` is ``running``, ``starting`` (claimed, not yet up), ``moving`` or
    ``orphaned`` (its owner's node is gone and no survivor has claimed it yet).
    """

    id: str
    node_id: str | None
    region: str | None
    epoch: int
    incarnation: int
    restarts: int
    failovers: int
    status: str
    handle: Any
    restart: str
    started_at: float | None


def member_of(node: Any, load: int = 0) -> Member:
    """A strategy ``Member`` for a membership ``NodeInfo``."""
    return Member(id=node.node_id, labels=dict(node.labels), load=load,
                  resources=dict(node.resources))


#: Strategies whose owner is a function of the member set alone: only those rebalance actively.
DETERMINISTIC = frozenset({"hash_ring", "quorum"})


class Placing(NamedTuple):
    """What placing one existing child needs: its record's epoch and its requirements."""

    epoch: int
    requirements: Requirements


def place(strategy: DistributionStrategy, children: dict[str, Placing],
          members: list[Member]) -> dict[str, str]:
    """Owner (member id) of each child that some member can run; children no member admits are
    left out. Every member computes the same answer from the same view: children are taken in
    id order, a load-aware strategy counts each assignment, and ``random`` draws from a
    generator seeded by the child's id and epoch (so survivors agree on one owner per orphan)."""
    current = list(members)
    owners: dict[str, str] = {}
    for child_id in sorted(children):
        placing = children[child_id]
        chooser = strategy
        if strategy.name == RandomStrategy.name:
            chooser = RandomStrategy(seed=stable_hash(f"{child_id}/{placing.epoch}"))
        try:
            chosen = chooser.choose(child_id, current, placing.requirements)
        except (PlacementError, NoQuorum):
            continue
        owners[child_id] = chosen.id
        if strategy.load_aware:
            current = [replace(m, load=m.load + 1) if m.id == chosen.id else m for m in current]
    return owners


def move_targets(strategy: DistributionStrategy, me: str, own: dict[str, Placing],
                 members: list[Member], *, redistribution: str,
                 draining: bool) -> dict[str, str]:
    """Which of member ``me``'s children should move, and where.

    Draining: all of them, placed over ``members`` (which exclude ``me``). Active
    redistribution: with ``hash_ring``/``quorum``, those the strategy now gives to another
    member; with ``least_loaded``, one at a time to the least loaded member while that evens the
    loads (``me`` has at least two more); with ``random``, none (a random owner is never
    "wrong"). Passive: none."""
    if draining:
        return place(strategy, own, members)
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
