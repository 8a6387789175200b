"""Retry, backoff and parking decisions (pure: no Ray, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["HandlerRetry", "backoff_s"]


def backoff_s(attempt: int, base_s: float, cap_s: float = 2.0) -> float:
    """Exponential backoff: ``base_s`` for the first retry, doubling, at most ``cap_s``."""
    return float(min(cap_s, base_s * (2 ** max(0, attempt - 1))))


@dataclass
class HandlerRetry:
    """A handler's attempts at the event at ``position``: retried ``retries`` times with
    backoff, then parked (the handler stops there, the position and the error recorded)."""

    retries: int
    base_s: float
    position: int = 0
    attempts: int = 0

    def failed(self, position: int) -> float | None:
        """Seconds to wait before the next attempt, or None: park now."""
        if position != self.position:
            self.position, self.attempts = position, 0
        self.attempts += 1
        if self.attempts > self.retries:
            return None
        return backoff_s(self.attempts, self.base_s)

    def succeeded(self) -> None:
        self.position, self.attempts = 0, 0
