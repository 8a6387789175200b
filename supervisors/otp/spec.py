"""Child and supervisor specifications (OTP ``child_spec()`` and ``sup_flags()``), pydantic models.

Constructing a spec validates it; any problem raises :class:`herd.platform.errors.ConfigError`
naming the field path (``children[1].restart``) and the bad value. The checks are those of
``supervisor:check_childspec/2`` and ``supervisor:check_flags/1``: restart type, shutdown
(``brutal_kill`` | milliseconds | ``infinity``), child type, a significant child must not be
``permanent`` and needs ``auto_shutdown`` other than ``never``, child ids are unique, strategy,
intensity (``max_restarts >= 0``) and period (``max_seconds > 0``). Defaults follow OTP and Elixir:
``restart="permanent"``, ``shutdown=5000`` for workers and ``"infinity"`` for supervisors, and
3 restarts in 5 seconds.

Example::

    ChildSpec(id="counter", actor=Counter, args=(0,), restart="transient", shutdown=1000,
              options={"num_cpus": 0.1, "label_selector": {"region": "us-east"}})
    ChildSpec(id="db", supervisor=SupervisorSpec(strategy="rest_for_one", children=[...]))
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from ray._common.ray_option_utils import validate_actor_options

from herd.platform.errors import ConfigError
from herd.platform.validation import field_error, format_validation_error
from herd.supervisors.otp.classes import ShippedClass, resolve_actor
from herd.supervisors.warm.spec import WarmPoolSpec

__all__ = [
    "INFINITY_GUARD_S",
    "AutoShutdown",
    "ChildKind",
    "ChildSpec",
    "ChildType",
    "LightweightHosts",
    "Restart",
    "Shutdown",
    "Strategy",
    "SupervisorSpec",
    "check_significant",
    "validate_name",
]

Restart = Literal["permanent", "transient", "temporary"]
ChildKind = Literal["actor", "lightweight"]
ChildType = Literal["worker", "supervisor"]
Strategy = Literal["one_for_one", "one_for_all", "rest_for_one"]
AutoShutdown = Literal["never", "any_significant", "all_significant"]
Shutdown = int | Literal["brutal_kill", "infinity"]

#: ``shutdown="infinity"`` waits for a child without a herd-imposed limit; this guard (one hour)
#: only keeps a wedged child from blocking its supervisor forever.
INFINITY_GUARD_S = 3600.0

DEFAULT_WORKER_SHUTDOWN_MS = 5000
DEFAULT_START_TIMEOUT_S = 30.0
MAX_ID_LENGTH = 200

#: Ray actor options that herd sets itself on children (restarts are the supervisor's, children
#: are not named or detached: they share the fate of their supervisor).
HERD_OWNED_OPTIONS = frozenset({"name", "namespace", "lifetime", "get_if_exists", "max_restarts",
                                "max_task_retries", "concurrency_groups"})


def _check_name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string")
    if len(value) > MAX_ID_LENGTH:
        raise ValueError(f"{what} is longer than {MAX_ID_LENGTH} characters")
    if "/" in value or any(ch.isspace() for ch in value):
        raise ValueError(f"{what} must not contain '/' or whitespace (it is a segment of "
                         f"registry names like '<supervisor>/<id>')")
    return value


def validate_name(value: Any, what: str = "supervisor name") -> str:
    """Check a supervisor name (same rules as child ids); raises ``ConfigError``."""
    try:
        return _check_name(value, what)
    except ValueError as exc:
        raise ConfigError(str(exc), field="name", value=value) from None


class _Spec(BaseModel):
    """Base: validation failures become ``ConfigError`` naming the field path."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise format_validation_error(exc, type(self).__name__, type(self)) from None

    # Nested specs are validated by pydantic itself (not through this __init__), so that the
    # error of a nested field keeps its full path, e.g. children[0].supervisor.children[1].id.
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]


