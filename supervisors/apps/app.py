"""Apps: a named tree of supervisors (static and dynamic) described in YAML, like an OTP
application's supervision tree, run detached on a Ray cluster.

    name: demo
    registries: [{name: default, keys: unique}]
    supervisors:
      - {kind: dynamic, name: workers, distribution: hash_ring, children: [...]}
      - {kind: static, name: pipeline, strategy: rest_for_one, children: [...]}

Supervisors start in order and stop in reverse order. The running app is recorded in the GCS
KV store (``app/<name>``), so ``herd status`` and ``herd stop`` find it from any process.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from herd.platform import kv
from herd.platform.config import ClusterConfig
from herd.platform.errors import ConfigError, HerdError
from herd.platform.logging import get_logger
from herd.platform.validation import field_error, format_validation_error, load_yaml_mapping
from herd.registry import Registry
from herd.supervisors.dynamic.spec import DynamicSupervisorOptions, check_child_spec
from herd.supervisors.dynamic.supervisor import DynamicSupervisor
from herd.supervisors.errors import SupervisorError, SupervisorStopped
from herd.supervisors.otp.spec import (
    AutoShutdown,
    ChildSpec,
    LightweightHosts,
    Strategy,
    validate_name,
)
from herd.supervisors.otp.supervisor import Supervisor

log = get_logger("herd.app")

APP_PREFIX = "app/"


class AppAlreadyRunning(HerdError):
    """An app of that name is running."""


class RegistryEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "default"
    keys: Literal["unique", "duplicate"] = "unique"
    shards: int = Field(default=1, ge=1)


class StaticSupervisorEntry(BaseModel):
    """An OTP supervisor (``Supervisor.start``)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["static"]
    name: str
    strategy: Strategy = "one_for_one"
    max_restarts: int = Field(default=3, ge=0)
    max_seconds: float = Field(default=5.0, gt=0)
    auto_shutdown: AutoShutdown = "never"
    registry: str | None = "default"
    lightweight: LightweightHosts = Field(default_factory=LightweightHosts)
    """The host of its ``kind: lightweight`` children (``max_children_per_host``...)."""
    children: list[ChildSpec] = Field(default_factory=list)


class DynamicSupervisorEntry(DynamicSupervisorOptions):
    """A distributed dynamic supervisor (``DynamicSupervisor.start``) and its first children."""

    kind: Literal["dynamic"]
    name: str
    children: list[ChildSpec] = Field(default_factory=list)


SupervisorEntry = Annotated[StaticSupervisorEntry | DynamicSupervisorEntry,
                            Field(discriminator="kind")]


class AppSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    cluster: ClusterConfig | None = None
    registries: list[RegistryEntry] = Field(default_factory=lambda: [RegistryEntry()])
    supervisors: list[SupervisorEntry] = Field(min_length=1)

    @model_validator(mode="after")
    def _cross_checks(self) -> AppSpec:
        for path, value, what in [(("name",), self.name, "app name")] + [
                (("supervisors", i, "name"), s.name, "supervisor name")
                for i, s in enumerate(self.supervisors)]:
            try:
                validate_name(value, what)
            except ConfigError as exc:
                raise field_error(path, value, str(exc).split(": ", 1)[-1]) from None
        names: set[str] = set()
        registries = {r.name for r in self.registries}
        for i, sup in enumerate(self.supervisors):
            if sup.name in names:
                raise field_error(("supervisors", i, "name"), sup.name, "duplicate supervisor")
            names.add(sup.name)
            if sup.registry is not None and sup.registry not in registries:
                raise field_error(("supervisors", i, "registry"), sup.registry,
                                  f"not one of the app's registries {sorted(registries)}")
            seen: set[str] = set()
            for j, child in enumerate(sup.children):
                if child.id in seen:
                    raise field_error(("supervisors", i, "children", j, "id"), child.id,
                                      "duplicate child id")
                seen.add(child.id)
                if isinstance(sup, DynamicSupervisorEntry):
                    try:
                        check_child_spec(child)
                    except ConfigError as exc:
                        raise field_error(("supervisors", i, "children", j, exc.field or "id"),
                                          exc.value, str(exc).split(": ")[-1]) from None
        return self

    @classmethod
    def from_yaml(cls, path: str | Path) -> AppSpec:
        data = load_yaml_mapping(path)
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>") -> AppSpec:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise format_validation_error(exc, source, cls,
                                          hidden_loc=frozenset({"static", "dynamic"})) from None
        except ConfigError as exc:  # raised by a ChildSpec check outside pydantic's wrapping
            raise ConfigError(str(exc), source=source, field=exc.field, value=exc.value) from None


