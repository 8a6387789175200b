"""A bank: accounts as aggregates, a balances projection, and a transfer saga.

``Transfer`` withdraws from the source account with ``Withdrawn(transfer_to=...)``; the
``Transfers`` process manager reacts by depositing into the target (its idempotency keys make
the deposit happen once however often the event is delivered).
"""

from __future__ import annotations

from pydantic import PositiveInt

from herd.eventsourcing.codec import Event
from herd.eventsourcing.handlers import ProcessManager, Projection
from herd.eventsourcing.model import Aggregate, Command
from herd.eventsourcing.store.base import ProjectionTx
from herd.eventsourcing.store.records import RecordedEvent

__all__ = ["Account", "Balances", "Deposit", "Deposited", "InsufficientFunds", "Open", "Opened",
           "Transfer", "Transfers", "Withdraw", "Withdrawn"]


class Open(Command):
    owner: str


class Deposit(Command):
    amount: PositiveInt


class Withdraw(Command):
    amount: PositiveInt


class Transfer(Command):
    to: str
    amount: PositiveInt


class Opened(Event):
    owner: str


class Deposited(Event):
    amount: int


class Withdrawn(Event):
    amount: int
    transfer_to: str | None = None


class InsufficientFunds(Exception):
    pass


class Account(Aggregate):
    commands = (Open, Deposit, Withdraw, Transfer)
    events = (Opened, Deposited, Withdrawn)

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.owner: str | None = None
        self.balance = 0

    def execute(self, command: Command) -> list[Event]:
        if isinstance(command, Open):
            if self.owner is not None:
                raise ValueError(f"account {self.id} is open already")
            return [Opened(owner=command.owner)]
        if self.owner is None:
            raise ValueError(f"account {self.id} is not open")
        if isinstance(command, Deposit):
            return [Deposited(amount=command.amount)]
        if isinstance(command, (Withdraw, Transfer)):
            if command.amount > self.balance:
                raise InsufficientFunds(f"balance {self.balance} < {command.amount}")
            to = command.to if isinstance(command, Transfer) else None
            return [Withdrawn(amount=command.amount, transfer_to=to)]
        raise TypeError(f"unknown command {type(command).__name__}")

    def apply(self, event: Event) -> None:
        if isinstance(event, Opened):
            self.owner = event.owner
        elif isinstance(event, Deposited):
            self.balance += event.amount
        elif isinstance(event, Withdrawn):
            self.balance -= event.amount


class Balances(Projection):
    """``bank_balances``: each account's balance and how many events made it."""

    name = "balances"
    events = (Opened, Deposited, Withdrawn)

    def project(self, event: Event, recorded: RecordedEvent, tx: ProjectionTx) -> None:
        account = recorded.stream.split("-", 1)[1]
        delta = (event.amount if isinstance(event, Deposited)
                 else -event.amount if isinstance(event, Withdrawn) else 0)
        _create(tx)
        tx.execute("INSERT INTO bank_balances (account, balance, events) VALUES (?, ?, 1) "
                   "ON CONFLICT (account) DO UPDATE SET balance = bank_balances.balance + "
                   "excluded.balance, events = bank_balances.events + 1", (account, delta))

    def reset(self, tx: ProjectionTx) -> None:
        _create(tx)
        tx.execute("DELETE FROM bank_balances")


def _create(tx: ProjectionTx) -> None:
    tx.execute("CREATE TABLE IF NOT EXISTS bank_balances (account TEXT PRIMARY KEY, "
               "balance BIGINT NOT NULL, events BIGINT NOT NULL)")


class Transfers(ProcessManager):
    """Completes transfers: a ``Withdrawn`` with ``transfer_to`` becomes a ``Deposit``."""

    name = "transfers"
    events = (Withdrawn,)

    def __init__(self) -> None:
        self.completed = 0

    def react(self, event: Event, recorded: RecordedEvent) -> list[Command]:
        if not isinstance(event, Withdrawn) or event.transfer_to is None:
            return []
        self.completed += 1
        return [Deposit(aggregate_id=event.transfer_to, amount=event.amount)]
