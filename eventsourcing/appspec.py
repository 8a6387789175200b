"""An event-sourced app's definition as its children read it: stored once in the GCS key-value
store (its classes pickled), loaded once per process, so a child's spec carries only names."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from ray import cloudpickle

from herd.eventsourcing.codec import EventCodec
from herd.eventsourcing.model import Aggregate, Command
from herd.platform import kv
from herd.platform.errors import ConfigError

__all__ = ["AppOptions", "AppSpec", "load_spec", "save_spec", "spec_key"]

_LOADED: dict[tuple[str, str], AppSpec] = {}


class AppOptions(BaseModel):
    """The settings of an event-sourced app (``App.start`` keyword arguments, YAML)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    store: str = Field(min_length=1)
    idle_timeout_s: float = Field(default=300.0, gt=0)
    """An aggregate instance that has had no command for this long is passivated."""
    command_timeout_s: float = Field(default=10.0, gt=0)
    max_children_per_host: int = Field(default=50_000, gt=0)
    handler_batch: int = Field(default=200, gt=0)
    handler_retries: int = Field(default=5, ge=0)
    handler_backoff_s: float = Field(default=0.05, gt=0)
    members: Any = "auto"


@dataclass
class AppSpec:
    """What every child of app ``name`` needs: the options, the aggregate classes by type
    name, the handler classes by handler name and one codec of every event class."""

    name: str
    options: AppOptions
    aggregates: dict[str, type[Aggregate]]
    handlers: dict[str, type] = field(default_factory=dict)
    codec: EventCodec = field(default_factory=EventCodec)
    routes: dict[type[Command], str] = field(default_factory=dict)
    generation: str = field(default_factory=lambda: uuid.uuid4().hex)
    """New for every ``App.start``: children of an earlier start of the same name reload."""

    @classmethod
    def build(cls, name: str, options: AppOptions, aggregates: list[type[Aggregate]],
              handlers: list[type]) -> AppSpec:
        spec = cls(name, options, {})
        for aggregate in aggregates:
            if not (isinstance(aggregate, type) and issubclass(aggregate, Aggregate)):
                raise ConfigError("an aggregate must subclass herd.eventsourcing.Aggregate",
                                  field="aggregates", value=aggregate)
            type_name = aggregate.__name__
            if type_name in spec.aggregates:
                raise ConfigError("two aggregates share a class name", field="aggregates",
                                  value=type_name)
            spec.aggregates[type_name] = aggregate
            for event in aggregate.events:
                spec.codec.register(event)
            for command in aggregate.commands:
                if command in spec.routes:
                    raise ConfigError(f"command {command.__name__} is handled by two aggregates",
                                      field="aggregates", value=type_name)
                spec.routes[command] = type_name
        for handler in handlers:
            handler_name = getattr(handler, "name", None)
            if not isinstance(handler_name, str) or not handler_name:
                raise ConfigError("a handler class needs a non-empty `name`", field="handlers",
                                  value=handler)
            if handler_name in spec.handlers:
                raise ConfigError("two handlers share a name", field="handlers",
                                  value=handler_name)
            spec.handlers[handler_name] = handler
        return spec


def spec_key(name: str) -> str:
    return f"herd/eventsourcing/{name}"


def save_spec(spec: AppSpec) -> None:
    # cloudpickle: the user's classes may be defined in a script or test module
    kv.put(spec_key(spec.name), cloudpickle.dumps(spec))
    _LOADED[(spec.name, spec.generation)] = spec


async def load_spec(name: str, generation: str) -> AppSpec:
    """The spec of app ``name`` as started in ``generation`` (read once per process)."""
    spec = _LOADED.get((name, generation))
    if spec is None:
        raw = await kv.aget(spec_key(name))
        found = cloudpickle.loads(raw) if raw is not None else None
        if found is None or found.generation != generation:
            raise ConfigError("no event-sourced app of that name and generation is running",
                              field="app", value=name)
        spec = _LOADED[(name, generation)] = found
    return spec


def delete_spec(name: str) -> None:
    kv.delete(spec_key(name))
