"""Events as pydantic models, a registry of their types and upcasters for old schema versions
(pure: no Ray, no I/O).

    class Deposited(Event):
        schema_version = 2
        amount: int
        currency: str

    codec = EventCodec([Deposited])
    codec.upcaster("Deposited", 1)(lambda data: {**data, "currency": "EUR"})

A stored event of type ``Deposited`` and schema version 1 is decoded by running the upcasters
from version 1 up to the class's current version, then validating the class. A type without a
class, a version without an upcaster path or a payload that does not validate raises
``UnknownEventType`` naming it: never a silent skip.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from herd.eventsourcing.errors import UnknownEventType
from herd.eventsourcing.store.records import NewEvent, RecordedEvent

__all__ = ["Event", "EventCodec", "Upcaster", "event_type_of"]

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


class Event(BaseModel):
    """Base of a user's events. ``event_type`` (default: the class name) is the stored type
    name; ``schema_version`` grows when the payload's shape changes (add an upcaster)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_type: ClassVar[str | None] = None
    schema_version: ClassVar[int] = 1


def event_type_of(cls: type[Event]) -> str:
    return cls.event_type or cls.__name__


class EventCodec:
    """Encodes events to store records and decodes records back, upcasting old versions."""

    def __init__(self, classes: Iterable[type[Event]] = ()) -> None:
        self._classes: dict[str, type[Event]] = {}
        self._upcasters: dict[tuple[str, int], Upcaster] = {}
        for cls in classes:
            self.register(cls)

    def register(self, cls: type[Event]) -> type[Event]:
        """Know ``cls`` by its type name; a different class of the same name is refused."""
        if not (isinstance(cls, type) and issubclass(cls, Event)):
            raise TypeError(f"{cls!r} is not a herd.eventsourcing Event class")
        name = event_type_of(cls)
        known = self._classes.get(name)
        if known is not None and known is not cls:
            raise ValueError(f"event type {name!r} is registered already ({known.__qualname__})")
        self._classes[name] = cls
        return cls

    def upcaster(self, event_type: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
        """Decorator: ``fn(data) -> data`` turns a payload of ``from_version`` into one of
        ``from_version + 1``."""
        def add(fn: Upcaster) -> Upcaster:
            self._upcasters[(event_type, from_version)] = fn
            return fn
        return add

    def types(self) -> list[str]:
        return sorted(self._classes)

    def encode(self, event: Event, metadata: dict[str, Any] | None = None) -> NewEvent:
        cls = type(event)
        name = event_type_of(cls)
        if self._classes.get(name) is not cls:
            raise UnknownEventType(name, "its class is not registered with this codec")
        return NewEvent(name, event.model_dump_json(), cls.schema_version,
                        json.dumps(metadata or {}, separators=(",", ":")))

    def decode(self, recorded: RecordedEvent) -> Event:
        cls = self._classes.get(recorded.type)
        if cls is None:
            raise UnknownEventType(recorded.type, f"no registered class (stream "
                                   f"{recorded.stream!r}, position {recorded.position})")
        if recorded.schema_version == cls.schema_version:
            try:
                return cls.model_validate_json(recorded.data)
            except ValidationError as exc:
                raise UnknownEventType(recorded.type, _invalid(recorded, exc)) from None
        if recorded.schema_version > cls.schema_version:
            raise UnknownEventType(recorded.type, f"stored schema version "
                                   f"{recorded.schema_version} is newer than the class's "
                                   f"{cls.schema_version}")
        data: dict[str, Any] = json.loads(recorded.data)
        for version in range(recorded.schema_version, cls.schema_version):
            upcast = self._upcasters.get((recorded.type, version))
            if upcast is None:
                raise UnknownEventType(recorded.type, f"no upcaster from schema version "
                                       f"{version} to {version + 1}")
            data = upcast(data)
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise UnknownEventType(recorded.type, _invalid(recorded, exc)) from None


def _invalid(recorded: RecordedEvent, exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ()))
    return (f"payload at position {recorded.position} does not validate: {where}: "
            f"{first.get('msg')}")
