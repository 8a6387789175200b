"""Deadlines that propagate: a call made while a deadline is in force inherits what is left.

``herd.platform.erpc`` runs every remote function inside ``scope(remaining)``, so an erpc call
made inside a called function gets at most the caller's remaining time, as gRPC deadlines do.
The deadline lives in a ``contextvars.ContextVar``: per thread and per asyncio task.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterator
from contextlib import contextmanager

from herd.platform.errors import ConfigError, HerdTimeoutError

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("herd_deadline",
                                                                        default=None)


class DeadlineExceeded(HerdTimeoutError):
    """The deadline in force passed before the call could start."""


def check_timeout(timeout: object, field: str = "timeout") -> float:
    """``timeout`` as a positive float; ``ConfigError`` naming ``field`` otherwise."""
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise ConfigError("must be a positive number of seconds", field=field, value=timeout)
    return float(timeout)


def current() -> float | None:
    """The ``time.monotonic()`` instant of the deadline in force, or None."""
    return _deadline.get()


def remaining(timeout: float | None = None, default: float = 30.0) -> float:
    """Seconds a call started now may take: ``timeout`` (or ``default``), cut to what is left of
    the deadline in force. Raises ``DeadlineExceeded`` when that deadline has passed."""
    budget = default if timeout is None else timeout
    deadline = _deadline.get()
    if deadline is None:
        return budget
    left = deadline - time.monotonic()
    if left <= 0:
        raise DeadlineExceeded(f"the deadline in force passed {-left:.3f} s ago")
    return min(budget, left)


@contextmanager
def scope(timeout: float) -> Iterator[float]:
    """Run the block under a deadline ``timeout`` seconds from now (or the enclosing one, if
    sooner); yields the deadline's ``time.monotonic()`` instant."""
    instant = time.monotonic() + check_timeout(timeout)
    enclosing = _deadline.get()
    if enclosing is not None:
        instant = min(instant, enclosing)
    token = _deadline.set(instant)
    try:
        yield instant
    finally:
        _deadline.reset(token)