class ChildSpec(_Spec):
    """One child of a supervisor (OTP ``child_spec()``)."""

    id: str
    """Unique among the supervisor's children; the child is registered as ``<supervisor>/<id>``."""
    actor: Any = None
    """Worker children: a plain class, a ``@ray.remote`` class or ``"pkg.mod:Class"`` (resolved
    to the class; a :class:`ShippedClass` in a spec that was pickled)."""
    supervisor: SupervisorSpec | None = None
    """Supervisor children: the nested supervisor's spec (``type`` then defaults to supervisor)."""
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = Field(default_factory=dict)
    restart: Restart = "permanent"
    shutdown: Shutdown = DEFAULT_WORKER_SHUTDOWN_MS
    """``"brutal_kill"``, milliseconds to wait for the ``terminate`` hook, or ``"infinity"``.
    Defaults to 5000 for workers and ``"infinity"`` for supervisors."""
    type: ChildType = "worker"
    significant: bool = False
    options: dict[str, Any] = Field(default_factory=dict)
    """Ray actor options for the child (``num_cpus``, ``memory``, ``resources``,
    ``label_selector``, ``scheduling_strategy``, ``runtime_env``, ``max_concurrency``...)."""
    start_timeout: float = Field(default=DEFAULT_START_TIMEOUT_S, gt=0)
    """Seconds a worker may take to be placed and constructed before its start fails (Ray
    leaves an actor that no node can host pending forever)."""
    kind: ChildKind = "actor"
    """``"actor"``: the child is a Ray actor (a process). ``"lightweight"``: an object and its
    asyncio tasks inside its supervisor's host actor (``herd.supervisors.lightweight``)."""
    crash_on_error: bool = True
    """Lightweight children: a method that raises crashes the child (as a GenServer does); the
    caller gets the error either way."""

    @model_validator(mode="before")
    @classmethod
    def _defaults_by_type(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if "type" not in data and data.get("supervisor") is not None:
            data["type"] = "supervisor"
        if "shutdown" not in data and data.get("type") == "supervisor":
            data["shutdown"] = "infinity"
        return data

    @field_validator("id", mode="before")
    @classmethod
    def _check_id(cls, value: Any) -> str:
        return _check_name(value, "a child id")

    @field_validator("actor", mode="before")
    @classmethod
    def _check_actor(cls, value: Any) -> Any:
        if value is None or isinstance(value, ShippedClass):
            return value
        return resolve_actor(value)

    def __getstate__(self) -> dict[Any, Any]:
        """Pickled with its class as a :class:`ShippedClass` (loaded where the child starts)."""
        state = super().__getstate__()
        actor = state["__dict__"].get("actor")
        if actor is not None and not isinstance(actor, ShippedClass):
            state["__dict__"] = {**state["__dict__"], "actor": ShippedClass.of(actor)}
        return state

    @field_validator("shutdown", mode="before")
    @classmethod
    def _check_shutdown(cls, value: Any) -> Any:
        if value in ("brutal_kill", "infinity"):
            return value
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        raise ValueError("must be 'brutal_kill', 'infinity' or an integer number of milliseconds "
                         ">= 0")

    @field_validator("significant", mode="before")
    @classmethod
    def _check_significant(cls, value: Any) -> Any:
        if not isinstance(value, bool):
            raise ValueError("must be true or false")
        return value

    @field_validator("options")
    @classmethod
    def _check_options(cls, value: dict[str, Any]) -> dict[str, Any]:
        owned = sorted(HERD_OWNED_OPTIONS & set(value))
        if owned:
            raise ValueError(f"options {owned} are set by herd for supervised children")
        validate_actor_options(value, in_options=True)
        return value

    @model_validator(mode="after")
    def _check_kind(self) -> ChildSpec:
        if self.kind == "lightweight":
            if self.type != "worker":
                raise field_error(("kind",), self.kind,
                                  "a supervisor child cannot be lightweight")
            for option in sorted(self.options):
                raise field_error(("options", option), self.options[option],
                                  "a lightweight child runs inside its host actor's process; "
                                  "Ray actor options do not apply to it")
        if self.type == "worker":
            if self.actor is None:
                raise field_error(("actor",), None, "a worker child needs an actor class")
            if self.supervisor is not None:
                raise field_error(("supervisor",), "SupervisorSpec(...)",
                                  "a worker child cannot carry a supervisor spec")
        else:
            if self.supervisor is None:
                raise field_error(("supervisor",), None,
                                  "a supervisor child needs a nested SupervisorSpec")
            if self.actor is not None:
                raise field_error(("actor",), self.actor,
                                  "a supervisor child runs herd's supervisor, not an actor class")
        if self.significant and self.restart == "permanent":
            raise field_error(("significant",), True,
                              "a significant child cannot be permanent (restart must be "
                              "transient or temporary)")
        return self

    def start_deadline_s(self) -> float:
        """How long starting this child may take: its ``start_timeout``, or for a supervisor
        child the sum over its subtree (its children start one after another)."""
        if self.supervisor is None:
            return self.start_timeout
        return self.start_timeout + sum(c.start_deadline_s() for c in self.supervisor.children)

    def shutdown_deadline_s(self) -> float:
        """Seconds to wait for this child to stop after asking it to (``infinity`` -> guard)."""
        if self.shutdown == "infinity":
            return INFINITY_GUARD_S
        if self.shutdown == "brutal_kill":
            return 0.0
        return self.shutdown / 1000.0


class LightweightHosts(_Spec):
    """How a supervisor hosts its lightweight children (one host actor per supervisor)."""

    max_children_per_host: int = Field(default=10_000, gt=0)
    lag_threshold_s: float = Field(default=1.0, gt=0)
    """Event-loop lag that counts as a child blocking the loop: the host is restarted."""
    kill_grace_s: float = Field(default=1.0, gt=0)
    """How long a cancelled child may take to end before its host is restarted instead."""
    node_id: str | None = None
    """Node of the host actor; None: the supervisor's node."""


class SupervisorSpec(_Spec):
    """A supervisor's flags and its initial children (OTP ``sup_flags()`` + child specs)."""

    strategy: Strategy = "one_for_one"
    max_restarts: int = 3
    """Intensity: more than this many restarts within ``max_seconds`` stops the supervisor."""
    max_seconds: float = 5.0
    """Period of the sliding window, in seconds."""
    auto_shutdown: AutoShutdown = "never"
    children: list[ChildSpec] = Field(default_factory=list)
    registry: str | None = "default"
    """Registry in which children are named ``<supervisor>/<id>``; ``None`` names nothing."""
    lightweight: LightweightHosts = Field(default_factory=LightweightHosts)
    warm: WarmPoolSpec | None = None
    """Standby shells for its actor children (``{"standby": 2}``): a crashed child restarts in
    a process already running (``herd.supervisors.warm``). None: every start is cold."""

    @field_validator("max_restarts", mode="before")
    @classmethod
    def _check_intensity(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError("must be an integer >= 0")
        return value

    @field_validator("max_seconds", mode="before")
    @classmethod
    def _check_period(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError("must be a number > 0")
        return float(value)

    @model_validator(mode="after")
    def _check_children(self) -> SupervisorSpec:
        seen: set[str] = set()
        for index, child in enumerate(self.children):
            if child.id in seen:
                raise field_error(("children", index, "id"), child.id, "duplicate child id")
            seen.add(child.id)
            if child.significant and self.auto_shutdown == "never":
                raise field_error(("children", index, "significant"), True,
                                  "significant children need auto_shutdown "
                                  "'any_significant' or 'all_significant'")
        return self


ChildSpec.model_rebuild()


def check_significant(child: ChildSpec, auto_shutdown: AutoShutdown) -> None:
    """OTP's ``bad_combination``: a significant child under ``auto_shutdown="never"``."""
    if child.significant and auto_shutdown == "never":
        raise ConfigError("significant children need auto_shutdown 'any_significant' or "
                          "'all_significant'", source="ChildSpec", field="significant", value=True)
