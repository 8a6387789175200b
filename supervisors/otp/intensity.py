"""Restart intensity: OTP's ``add_restart/1`` as a pure sliding window (no Ray, no I/O).

A supervisor allows at most ``max_restarts`` restarts within any ``max_seconds`` window. Each
restart is recorded; the ones older than the window are forgotten; if more than ``max_restarts``
remain, the intensity is exceeded and the supervisor must stop (``supervisor.erl``: keep
``R >= Now - Period``, add ``Now``, exceeded when the count is ``> MaxR``). With
``max_restarts=0`` the first restart already exceeds it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

__all__ = ["RestartIntensity"]


class RestartIntensity:
    """The restarts within the last ``max_seconds`` seconds, and whether there are too many."""

    def __init__(self, max_restarts: int, max_seconds: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_restarts < 0 or not max_seconds > 0:
            raise ValueError("max_restarts must be >= 0 and max_seconds > 0")
        self.max_restarts = max_restarts
        self.max_seconds = max_seconds
        self._clock = clock
        self._restarts: deque[float] = deque()

    def add(self) -> bool:
        """Record a restart now; True if it is allowed, False if the intensity is exceeded."""
        now = self._clock()
        self._forget_before(now)
        self._restarts.append(now)
        return len(self._restarts) <= self.max_restarts

    def recent(self) -> int:
        """How many restarts fall within the current window."""
        self._forget_before(self._clock())
        return len(self._restarts)

    def _forget_before(self, now: float) -> None:
        threshold = now - self.max_seconds
        while self._restarts and self._restarts[0] < threshold:
            self._restarts.popleft()
