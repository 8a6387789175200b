"""The user machine contract and the wrapper every member runs around it: commands arrive in
envelopes with the client's id and sequence number (applied once, however often they were
sent) and the leader's clock reading (deterministic time for leases)."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, TypeAdapter, ValidationError

from herd.consensus.errors import CommandInvalid, MachineInvalid

__all__ = [
    "ApplyContext", "Envelope", "Machine", "MachineHost", "check_machine", "parse_input",
]

REQUIRED = ("apply", "snapshot", "restore")
RESULTS_KEPT_PER_CLIENT = 4096


@runtime_checkable
class Machine(Protocol):
    def apply(self, command: Any) -> Any: ...

    def snapshot(self) -> Any: ...

    def restore(self, state: Any) -> None: ...


@dataclass(frozen=True)
class ApplyContext:
    index: int
    time: float  # the leader's clock when it took the command, never going back


@dataclass(frozen=True)
class Envelope:
    client: str
    sequence: int
    command: Any
    time: float


def check_machine(machine: Any) -> None:
    """``MachineInvalid`` unless ``machine`` (a class) has the machine methods."""
    if not isinstance(machine, type):
        raise MachineInvalid("must be a class", field="machine", value=repr(machine))
    missing = [name for name in REQUIRED if not callable(getattr(machine, name, None))]
    if missing:
        raise MachineInvalid(f"lacks {', '.join(missing)}", field="machine",
                             value=machine.__qualname__)


def parse_input(model: Any, raw: Any, what: str) -> Any:
    """Validate a command or query against the machine's pydantic model (a class or a union);
    a tuple ``("put", key, value)`` fills the fields of the model its first item names."""
    if model is None:
        return raw
    if isinstance(raw, (tuple, list)) and raw and isinstance(raw[0], str):
        raw = _tuple_to_fields(model, raw)
    try:
        return TypeAdapter(model).validate_python(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(part) for part in first["loc"])
        raise CommandInvalid(first["msg"], field=f"{what}.{loc}" if loc else what,
                             value=raw) from None


def _tuple_to_fields(model: Any, raw: tuple[Any, ...] | list[Any]) -> Any:
    for candidate in _models(model):
        op = candidate.model_fields.get("op")
        if op is None or op.default != raw[0]:
            continue
        names = [name for name in candidate.model_fields if name != "op"]
        if len(raw) - 1 > len(names):
            raise CommandInvalid(f"{raw[0]} takes at most {len(names)} arguments",
                                 field="command", value=raw)
        return {"op": raw[0], **dict(zip(names, raw[1:], strict=False))}
    return raw


def _models(model: Any) -> list[type[BaseModel]]:
    """The pydantic classes of a model, a union of them, or an ``Annotated`` union."""
    if isinstance(model, type) and issubclass(model, BaseModel):
        return [model]
    args = typing.get_args(model)
    if typing.get_origin(model) is typing.Annotated:
        return _models(args[0])
    return [found for arg in args for found in _models(arg)]


class MachineHost:
    """Runs one machine: deduplicated apply, time, snapshot of machine and client sessions."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        self.machine = factory()
        self.takes_context = len(inspect.signature(self.machine.apply).parameters) >= 2
        self.results: dict[str, dict[int, Any]] = {}
        self.time = 0.0

    def apply(self, index: int, envelope: Envelope) -> Any:
        seen = self.results.setdefault(envelope.client, {})
        if envelope.sequence in seen:
            return seen[envelope.sequence]
        self.time = max(self.time, envelope.time)
        if self.takes_context:
            result = self.machine.apply(envelope.command, ApplyContext(index, self.time))
        else:
            result = self.machine.apply(envelope.command)
        seen[envelope.sequence] = result
        if len(seen) > RESULTS_KEPT_PER_CLIENT:
            del seen[min(seen)]
        return result

    def query(self, query: Any) -> Any:
        return self.machine.query(query, self.time) if self.query_takes_time() \
            else self.machine.query(query)

    def query_takes_time(self) -> bool:
        query = getattr(self.machine, "query", None)
        return query is not None and len(inspect.signature(query).parameters) >= 2

    def snapshot(self) -> Any:
        return {"machine": self.machine.snapshot(), "results": self.results, "time": self.time}

    def restore(self, state: Any) -> None:
        self.machine.restore(state["machine"])
        self.results = {client: dict(seen) for client, seen in state["results"].items()}
        self.time = state["time"]
