"""Restart intensity: OTP's sliding window (add_restart/1), with a controlled clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from herd.supervisors.otp.intensity import RestartIntensity


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_max_restarts_within_the_period_are_allowed_and_one_more_is_not() -> None:
    clock = Clock()
    window = RestartIntensity(3, 5.0, clock)
    assert [window.add() for _ in range(3)] == [True, True, True]
    clock.now += 4.9
    assert window.add() is False


def test_restarts_older_than_the_period_are_forgotten() -> None:
    """OTP multiple_restarts: intensity 1 per 1 s, a restart every 2.1 s never exceeds it."""
    clock = Clock()
    window = RestartIntensity(1, 1.0, clock)
    for _ in range(5):
        assert window.add() is True
        clock.now += 2.1
    assert window.recent() == 0


def test_zero_intensity_stops_at_the_first_restart() -> None:
    assert RestartIntensity(0, 5.0, Clock()).add() is False


def test_window_boundary_keeps_restarts_exactly_one_period_old() -> None:
    """supervisor.erl keeps restarts with R >= Now - Period."""
    clock = Clock()
    window = RestartIntensity(1, 5.0, clock)
    assert window.add()
    clock.now += 5.0
    assert window.add() is False


def test_invalid_flags() -> None:
    with pytest.raises(ValueError):
        RestartIntensity(-1, 5.0)
    with pytest.raises(ValueError):
        RestartIntensity(1, 0.0)


@given(st.integers(min_value=0, max_value=6), st.floats(min_value=0.5, max_value=10),
       st.lists(st.floats(min_value=0, max_value=3), min_size=1, max_size=30))
def test_matches_a_direct_count(max_restarts: int, period: float, gaps: list[float]) -> None:
    clock = Clock()
    window = RestartIntensity(max_restarts, period, clock)
    times: list[float] = []
    for gap in gaps:
        clock.now += gap
        times.append(clock.now)
        in_window = [t for t in times if t >= clock.now - period]
        assert window.add() is (len(in_window) <= max_restarts)
