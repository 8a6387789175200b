"""herd.platform.conflict: each strategy, commutativity, concurrent versions with and without a
merge function, and bad input."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from herd.platform.clocks import HLCTimestamp, VectorClock
from herd.platform.conflict import STRATEGIES, ConflictError, Versioned, resolve
from herd.platform.errors import ConfigError, HerdError

replica_ids = st.sampled_from(["a", "b", "c"])
json_values = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.text(max_size=3),
                        st.lists(st.integers(0, 3), max_size=2),
                        st.frozensets(st.text(max_size=2), max_size=3))
# small ranges so identical timestamps (different values) come up often
timestamps = st.builds(HLCTimestamp, st.integers(0, 3), st.integers(0, 2), replica_ids)
clocks = st.dictionaries(replica_ids, st.integers(0, 3)).map(VectorClock)


@dataclass(frozen=True)
class MaxInt:
    """A tiny CRDT: the join is the maximum."""

    n: int

    def merge(self, other: MaxInt) -> MaxInt:
        return MaxInt(max(self.n, other.n))


@dataclass(frozen=True)
class UnionSet:
    """A tiny CRDT: a grow-only set, joined by union."""

    items: frozenset[str]

    def merge(self, other: UnionSet) -> UnionSet:
        return UnionSet(self.items | other.items)


def union(a: frozenset[str], b: frozenset[str]) -> frozenset[str]:
    return a | b


# ------------------------------------------------------------------------- lww

def test_lww_greater_timestamp_wins() -> None:
    old = Versioned("old", timestamp=HLCTimestamp(100, 5, "z"))
    new = Versioned("new", timestamp=HLCTimestamp(101, 0, "a"))
    assert resolve(old, new, "lww") == new
    assert resolve(new, old) == new  # lww is the default
    later_counter = Versioned("x", timestamp=HLCTimestamp(100, 6, "a"))
    assert resolve(old, later_counter, "lww") == later_counter
    same_time_other_replica = Versioned("y", timestamp=HLCTimestamp(100, 5, "zz"))
    assert resolve(same_time_other_replica, old, "lww") == same_time_other_replica


def test_lww_identical_timestamps_pick_deterministically() -> None:
    ts = HLCTimestamp(1, 0, "a")
    a, b = Versioned("apple", timestamp=ts), Versioned("banana", timestamp=ts)
    assert resolve(a, b, "lww") == resolve(b, a, "lww") == b


@given(json_values, json_values, timestamps, timestamps)
def test_lww_is_commutative(x: object, y: object, tx: HLCTimestamp, ty: HLCTimestamp) -> None:
    a, b = Versioned(x, timestamp=tx), Versioned(y, timestamp=ty)
    winner = resolve(a, b, "lww")
    assert winner == resolve(b, a, "lww")
    assert winner in (a, b)
    assert winner.timestamp == max(tx, ty)


@given(st.lists(st.tuples(json_values, timestamps), min_size=1, max_size=6))
def test_lww_converges_in_any_order(versions: list[tuple[object, HLCTimestamp]]) -> None:
    items = [Versioned(v, timestamp=t) for v, t in versions]
    forward, backward = items[0], items[-1]
    for item in items[1:]:
        forward = resolve(forward, item, "lww")
    for item in reversed(items[:-1]):
        backward = resolve(item, backward, "lww")
    assert forward == backward


@pytest.mark.parametrize("side", ["local", "remote"])
def test_lww_missing_timestamp_names_the_side(side: str) -> None:
    stamped, bare = Versioned(1, timestamp=HLCTimestamp(1, 0, "a")), Versioned(2)
    local, remote = (bare, stamped) if side == "local" else (stamped, bare)
    with pytest.raises(ConfigError) as excinfo:
        resolve(local, remote, "lww")
    assert excinfo.value.field == f"{side}.timestamp"


# ------------------------------------------------------------------------- vector clock

def test_vector_clock_causally_later_wins() -> None:
    older = Versioned("older", clock=VectorClock({"a": 1, "b": 1}))
    newer = Versioned("newer", clock=VectorClock({"a": 2, "b": 1}))
    assert resolve(older, newer, "vector_clock") == newer
    assert resolve(newer, older, "vector_clock") == newer
    assert resolve(newer, newer, "vector_clock") == newer


def test_vector_clock_concurrent_without_merge_raises_naming_both_clocks() -> None:
    left = Versioned("left", clock=VectorClock({"a": 2}))
    right = Versioned("right", clock=VectorClock({"a": 1, "b": 5}))
    with pytest.raises(ConflictError) as excinfo:
        resolve(left, right, "vector_clock")
    assert isinstance(excinfo.value, HerdError)
    assert "{'a': 2}" in str(excinfo.value) and "{'a': 1, 'b': 5}" in str(excinfo.value)
    assert excinfo.value.local_clock == left.clock
    assert excinfo.value.remote_clock == right.clock


def test_vector_clock_concurrent_with_merge_carries_the_merged_clock() -> None:
    left = Versioned(frozenset({"x"}), clock=VectorClock({"a": 2}),
                     timestamp=HLCTimestamp(5, 0, "a"))
    right = Versioned(frozenset({"y"}), clock=VectorClock({"a": 1, "b": 5}))
    merged = resolve(left, right, "vector_clock", merge=union)
    assert merged == Versioned(frozenset({"x", "y"}), clock=VectorClock({"a": 2, "b": 5}),
                               timestamp=HLCTimestamp(5, 0, "a"))
    assert merged.clock is not None
    assert merged.clock.compare(left.clock) == "after"  # type: ignore[arg-type]
    assert merged.clock.compare(right.clock) == "after"  # type: ignore[arg-type]


def test_vector_clock_equal_clocks_with_different_values_are_a_conflict() -> None:
    clock = VectorClock({"a": 1})
    a, b = Versioned(frozenset({"x"}), clock=clock), Versioned(frozenset({"y"}), clock=clock)
    with pytest.raises(ConflictError):
        resolve(a, b, "vector_clock")
    assert resolve(a, b, "vector_clock", merge=union).value == frozenset({"x", "y"})


@given(st.frozensets(st.text(max_size=2), max_size=3), st.frozensets(st.text(max_size=2),
                                                                     max_size=3),
       clocks, clocks)
def test_vector_clock_is_commutative_with_a_commutative_merge(
        x: frozenset[str], y: frozenset[str], cx: VectorClock, cy: VectorClock) -> None:
    a, b = Versioned(x, clock=cx), Versioned(y, clock=cy)
    result = resolve(a, b, "vector_clock", merge=union)
    assert result == resolve(b, a, "vector_clock", merge=union)
    assert result.clock is not None
    assert result.clock.descends(cx) and result.clock.descends(cy)


@pytest.mark.parametrize("side", ["local", "remote"])
def test_vector_clock_missing_clock_names_the_side(side: str) -> None:
    clocked, bare = Versioned(1, clock=VectorClock({"a": 1})), Versioned(2)
    local, remote = (bare, clocked) if side == "local" else (clocked, bare)
    with pytest.raises(ConfigError) as excinfo:
        resolve(local, remote, "vector_clock")
    assert excinfo.value.field == f"{side}.clock"


def test_vector_clock_merge_must_be_callable() -> None:
    a = Versioned(1, clock=VectorClock({"a": 1}))
    with pytest.raises(ConfigError):
        resolve(a, a, "vector_clock", merge="max")  # type: ignore[arg-type]


# ------------------------------------------------------------------------- crdt

def test_crdt_joins_the_values() -> None:
    local = Versioned(UnionSet(frozenset({"x"})), clock=VectorClock({"a": 1}),
                      timestamp=HLCTimestamp(1, 0, "a"))
    remote = Versioned(UnionSet(frozenset({"y"})), timestamp=HLCTimestamp(2, 0, "b"))
    assert resolve(local, remote, "crdt") == Versioned(
        UnionSet(frozenset({"x", "y"})), clock=VectorClock({"a": 1}),
        timestamp=HLCTimestamp(2, 0, "b"))
    assert resolve(Versioned(MaxInt(3)), Versioned(MaxInt(7)), "crdt") == Versioned(MaxInt(7))


@given(st.integers(-10, 10), st.integers(-10, 10), st.integers(-10, 10))
def test_crdt_is_commutative_and_converges(x: int, y: int, z: int) -> None:
    a, b, c = Versioned(MaxInt(x)), Versioned(MaxInt(y)), Versioned(MaxInt(z))
    assert resolve(a, b, "crdt") == resolve(b, a, "crdt")
    assert resolve(resolve(a, b, "crdt"), c, "crdt") == resolve(a, resolve(b, c, "crdt"), "crdt")
    assert resolve(a, a, "crdt") == a


@given(st.frozensets(st.text(max_size=2), max_size=4), st.frozensets(st.text(max_size=2),
                                                                     max_size=4),
       st.none() | clocks, st.none() | clocks)
def test_crdt_union_set_is_commutative(x: frozenset[str], y: frozenset[str],
                                       cx: VectorClock | None, cy: VectorClock | None) -> None:
    a, b = Versioned(UnionSet(x), clock=cx), Versioned(UnionSet(y), clock=cy)
    result = resolve(a, b, "crdt")
    assert result == resolve(b, a, "crdt")
    assert result.value == UnionSet(x | y)


@pytest.mark.parametrize("side", ["local", "remote"])
def test_crdt_value_without_merge_is_rejected(side: str) -> None:
    crdt, plain = Versioned(MaxInt(1)), Versioned(1)
    local, remote = (plain, crdt) if side == "local" else (crdt, plain)
    with pytest.raises(ConfigError) as excinfo:
        resolve(local, remote, "crdt")  # type: ignore[arg-type]
    assert excinfo.value.field == f"{side}.value"


# ------------------------------------------------------------------------- bad input

def test_unknown_strategy_is_rejected() -> None:
    a = Versioned(1, timestamp=HLCTimestamp(1, 0, "a"))
    with pytest.raises(ConfigError) as excinfo:
        resolve(a, a, "newest")  # type: ignore[arg-type]
    assert excinfo.value.field == "strategy" and excinfo.value.value == "newest"
    assert STRATEGIES == ("lww", "vector_clock", "crdt")


def test_versioned_validates_metadata() -> None:
    with pytest.raises(ConfigError):
        Versioned(1, timestamp=(1, 0, "a"))  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        Versioned(1, clock={"a": 1})  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        resolve(1, Versioned(1), "crdt")  # type: ignore[arg-type]
