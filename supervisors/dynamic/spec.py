"""The configuration of a distributed dynamic supervisor and what it reports about its children
(placement decisions are in ``herd.supervisors.strategies.placement``)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from herd.platform.errors import ConfigError
from herd.platform.validation import format_validation_error
from herd.supervisors.otp.spec import ChildSpec, LightweightHosts, validate_name
from herd.supervisors.strategies import (
    STRATEGIES,
    DistributionStrategy,
    MemberSelector,
    eligible_nodes,
    make_strategy,
    member_nodes,
    requirements_of,
)
from herd.supervisors.strategies.placement import NodeLike
from herd.supervisors.warm.spec import WarmPoolSpec

Redistribution = Literal["passive", "active"]
OnExhausted = Literal["give_up", "escalate"]
N = TypeVar("N", bound=NodeLike)


class DynamicSupervisorOptions(BaseModel):
    """The settings of a dynamic supervisor a user chooses (in ``DynamicSupervisor.start`` and
    in an app's YAML).

    ``members``: ``"auto"`` (every node but the head node, unless no worker node is eligible),
    ``"all"`` (every node, the head included), a label filter such as ``{"region": "us-east"}``,
    or a list of filters (a node is eligible if it matches any; the head included).
    ``on_exhausted``: what happens when one child crashes more than ``max_restarts`` times in
    ``max_seconds`` (the budget is per child): ``give_up`` removes that child and reports it,
    ``escalate`` stops the supervisor (every later call raises ``SupervisorStopped`` with the
    reason).
    ``lightweight``: the hosts of its lightweight children, one per member node, created by the
    member on its node (``node_id`` must stay unset: each member's host runs on its own node).
    ``warm``: standby shells on every member node (``{"standby": 2}`` per child shape), so that
    crash restarts, failover and moves of actor children start no process
    (``herd.supervisors.warm``); None: every start is cold.
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
    lightweight: LightweightHosts = Field(default_factory=LightweightHosts)
    warm: WarmPoolSpec | None = None

    @field_validator("lightweight")
    @classmethod
    def _check_hosts(cls, value: LightweightHosts) -> LightweightHosts:
        if value.node_id is not None:
            raise ValueError("node_id cannot be set: each member hosts its lightweight children "
                             "on its own node")
        return value

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

    def hosts(self, nodes: Iterable[N]) -> list[N]:
        """The live nodes that run a member (``herd.supervisors.strategies.placement``)."""
        return member_nodes(nodes, self.members)

    def eligible(self, nodes: Iterable[N], include_draining: bool = False) -> list[N]:
        """The live nodes whose members own children: the head rule applied, draining nodes
        left out unless ``include_draining``."""
        return eligible_nodes(nodes, self.members, self.draining,
                              include_draining=include_draining)


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

    ``id`` is the child's id; ``name`` its registry name, ``<supervisor>/<id>`` (call it with
    ``via(info.name)``).
    ``epoch`` is the record's fencing token; ``incarnation`` counts starts of the child (1 for
    the first); ``status`` is ``running``, ``starting`` (claimed, not yet up), ``moving`` or
    ``orphaned`` (its owner's node is gone and no survivor has claimed it yet).
    ``kind`` is ``actor`` or ``lightweight``; for a running lightweight child ``calls`` (calls
    answered by this incarnation) and ``memory_bytes`` (estimate of its state) come from its
    host (None for actor children, or when its host did not answer).
    """

    id: str
    name: str
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
    kind: str = "actor"
    calls: int | None = None
    memory_bytes: int | None = None
