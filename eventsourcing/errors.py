"""The errors of herd.eventsourcing (all ``HerdError``s, picklable across Ray calls)."""

from __future__ import annotations

from herd.platform.errors import HerdError

__all__ = ["CommandRejected", "EventSourcingError", "Fenced", "StoreError", "UnknownEventType",
           "WrongExpectedVersion"]


class EventSourcingError(HerdError):
    """Base of the event-sourcing errors."""


class StoreError(EventSourcingError):
    """The event store could not be opened or used (bad URL, schema, database error)."""


class WrongExpectedVersion(EventSourcingError):
    """An append expected ``stream`` at ``expected`` but it is at ``actual``; nothing was
    written."""

    def __init__(self, stream: str, expected: int, actual: int) -> None:
        self.stream, self.expected, self.actual = stream, expected, actual
        super().__init__(f"stream {stream!r} is at version {actual}, the append expected "
                         f"{expected}")

    def __reduce__(self) -> tuple[type, tuple[str, int, int]]:
        return (WrongExpectedVersion, (self.stream, self.expected, self.actual))


class Fenced(EventSourcingError):
    """An append carried writer epoch ``epoch`` but a newer writer (epoch ``current``) has
    claimed ``stream``: this writer was replaced and must stop; nothing was written."""

    def __init__(self, stream: str, epoch: int, current: int) -> None:
        self.stream, self.epoch, self.current = stream, epoch, current
        super().__init__(f"stream {stream!r} is claimed by writer epoch {current}; an append "
                         f"with epoch {epoch} is refused (this writer was replaced)")

    def __reduce__(self) -> tuple[type, tuple[str, int, int]]:
        return (Fenced, (self.stream, self.epoch, self.current))


class UnknownEventType(EventSourcingError):
    """A stored event's type (or schema version) has no registered class or upcaster."""

    def __init__(self, event_type: str, detail: str) -> None:
        self.event_type, self.detail = event_type, detail
        super().__init__(f"cannot decode event type {event_type!r}: {detail}")

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        return (UnknownEventType, (self.event_type, self.detail))


class CommandRejected(EventSourcingError):
    """The aggregate refused a command: its ``execute`` raised ``error_type`` with ``message``
    (a domain error), or the command did not validate. Nothing was appended."""

    def __init__(self, command: str, error_type: str, message: str) -> None:
        self.command, self.error_type, self.message = command, error_type, message
        super().__init__(f"{command} rejected: {error_type}: {message}")

    def __reduce__(self) -> tuple[type, tuple[str, str, str]]:
        return (CommandRejected, (self.command, self.error_type, self.message))
