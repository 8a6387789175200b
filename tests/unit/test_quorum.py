"""herd.platform.quorum without Ray: quorum arithmetic over static members, tie breaking, early
decisions, replica quorums, results and input validation. The calls themselves run against a
real cluster in tests/cluster/test_quorum.py (and QuorumCall in tests/cluster/test_pubsub.py)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import ray
from hypothesis import given
from hypothesis import strategies as st
from ray.exceptions import RayTaskError

from herd.platform.errors import ConfigError, HerdTimeoutError, NoQuorum, NotConnectedError
from herd.platform.quorum import (
    Decision,
    QuorumCall,
    QuorumNotAchieved,
    QuorumNotReached,
    QuorumResult,
    QuorumTimeout,
    ReplicaQuorum,
    has_quorum,
    majority_value,
    make_decision,
    quorum_count,
    quorum_read,
    quorum_write,
    tie_break_key,
)
from herd.platform.quorum.core import reachable

NODE_A, NODE_B, NODE_C = ("a" * 56, "b" * 56, "c" * 56)


def vote() -> str:
    return "yes"


# ------------------------------------------------------------------------------- arithmetic
@pytest.mark.parametrize("n, expected", [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (6, 4), (7, 4),
                                         (100, 51)])
def test_quorum_count(n: int, expected: int) -> None:
    assert quorum_count(n) == expected


@pytest.mark.parametrize("n", [0, -1, 2.0, True, "3", None])
def test_quorum_count_rejects_bad_counts(n: Any) -> None:
    with pytest.raises(ConfigError) as info:
        quorum_count(n)
    assert info.value.field == "n"


@pytest.mark.parametrize("votes, n, expected", [
    (0, 1, False), (1, 1, True), (1, 2, False), (2, 2, True), (1, 3, False), (2, 3, True),
    (2, 4, False), (3, 4, True), (3, 5, True), (3, 6, False),
])
def test_has_quorum_with_counts(votes: int, n: int, expected: bool) -> None:
    assert has_quorum(votes, n) is expected
    assert has_quorum(votes, [f"m{i}" for i in range(n)]) is expected


def test_has_quorum_with_voter_ids_counts_only_listed_members_once() -> None:
    static = ["a", "b", "c", "d", "e"]
    assert has_quorum(["a", "b", "c"], static)
    assert not has_quorum(["a", "b"], static)  # Horde would count 2 of 2 alive as a majority
    assert not has_quorum(["a", "b", "x", "y", "z"], static)  # strangers do not count
    assert not has_quorum(["a", "a", "b", "b"], static)  # duplicates count once
    assert has_quorum(iter(["e", "d", "c"]), static)
    assert has_quorum({"e", "d", "c"}, frozenset(static))
    assert not has_quorum(["a"], ["a", "b"]) and has_quorum(["a", "b"], ["a", "b"])
    assert has_quorum(["x", "y"], 3) and not has_quorum(["x", "x"], 3)  # ids over a bare count


@pytest.mark.parametrize("votes, n, field", [
    (["a"], [], "n"), (["a"], ["a", "a"], "n"), (["a"], "abc", "n"), (["a"], [["a"]], "n"),
    (1, 0, "n"), (1, 3.0, "n"), (1, True, "n"), (1, None, "n"),
    (4, 3, "votes"), (-1, 3, "votes"), (True, 3, "votes"), (1.0, 3, "votes"),
    ("ab", ["a", "b"], "votes"), ([["a"]], ["a"], "votes"), (["w", "x", "y", "z"], 3, "votes"),
    (None, 3, "votes"),
])
def test_has_quorum_rejects_bad_input(votes: Any, n: Any, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        has_quorum(votes, n)
    assert info.value.field == field


@given(static=st.lists(st.text("abcdefgh", min_size=1, max_size=2), min_size=1, max_size=9,
                       unique=True),
       data=st.data())
def test_two_disjoint_voter_sets_never_both_have_quorum(static: list[str], data: st.DataObject
                                                        ) -> None:
    side = data.draw(st.lists(st.sampled_from([0, 1, 2]), min_size=len(static),
                              max_size=len(static)))  # 2: voted for neither
    left = [m for m, s in zip(static, side, strict=False) if s == 0]
    right = [m for m, s in zip(static, side, strict=False) if s == 1]
    strangers = data.draw(st.lists(st.text("xyz", min_size=3, max_size=3), max_size=5))
    assert not (has_quorum(left + strangers + left, static)
                and has_quorum(right + strangers, static))
    assert not (has_quorum(len(left), len(static)) and has_quorum(len(right), len(static)))
    assert has_quorum(left, static) == (2 * len(left) > len(static))


# ---------------------------------------------------------------------------- tie breaking
def test_tie_break_key_is_canonical() -> None:
    assert tie_break_key({"b": 1, "a": [1, 2]}) == tie_break_key({"a": [1, 2], "b": 1})
    assert tie_break_key("a") < tie_break_key("b")
    assert tie_break_key([1, 2]) != tie_break_key((1, 2))  # same JSON, different type
    assert tie_break_key(1) != tie_break_key(True)
    assert tie_break_key({1, 2})[0] == 1 and tie_break_key("z") < tie_break_key({1})  # JSON first
    loop: list[Any] = []
    loop.append(loop)
    assert tie_break_key(loop)[0] == 1  # not JSON-serialisable: falls back to repr


@pytest.mark.parametrize("values, needed, expected", [
    (["a", "a", "b"], 2, ("a", 2)),
    (["b", "a", "b"], 2, ("b", 2)),
    (["a", "b", "c"], 2, None),  # no value reaches needed
    (["b", "a"], 1, ("a", 1)),  # a tie goes to the smallest canonical form
    (["b", "b", "a", "a", "c"], 2, ("a", 2)),
    ([{"v": 2}, {"v": 1}, {"v": 2}], 2, ({"v": 2}, 2)),  # unhashable values group by ==
    ([], 1, None),
])
def test_majority_value(values: list[Any], needed: int, expected: Any) -> None:
    assert majority_value(values, needed) == expected


@given(st.lists(st.sampled_from(["a", "b", "c", 1, 2, None]), min_size=1, max_size=9),
       st.randoms(use_true_random=False), st.data())
def test_majority_value_ignores_the_order_of_the_votes(values: list[Any], random: Any,
                                                       data: st.DataObject) -> None:
    needed = data.draw(st.integers(1, len(values)))
    shuffled = list(values)
    random.shuffle(shuffled)
    assert majority_value(values, needed) == majority_value(shuffled, needed)


@given(st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=9), st.data())
def test_an_early_answer_is_the_answer_all_votes_give(values: list[Any], data: st.DataObject
                                                      ) -> None:
    """What ``make_decision`` relies on to stop waiting: decided early = decided at the end,
    and "unreachable" early = no winner at the end, whatever the outstanding votes are."""
    needed = data.draw(st.integers(1, len(values)))
    arrived = data.draw(st.integers(0, len(values)))
    seen, pending = values[:arrived], len(values) - arrived
    early = majority_value(seen, needed, pending)
    if early is not None:
        final = majority_value(values, needed)
        assert final is not None and final[0] == early[0] and final[1] >= early[1]
    if not reachable(seen, needed, pending):
        assert majority_value(values, needed) is None
    if pending == 0:
        assert reachable(seen, needed, 0) == (majority_value(seen, needed) is not None)


def test_majority_value_waits_while_pending_votes_could_change_the_winner() -> None:
    assert majority_value(["a", "a"], 2, pending=1) == ("a", 2)  # a majority of 3 is final
    assert majority_value(["a", "a"], 2, pending=2) is None  # b, b would tie and win
    assert majority_value(["a", "a", "a"], 2, pending=2) == ("a", 3)


@pytest.mark.parametrize("needed, pending", [(0, 0), (True, 0), (1, -1), (1, 0.5)])
def test_majority_value_rejects_bad_counts(needed: Any, pending: Any) -> None:
    with pytest.raises(ConfigError):
        majority_value(["a"], needed, pending)


# --------------------------------------------------------------------------- decisions
def test_decision_and_its_failure() -> None:
    decision = Decision(value="v", votes={NODE_A: "v", NODE_B: "v"},
                        missing={NODE_C: "no answer within 1.0 s"}, count=2, needed=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        decision.value = "w"  # type: ignore[misc]
    failed = QuorumNotAchieved({NODE_A: "v", NODE_B: "w"}, 2,
                               {NODE_C: "RayTaskError: boom"}, what="pick leader")
    assert isinstance(failed, NoQuorum)
    assert failed.needed == 2 and failed.votes == {NODE_A: "v", NODE_B: "w"}
    assert failed.missing == {NODE_C: "RayTaskError: boom"}
    assert str(failed).startswith("pick leader: no value reached 2 of 3 votes")
    assert "'v' x1, 'w' x1" in str(failed) and f"{NODE_C}: RayTaskError: boom" in str(failed)


@pytest.mark.parametrize("targets, fn, timeout, needed, field", [
    ([], vote, 1, None, "targets"),
    (NODE_A, vote, 1, None, "targets"),
    ([NODE_A.upper()], vote, 1, None, "targets"),
    (["abc"], vote, 1, None, "targets"),
    ([NODE_A, NODE_A], vote, 1, None, "targets"),
    ([NODE_A, object()], vote, 1, None, "targets"),
    ([NODE_A, NODE_B], vote, 1, 3, "needed"),
    ([NODE_A, NODE_B], vote, 1, 0, "needed"),
    ([NODE_A], vote, 0, None, "timeout"),
    ([NODE_A], vote, float("inf"), None, "timeout"),
    ([NODE_A], "method", 1, None, "fn"),
    ([NODE_A], print, 1, None, "fn"),  # a builtin cannot become a Ray task
])
def test_make_decision_validates_before_calling(targets: Any, fn: Any, timeout: Any,
                                                needed: Any, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        make_decision(targets, fn, timeout, needed=needed)
    assert info.value.field == field


def test_make_decision_needs_ray() -> None:
    assert not ray.is_initialized()
    with pytest.raises(NotConnectedError):
        make_decision([NODE_A, NODE_B, NODE_C], vote, 1)


# ---------------------------------------------------------------------- replica quorums
@pytest.mark.parametrize("n, r, w", [(1, 1, 1), (3, 2, 2), (3, 1, 3), (3, 3, 1), (5, 2, 4)])
def test_replica_quorum_accepts_overlapping_quorums(n: int, r: int, w: int) -> None:
    assert (ReplicaQuorum(n, r, w).r, ReplicaQuorum(n, r, w).w) == (r, w)


@pytest.mark.parametrize("n, r, w, field", [
    (3, 1, 2, "r + w"), (4, 2, 2, "r + w"), (0, 1, 1, "n"), (3, 0, 3, "r"), (3, 4, 3, "r"),
    (3, 2, 4, "w"), (3, 2.0, 2, "r"), (True, 1, 1, "n"),
])
def test_replica_quorum_rejects_bad_quorums(n: Any, r: Any, w: Any, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        ReplicaQuorum(n, r, w)
    assert info.value.field == field


def test_replica_quorum_explains_r_plus_w() -> None:
    with pytest.raises(ConfigError, match=r"R \+ W must exceed N, got 2 \+ 2 <= 4: .*stale"):
        ReplicaQuorum(n=4, r=2, w=2)


def test_replica_quorum_constructors() -> None:
    assert ReplicaQuorum.majority(5) == ReplicaQuorum(5, 3, 3)
    assert ReplicaQuorum.majority(4) == ReplicaQuorum(4, 3, 3)
    assert ReplicaQuorum.read_one(3) == ReplicaQuorum(3, 1, 3)
    assert ReplicaQuorum.write_one(3) == ReplicaQuorum(3, 3, 1)
    with pytest.raises(ConfigError):
        ReplicaQuorum.majority(0)


def refs(n: int) -> list[ray.ObjectRef]:
    return [ray.ObjectRef.from_random() for _ in range(n)]


@pytest.mark.parametrize("call", [quorum_write, quorum_read])
def test_replica_calls_need_one_call_per_replica(call: Any) -> None:
    rq = ReplicaQuorum.majority(3)
    with pytest.raises(ConfigError, match="one call per replica") as info:
        call(refs(2), rq, 1.0)  # only the reachable replicas: the Horde bug
    assert info.value.field == "refs"
    with pytest.raises(ConfigError) as info:
        call(refs(3), (3, 2, 2), 1.0)
    assert info.value.field == "rq"
    with pytest.raises(ConfigError) as info:
        call(refs(3), rq, 0)
    assert info.value.field == "timeout"


# -------------------------------------------------------------------------- quorum calls
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


@pytest.mark.parametrize("make, field", [
    (lambda: QuorumCall([]), "refs"),
    (lambda: QuorumCall(["not a ref"]), "refs"),  # type: ignore[list-item]
    (lambda: QuorumCall(refs(1) * 2), "refs"),
    (lambda: QuorumCall(refs(3), required=0), "required"),
    (lambda: QuorumCall(refs(3), required=4), "required"),
    (lambda: QuorumCall(refs(3), required=True), "required"),
    (lambda: QuorumCall(refs(3), timeout=0), "timeout"),
    (lambda: QuorumCall(refs(3), timeout=float("nan")), "timeout"),
])
def test_quorum_call_validates_its_input(make: Any, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        make()
    assert info.value.field == field


def test_quorum_call_defaults_to_a_majority() -> None:
    assert QuorumCall(refs(5)).required == 3
    assert QuorumCall(refs(4), required=4, timeout=2).required == 4
