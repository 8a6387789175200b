"""The history of a run, as in Jepsen and etcd's robustness tests: every client operation and
every fault is an ``invoke`` followed by its outcome, ``ok`` (it happened), ``fail`` (it
certainly did not) or ``info`` (unknown: a timeout, a lost connection). Times are
``time.monotonic()`` seconds since the run began. Appending is thread-safe (the client and the
nemesis run in their own threads)."""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

__all__ = ["Event", "EventType", "History", "OpenOp"]

EventType = Literal["invoke", "ok", "fail", "info"]
COMPLETIONS = ("ok", "fail", "info")


@dataclass(frozen=True)
class Event:
    """One line of the history. ``op`` links a completion to its invocation; ``process`` is
    who acted (``client``, ``nemesis``, ``observer``)."""

    index: int
    op: int
    process: str
    type: EventType
    f: str
    value: Any
    time: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Event:
        return cls(**data)


@dataclass
class OpenOp:
    """An invoked operation waiting for its outcome."""

    history: History
    op: int
    process: str
    f: str
    started: float
    done: bool = field(default=False)

    def ok(self, value: Any = None) -> Event:
        return self._complete("ok", value)

    def fail(self, value: Any = None) -> Event:
        return self._complete("fail", value)

    def info(self, value: Any = None) -> Event:
        return self._complete("info", value)

    def _complete(self, kind: EventType, value: Any) -> Event:
        if self.done:
            raise RuntimeError(f"operation {self.op} ({self.f}) already completed")
        self.done = True
        return self.history.append(self.op, self.process, kind, self.f, value)


class History:
    """An append-only list of events."""

    def __init__(self, events: list[Event] | None = None) -> None:
        self.events: list[Event] = list(events or [])
        self._lock = threading.Lock()
        self._origin = time.monotonic()
        self._next_op = 1 + max((e.op for e in self.events), default=0)

    def now(self) -> float:
        """Seconds since the run began."""
        return time.monotonic() - self._origin

    def invoke(self, process: str, f: str, value: Any = None) -> OpenOp:
        with self._lock:
            op = self._next_op
            self._next_op += 1
        event = self.append(op, process, "invoke", f, value)
        return OpenOp(self, op, process, f, event.time)

    def record(self, process: str, f: str, value: Any = None) -> Event:
        """An observation that is not an operation (e.g. the final state): one ``info``."""
        with self._lock:
            op = self._next_op
            self._next_op += 1
        return self.append(op, process, "info", f, value)

    def append(self, op: int, process: str, kind: EventType, f: str, value: Any) -> Event:
        with self._lock:
            event = Event(len(self.events), op, process, kind, f, value, round(self.now(), 4))
            self.events.append(event)
            return event

    def completions(self, process: str | None = None) -> list[tuple[Event, Event | None]]:
        """(invoke, outcome) pairs in invocation order; outcome None if it never completed."""
        outcome: dict[int, Event] = {}
        for event in self.events:
            if event.type in COMPLETIONS:
                outcome[event.op] = event
        return [(e, outcome.get(e.op)) for e in self.events
                if e.type == "invoke" and (process is None or e.process == process)]

    def last(self, f: str) -> Event | None:
        """The latest event named ``f`` (e.g. the final observation)."""
        return next((e for e in reversed(self.events) if e.f == f), None)

    def to_list(self) -> list[dict[str, Any]]:
        with self._lock:
            return [e.to_dict() for e in self.events]

    @classmethod
    def from_list(cls, data: list[dict[str, Any]]) -> History:
        return cls([Event.from_dict(d) for d in data])