# ----------------------------------------------------------------------------------- runtime
def _key(name: str) -> str:
    return f"{APP_PREFIX}{name}"


def running_apps() -> list[str]:
    return sorted(key[len(APP_PREFIX):] for key in kv.keys(APP_PREFIX))


def app_record(name: str) -> dict[str, Any] | None:
    return kv.get_object(_key(name))


def run_app(spec: AppSpec, source: str = "<dict>") -> dict[str, Any]:
    """Start the app's registries and supervisors in order (detached: they outlive this
    process). On a failure, what was started is stopped again, in reverse order."""
    if app_record(spec.name) is not None:
        raise AppAlreadyRunning(f"app {spec.name!r} is already running; `herd stop "
                                f"{spec.name}` first")
    started_at = time.time()  # the app is up from when its first part starts
    for entry in spec.registries:
        Registry.start(entry.name, keys=entry.keys, shards=entry.shards)
    started: list[StaticSupervisorEntry | DynamicSupervisorEntry] = []
    try:
        for sup in spec.supervisors:
            _start_supervisor(sup)
            started.append(sup)
            log.info("app_supervisor_started", app=spec.name, supervisor=sup.name,
                     kind=sup.kind, children=len(sup.children))
    except BaseException:
        for sup in reversed(started):
            _stop_supervisor(sup.kind, sup.name)
        raise
    record = {"name": spec.name, "source": source, "started_at": started_at,
              "supervisors": [{"name": s.name, "kind": s.kind} for s in spec.supervisors]}
    kv.put_object(_key(spec.name), record)
    return record


def _start_supervisor(sup: StaticSupervisorEntry | DynamicSupervisorEntry) -> None:
    if isinstance(sup, StaticSupervisorEntry):
        Supervisor.start(sup.name, sup.children, strategy=sup.strategy,
                         max_restarts=sup.max_restarts, max_seconds=sup.max_seconds,
                         auto_shutdown=sup.auto_shutdown, registry=sup.registry,
                         lightweight=sup.lightweight)
        return
    options = sup.model_dump(include=set(DynamicSupervisorOptions.model_fields))
    dynamic = DynamicSupervisor.start(sup.name, **options)
    for child in sup.children:
        dynamic.start_child(child)


def _stop_supervisor(kind: str, name: str) -> None:
    """Stop one supervisor of the app; one that stopped on its own (an escalation, an exit on
    restart intensity) is cleared away."""
    try:
        if kind == "static":
            Supervisor.get(name).stop("shutdown")
        else:
            DynamicSupervisor.get(name, include_stopped=True).stop()
    except (SupervisorStopped, SupervisorError) as exc:
        log.info("app_supervisor_already_stopped", supervisor=name, reason=str(exc))


def stop_app(name: str) -> list[str]:
    """Stop the app's supervisors in reverse start order (each honours its children's
    shutdown timeouts); returns their names in the order stopped."""
    record = app_record(name)
    if record is None:
        raise HerdError(f"no app named {name!r} is running")
    stopped = []
    for sup in reversed(record["supervisors"]):
        _stop_supervisor(sup["kind"], sup["name"])
        stopped.append(sup["name"])
    kv.delete(_key(name))
    log.info("app_stopped", app=name, supervisors=stopped)
    return stopped
