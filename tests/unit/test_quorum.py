"""herd.platform.quorum without Ray: majority, static-member quorum, results and validation.
``QuorumCall.wait`` itself runs against real tasks in tests/cluster/test_pubsub.py."""

from __future__ import annotations

from typing import Any

import pytest
import ray
from ray.exceptions import RayTaskError
from hypothesis import given, settings
from hypothesis import strategies as st

from herd.platform.errors import ConfigError, HerdTimeoutError, NoQuorum
from herd.platform.quorum import (
    QuorumCall,
    QuorumNotReached,
    QuorumResult,
    QuorumTimeout,
    has_quorum,
    majority,
)


@pytest.mark.parametrize("n, expected", [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (6, 4), (7, 4)])
def test_majority(n: int, expected: int) -> None:
    assert majority(n) == expected


@pytest.mark.parametrize("n", [0, -1, 2.0, True, "3"])
def test_majority_rejects_bad_counts(n: Any) -> None:
    with pytest.raises(ConfigError):
        majority(n)


def test_has_quorum_counts_over_the_static_list() -> None:
    static = ["a", "b", "c", "d", "e"]
    assert has_quorum(["a", "b", "c"], static)
    assert not has_quorum(["a", "b"], static)  # Horde would count 2 of 2 alive as a majority
    assert not has_quorum(["a", "b", "x", "y", "z"], static)  # strangers do not count
    assert not has_quorum(["a", "a", "b", "b"], static)  # duplicates count once
    assert has_quorum(iter(["e", "d", "c"]), static)
    assert not has_quorum(["a"], ["a", "b"]) and has_quorum(["a", "b"], ["a", "b"])


@pytest.mark.parametrize("static", [[], ["a", "a"], "abc"])
def test_has_quorum_rejects_bad_static_lists(static: Any) -> None:
    with pytest.raises(ConfigError) as info:
        has_quorum(["a"], static)
    assert info.value.field == "static_members"


@settings(max_examples=150, deadline=None)
@given(static=st.lists(st.text("abcdefgh", min_size=1, max_size=2), min_size=1, max_size=9,
                       unique=True),
       data=st.data())
def test_two_disjoint_sides_never_both_have_quorum(static: list[str], data: st.DataObject
                                                   ) -> None:
    side = data.draw(st.lists(st.booleans(), min_size=len(static), max_size=len(static)))
    left = [m for m, s in zip(static, side) if s]
    right = [m for m, s in zip(static, side) if not s]
    strangers = data.draw(st.lists(st.text("xyz", min_size=3, max_size=3), max_size=5))
    assert not (has_quorum(left + strangers, static) and has_quorum(right + strangers, static))
    assert has_quorum(left, static) == (2 * len(left) > len(static))


def test_quorum_result_bookkeeping() -> None:
    result = QuorumResult(required=2, total=4)
    assert result.pending == [0, 1, 2, 3] and not result.reached and not result.impossible
    result.failures[1] = RuntimeError("boom\nwith a traceback")
    result.successes[3] = "d"
    assert not result.reached and result.pending == [0, 2]
    result.failures[2] = ValueError("bad")
    assert not result.impossible  # one pending call could still make it
    result.failures[0] = ValueError("worse")
    assert result.impossible
    summary = result.summary()
    assert "1 of 4 succeeded, 3 failed, 0 pending; 2 required" in summary
    assert "#1: RuntimeError: boom;" in summary and "traceback" not in summary
    ok = QuorumResult(required=2, total=3, successes={2: "c", 0: "a"})
    assert ok.reached and ok.values == ["a", "c"]


def test_summary_describes_a_task_error_by_its_cause() -> None:
    task_error = RayTaskError("replica", "Traceback ...", ValueError("replica 2 refused"))
    result = QuorumResult(required=1, total=1, failures={0: task_error.as_instanceof_cause()})
    assert "#0: ValueError: replica 2 refused" in result.summary()


def test_quorum_errors_are_herd_errors_with_the_result() -> None:
    result = QuorumResult(required=2, total=3, failures={0: RuntimeError("x")})
    no = QuorumNotReached("replicate k", result)
    assert isinstance(no, NoQuorum) and no.result is result and "replicate k: no quorum" in str(no)
    late = QuorumTimeout("replicate k", 1.5, result)
    assert isinstance(late, HerdTimeoutError) and "within 1.5 s" in str(late)


def refs(n: int) -> list[ray.ObjectRef]:
    return [ray.ObjectRef.from_random() for _ in range(n)]


@pytest.mark.parametrize("make, field", [
    (lambda: QuorumCall([]), "refs"),
    (lambda: QuorumCall(["not a ref"]), "refs"),  # type: ignore[list-item]
    (lambda: QuorumCall(refs(1) * 2), "refs"),
    (lambda: QuorumCall(refs(3), required=0), "required"),
    (lambda: QuorumCall(refs(3), required=4), "required"),
    (lambda: QuorumCall(refs(3), required=True), "required"),
    (lambda: QuorumCall(refs(3), timeout=0), "timeout"),
])
def test_quorum_call_validates_its_input(make: Any, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        make()
    assert info.value.field == field


def test_quorum_call_defaults_to_a_majority() -> None:
    assert QuorumCall(refs(5)).required == 3
    assert QuorumCall(refs(4), required=4, timeout=2).required == 4
