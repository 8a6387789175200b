"""Circuit breakers and retry backoff: pure decisions (no Ray, no clock of their own).

A :class:`CircuitBreaker` guards one target. *Closed*: calls pass; ``failure_threshold``
consecutive failures open it. *Open*: calls are refused until ``cool_down_s`` has passed, then it
is *half-open*: up to ``half_open_calls`` trial calls pass; ``success_threshold`` successes close
it, one failure opens it again for another cool-down. Every method takes ``now`` (seconds of a
monotonic clock), so tests drive time by hand.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from herd.platform.errors import ConfigError, HerdError

BreakerState = Literal["closed", "open", "half_open"]


class BreakerOpen(HerdError):
    """A call was refused without being sent: the target's circuit breaker is open."""

    def __init__(self, target: str, retry_in_s: float) -> None:
        self.target = target
        self.retry_in_s = retry_in_s
        super().__init__(f"circuit breaker of {target} is open (next trial in {retry_in_s:.2f} s)")


def _positive_int(value: object, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError("must be an integer >= 1", source="breaker", field=field, value=value)
    return value


def _non_negative(value: object, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ConfigError("must be a number >= 0", source="breaker", field=field, value=value)
    return float(value)


@dataclass(frozen=True)
class BreakerConfig:
    failure_threshold: int = 5
    cool_down_s: float = 5.0
    half_open_calls: int = 1
    success_threshold: int = 1

    def __post_init__(self) -> None:
        _positive_int(self.failure_threshold, "failure_threshold")
        _non_negative(self.cool_down_s, "cool_down_s")
        _positive_int(self.half_open_calls, "half_open_calls")
        _positive_int(self.success_threshold, "success_threshold")


class CircuitBreaker:
    """The breaker of one target (not thread-safe: its owner serialises calls to it)."""

    def __init__(self, config: BreakerConfig | None = None) -> None:
        self.config = config or BreakerConfig()
        self._state: BreakerState = "closed"
        self._failures = 0
        self._successes = 0
        self._trials = 0
        self._opened_at = 0.0
        self.opened = 0  # how many times it opened

    def state(self, now: float) -> BreakerState:
        if self._state == "open" and now - self._opened_at >= self.config.cool_down_s:
            self._state, self._trials, self._successes = "half_open", 0, 0
        return self._state

    def retry_in(self, now: float) -> float:
        """Seconds until an open breaker lets a trial call through (0 unless open)."""
        if self.state(now) != "open":
            return 0.0
        return self.config.cool_down_s - (now - self._opened_at)

    def allow(self, now: float) -> bool:
        """Whether a call may be sent now; a half-open breaker counts the trial it admits."""
        state = self.state(now)
        if state == "closed":
            return True
        if state == "half_open" and self._trials < self.config.half_open_calls:
            self._trials += 1
            return True
        return False

    def record_success(self, now: float) -> None:
        if self.state(now) == "half_open":
            self._successes += 1
            if self._successes >= self.config.success_threshold:
                self._state, self._failures = "closed", 0
            return
        self._failures = 0

    def record_failure(self, now: float) -> None:
        state = self.state(now)
        self._failures += 1
        if state == "half_open" or (state == "closed"
                                    and self._failures >= self.config.failure_threshold):
            self._state, self._opened_at, self._failures = "open", now, 0
            self.opened += 1


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of idempotent calls: ``attempts`` in all, the delay before retry ``n`` (1-based)
    drawn uniformly from ``[0, min(cap_s, base_s * 2 ** (n - 1))]`` ("full jitter")."""

    attempts: int = 3
    base_s: float = 0.05
    cap_s: float = 1.0

    def __post_init__(self) -> None:
        _positive_int(self.attempts, "attempts")
        _non_negative(self.base_s, "base_s")
        _non_negative(self.cap_s, "cap_s")

    def delay(self, retry: int, rng: random.Random) -> float:
        return rng.uniform(0.0, min(self.cap_s, self.base_s * 2 ** (retry - 1)))
