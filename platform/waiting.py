"""Deadline-bounded waiting: herd never waits without a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from herd.platform.errors import HerdTimeoutError

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float, interval: float = 0.05,
               what: str = "condition") -> T:
    """Poll ``predicate`` until it returns a truthy value and return it; raise
    ``HerdTimeoutError`` naming ``what`` once ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise HerdTimeoutError(f"{what} not reached within {timeout:.1f} s")
        time.sleep(interval)


def deadline_in(timeout: float) -> float:
    """The ``time.monotonic()`` instant ``timeout`` seconds from now."""
    return time.monotonic() + timeout


def time_left(deadline: float) -> float:
    """Seconds left until ``deadline`` (a ``time.monotonic()`` instant), with a tiny positive
    floor: a call given it still runs and raises its own timeout instead of a ``ValueError``."""
    return max(deadline - time.monotonic(), 0.001)
