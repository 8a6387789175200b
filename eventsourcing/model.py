"""What a user writes: commands, and aggregates that turn commands into events (pure).

    class Deposit(Command):
        amount: PositiveInt

    class Account(Aggregate):
        commands = (Open, Deposit)
        events = (Opened, Deposited)

        def __init__(self, aggregate_id: str) -> None:
            super().__init__(aggregate_id)
            self.balance = 0

        def execute(self, command: Command) -> list[Event]:
            if isinstance(command, Deposit):
                return [Deposited(amount=command.amount)]
            ...

        def apply(self, event: Event) -> None:       # pure: no I/O, no randomness, no clock
            if isinstance(event, Deposited):
                self.balance += event.amount

``execute`` refuses a command by raising (any ``Exception``: a domain error); it must not change
state (``apply`` does, after the events are durable). ``snapshot()`` / ``restore(state)`` default
to the instance's public attributes as JSON.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from herd.eventsourcing.codec import Event

__all__ = ["Aggregate", "Command", "CommandResult"]


class Command(BaseModel):
    """Base of a user's commands: ``aggregate_id`` routes it; a command with an
    ``idempotency_key`` appends at most once however often it is retried (the app gives each
    dispatched command a key if it has none, so its own retries never append twice)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    aggregate_id: str = Field(min_length=1, max_length=200, pattern=r"^[^/\s]+$")
    idempotency_key: str | None = Field(default=None, max_length=200)
    correlation_id: str | None = None
    causation_id: str | None = None


class CommandResult(BaseModel):
    """What a command's acknowledgement says: the aggregate's version after it, the types of
    the events it appended (durably), and whether it was a retry answered from the record."""

    model_config = ConfigDict(frozen=True)

    aggregate_id: str
    version: int
    events: tuple[str, ...] = ()
    duplicate: bool = False
    position: int = 0


class Aggregate:
    """Base of a user's aggregates (one instance per id)."""

    commands: ClassVar[tuple[type[Command], ...]] = ()
    events: ClassVar[tuple[type[Event], ...]] = ()
    #: take a snapshot every this many events (0: never)
    snapshot_every: ClassVar[int] = 200

    def __init__(self, aggregate_id: str) -> None:
        self.id = aggregate_id

    def execute(self, command: Command) -> list[Event]:
        raise NotImplementedError(f"{type(self).__name__}.execute")

    def apply(self, event: Event) -> None:
        raise NotImplementedError(f"{type(self).__name__}.apply")

    def snapshot(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if not k.startswith("_") and k != "id"}

    def restore(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)

    def query(self) -> dict[str, Any]:
        """What ``App.query`` returns (default: the snapshot state)."""
        return self.snapshot()
