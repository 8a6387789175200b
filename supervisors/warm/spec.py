"""What a warm pool keeps ready, and which children can use it (pure, no Ray).

``WarmPoolSpec`` is the ``warm=`` option of ``Supervisor.start`` and ``DynamicSupervisor.start``
(``warm={"standby": 2}``): how many standby shells to keep per distinct child shape on each node
(dynamic: per member; static: per supervisor), or ``"auto"``: as many as that node can need at
once (``herd.supervisors.warm.sizing``), at most ``max_standby``.

A child's **shape** is what its process must be created with and cannot change afterwards: the
Ray options that reserve resources or build its environment (``num_cpus``, ``num_gpus``,
``memory``, ``resources``, ``accelerator_type``, ``runtime_env``) and, where the pool's owner
does not place shells itself, ``label_selector`` and a node affinity (given here as plain data,
``{"node_affinity": [node_id, soft]}``). ``shape_of`` returns None for a child a shell cannot
become, which then starts cold as before: a class with concurrency groups of its own, or
options that name, detach or place one specific actor (another ``scheduling_strategy``,
``placement_group``...).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["NODE_AFFINITY", "PROCESS_OPTIONS", "Shape", "WarmPoolSpec", "call_options",
           "shape_of"]

#: Options fixed when a process is created: shells are created with them.
PROCESS_OPTIONS = ("num_cpus", "num_gpus", "memory", "resources", "accelerator_type",
                   "runtime_env", "label_selector")
#: Options of the call path (applied by the shell when it becomes the child) or set by herd on
#: every child the same way: they do not make shapes differ.
CALL_OPTIONS = ("max_concurrency",)
HERD_OPTIONS = ("max_restarts", "max_task_retries")
#: The most standby shells per shape a pool keeps.
MAX_STANDBY = 64
#: The one ``scheduling_strategy`` a shape can hold, as plain data: ``{NODE_AFFINITY: [node_id,
#: soft]}`` (the pool turns it back into Ray's strategy when it creates a shell).
NODE_AFFINITY = "node_affinity"


class WarmPoolSpec(BaseModel):
    """Standby shells kept ready, per distinct child shape, on each node."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    standby: int | Literal["auto"] = 2
    """Shells per shape kept ready (a taken one is replaced in the background). ``"auto"``:
    per shape, the most children of it this node would take over if another node died (a
    static supervisor: all its children of that shape, as ``one_for_all`` restarts them
    together), at least one where it runs children of that shape, at most ``max_standby``."""
    max_standby: int = Field(default=8, ge=1, le=MAX_STANDBY)
    """The cap of ``standby="auto"`` per shape."""
    max_shapes: int = Field(default=4, ge=1, le=64)
    """At most this many distinct shapes get a pool (the most common among the children)."""
    start_timeout_s: float = Field(default=30.0, gt=0)
    """A shell not up within this time is killed (it may wait for resources others need)."""
    retry_s: float = Field(default=5.0, gt=0)
    """Pause before creating a shell again after one failed or timed out."""
    settle_s: float = Field(default=0.25, ge=0)
    """A refill waits until its owner has been quiet this long: a worker process starting
    takes a core for most of a second, and right after a restart or a failover the new
    children's first calls need it."""

    @field_validator("standby", mode="before")
    @classmethod
    def _check_standby(cls, value: Any) -> Any:
        if value == "auto":
            return value
        if isinstance(value, bool) or not isinstance(value, int) or not (
                1 <= value <= MAX_STANDBY):
            raise ValueError(f"must be 'auto' or an integer from 1 to {MAX_STANDBY}")
        return value


@dataclass(frozen=True)
class Shape:
    """The process options of a child, canonical (sorted JSON) so equal shapes compare equal."""

    options_json: str

    def options(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.options_json)
        return loaded

    def __str__(self) -> str:
        return self.options_json


def shape_of(class_options: Mapping[str, Any], options: Mapping[str, Any],
             placed_by_owner: Iterable[str] = (), monitor_group: str = "") -> Shape | None:
    """The shape of a child with ``class_options`` (its ``@ray.remote`` options, including the
    harness's ``monitor_group``) and ``options`` (its spec's), or None if a shell cannot become
    it. ``placed_by_owner``: options the pool's owner replaces by its own placement (a dynamic
    member pins shells and children to its node), left out of the shape."""
    ignored = set(placed_by_owner)
    merged = {k: v for k, v in {**class_options, **options}.items() if k not in ignored}
    groups = merged.pop("concurrency_groups", None) or {}
    if set(groups) - {monitor_group}:
        return None
    process: dict[str, Any] = {}
    for key, value in merged.items():
        if key in CALL_OPTIONS or key in HERD_OPTIONS:
            continue
        if key == "scheduling_strategy" and isinstance(value, dict) and set(value) == {
                NODE_AFFINITY}:
            process[key] = value
            continue
        if key not in PROCESS_OPTIONS:
            return None
        if value is not None:
            process[key] = value
    try:
        return Shape(json.dumps(process, sort_keys=True))
    except (TypeError, ValueError):  # a value that is not plain data: no shell can match it
        return None


def call_options(class_options: Mapping[str, Any], options: Mapping[str, Any]) -> dict[str, Any]:
    """The options a shell applies to calls once it has become the child."""
    merged = {**class_options, **options}
    return {k: merged[k] for k in CALL_OPTIONS if merged.get(k) is not None}
