"""The circuit breaker, retry backoff and propagated deadlines (pure: no Ray)."""

from __future__ import annotations

import random
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from herd.platform import deadline
from herd.platform.breaker import BreakerConfig, BreakerOpen, CircuitBreaker, RetryPolicy
from herd.platform.errors import ConfigError, HerdError


def test_opens_after_threshold_consecutive_failures() -> None:
    breaker = CircuitBreaker(BreakerConfig(failure_threshold=3, cool_down_s=10))
    breaker.record_failure(0.0)
    breaker.record_failure(0.1)
    breaker.record_success(0.2)  # resets the count: failures must be consecutive
    breaker.record_failure(0.3)
    breaker.record_failure(0.4)
    assert breaker.state(0.4) == "closed" and breaker.allow(0.4)
    breaker.record_failure(0.5)
    assert breaker.state(0.5) == "open"
    assert not breaker.allow(5.0)
    assert breaker.retry_in(5.0) == pytest.approx(5.5)
    assert breaker.opened == 1


def test_half_open_after_cool_down_admits_limited_trials() -> None:
    breaker = CircuitBreaker(BreakerConfig(failure_threshold=1, cool_down_s=2, half_open_calls=2,
                                           success_threshold=2))
    breaker.record_failure(0.0)
    assert breaker.state(1.9) == "open"
    assert breaker.state(2.0) == "half_open"
    assert breaker.allow(2.0) and breaker.allow(2.0)
    assert not breaker.allow(2.0)  # only two trials while half-open
    breaker.record_success(2.1)
    assert breaker.state(2.1) == "half_open"
    breaker.record_success(2.2)
    assert breaker.state(2.2) == "closed" and breaker.allow(2.2)


def test_failed_trial_opens_again_for_a_full_cool_down() -> None:
    breaker = CircuitBreaker(BreakerConfig(failure_threshold=1, cool_down_s=1))
    breaker.record_failure(0.0)
    assert breaker.allow(1.0)
    breaker.record_failure(1.1)
    assert breaker.state(2.0) == "open" and breaker.state(2.1) == "half_open"
    assert breaker.opened == 2


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.floats(0, 3)), max_size=60))
def test_never_admits_while_open(events: list[tuple[bool, float]]) -> None:
    config = BreakerConfig(failure_threshold=2, cool_down_s=1.0)
    breaker = CircuitBreaker(config)
    now = 0.0
    for ok, step in events:
        now += step
        if breaker.state(now) == "open":
            assert not breaker.allow(now)
            continue
        if breaker.allow(now):
            (breaker.record_success if ok else breaker.record_failure)(now)


@pytest.mark.parametrize("field,value", [("failure_threshold", 0), ("cool_down_s", -1),
                                         ("half_open_calls", True), ("success_threshold", 1.5)])
def test_bad_breaker_config_names_the_field(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        BreakerConfig(**{field: value})  # type: ignore[arg-type]


def test_breaker_open_is_a_herd_error() -> None:
    assert issubclass(BreakerOpen, HerdError)
    assert "node-1" in str(BreakerOpen("node-1", 0.5))


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 20), st.integers(0, 2**32))
def test_backoff_is_bounded_full_jitter(retry: int, seed: int) -> None:
    policy = RetryPolicy(attempts=5, base_s=0.05, cap_s=0.4)
    delay = policy.delay(retry, random.Random(seed))
    assert 0.0 <= delay <= min(0.4, 0.05 * 2 ** (retry - 1))


def test_backoff_grows_on_average() -> None:
    policy = RetryPolicy(base_s=0.01, cap_s=10)
    rng = random.Random(7)
    means = [sum(policy.delay(n, rng) for _ in range(400)) / 400 for n in (1, 3, 5)]
    assert means[0] < means[1] < means[2]


def test_nested_scope_inherits_the_sooner_deadline() -> None:
    assert deadline.current() is None
    assert deadline.remaining(4.0) == 4.0
    with deadline.scope(0.5) as outer:
        with deadline.scope(30.0) as inner:
            assert inner == outer
            assert deadline.remaining(10.0) <= 0.5
        with deadline.scope(0.1) as sooner:
            assert sooner < outer
    assert deadline.current() is None


def test_passed_deadline_raises_before_the_call() -> None:
    with deadline.scope(0.01):
        time.sleep(0.02)
        with pytest.raises(deadline.DeadlineExceeded):
            deadline.remaining(1.0)


def test_deadline_is_per_thread() -> None:
    seen: list[float | None] = []
    with deadline.scope(1.0):
        thread = threading.Thread(target=lambda: seen.append(deadline.current()))
        thread.start()
        thread.join(5)
    assert seen == [None]


@pytest.mark.parametrize("bad", [0, -1, True, "1"])
def test_bad_timeout_is_config_error(bad: object) -> None:
    with pytest.raises(ConfigError, match="timeout"):
        deadline.check_timeout(bad)
