"""herd.platform.clocks: vector-clock ordering against brute-force happens-before over random
histories, merge laws, hybrid-logical-clock monotonicity under a misbehaving physical clock,
drift rejection, thread safety, and serialisation."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from herd.platform.clocks import (
    HLCTimestamp,
    HybridLogicalClock,
    Ordering,
    VectorClock,
    happened_before,
)
from herd.platform.errors import ClockSkewError, ConfigError

REPLICAS = ["a", "b", "c", "d"]
clocks = st.dictionaries(st.sampled_from(REPLICAS), st.integers(0, 6)).map(VectorClock)
timestamps = st.builds(HLCTimestamp, st.integers(0, 10**13), st.integers(0, 1000),
                       st.text(min_size=1, max_size=5))


# ------------------------------------------------------------------------- vector clock: cases

@pytest.mark.parametrize("a, b, expected", [
    ({"a": 2, "b": 1}, {"a": 1, "b": 1}, "after"),
    ({"a": 1, "b": 1}, {"a": 2, "b": 1}, "before"),
    ({"a": 2}, {"a": 1, "b": 5}, "concurrent"),
    ({"a": 1, "b": 5}, {"a": 2}, "concurrent"),
    ({"a": 1, "b": 1}, {"a": 1, "b": 1}, "equal"),
    ({}, {}, "equal"),
    ({"a": 0}, {}, "equal"),
    ({}, {"a": 1}, "before"),
])
def test_compare_cases_the_sketch_got_wrong(a: dict[str, int], b: dict[str, int],
                                            expected: Ordering) -> None:
    assert VectorClock(a).compare(VectorClock(b)) == expected
    assert happened_before(VectorClock(a), VectorClock(b)) == (expected == "before")


def test_value_object_basics() -> None:
    clock = VectorClock({"a": 2, "b": 0})
    assert clock.value() == {"a": 2}
    assert clock.get("a") == 2 and clock.get("zzz") == 0
    assert clock.increment("b") == VectorClock({"a": 2, "b": 1})
    assert clock == VectorClock({"a": 2})  # increment returned a new clock
    assert hash(clock) == hash(VectorClock({"a": 2, "c": 0}))
    assert repr(clock) == "VectorClock({'a': 2})"
    assert VectorClock({"a": 1}) <= clock and VectorClock({"a": 1}) < clock
    assert clock >= VectorClock() and not clock < clock and clock <= clock
    assert not VectorClock({"a": 1}) <= VectorClock({"b": 1})
    assert not VectorClock({"b": 1}) <= VectorClock({"a": 1})
    with pytest.raises(AttributeError):
        clock._clock = {}  # type: ignore[misc]
    mutable = clock.value()
    mutable["a"] = 99
    assert clock.get("a") == 2


@pytest.mark.parametrize("bad", [
    {"": 1}, {1: 1}, {"a": -1}, {"a": True}, {"a": 1.0}, {"a": "1"}, [("a", 1)],
])
def test_constructor_rejects_bad_input(bad: object) -> None:
    with pytest.raises(ConfigError):
        VectorClock(bad)  # type: ignore[arg-type]


def test_operations_reject_bad_input() -> None:
    with pytest.raises(ConfigError):
        VectorClock().increment("")
    with pytest.raises(ConfigError):
        VectorClock().merge({"a": 1})  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        VectorClock().compare(None)  # type: ignore[arg-type]


# ------------------------------------------------------------------------- random histories

@dataclass
class History:
    """Events of a message-passing run, each stamped with its vector clock, plus the event
    graph's edges (program order and send -> receive) for an independent reachability check."""

    clocks: list[VectorClock] = field(default_factory=list)
    preds: list[list[int]] = field(default_factory=list)


@st.composite
def histories(draw: st.DrawFn) -> History:
    replicas = REPLICAS[:draw(st.integers(2, 4))]
    steps = draw(st.lists(st.tuples(st.sampled_from(["local", "send", "send", "recv", "recv"]),
                                    st.sampled_from(replicas), st.integers(0, 10**6)),
                          min_size=1, max_size=30))
    history = History()
    current = {r: VectorClock() for r in replicas}
    last_event: dict[str, int] = {}
    sent: list[tuple[str, int]] = []  # (sender, event index); a message may be received twice
    for kind, replica, pick in steps:
        preds = [last_event[replica]] if replica in last_event else []
        clock = current[replica]
        senders = [m for m in sent if m[0] != replica]
        if kind == "recv" and senders:
            _, send_event = senders[pick % len(senders)]
            preds.append(send_event)
            clock = clock.merge(history.clocks[send_event])
        clock = clock.increment(replica)
        event = len(history.clocks)
        history.clocks.append(clock)
        history.preds.append(preds)
        current[replica], last_event[replica] = clock, event
        if kind == "send":
            sent.append((replica, event))
    return history


def ancestors(history: History) -> list[set[int]]:
    """Transitive predecessors of every event; events are listed in a topological order."""
    result: list[set[int]] = []
    for preds in history.preds:
        reach: set[int] = set()
        for p in preds:
            reach |= {p} | result[p]
        result.append(reach)
    return result


@given(histories())
def test_compare_agrees_with_happens_before_by_reachability(history: History) -> None:
    reach = ancestors(history)
    for i, ci in enumerate(history.clocks):
        for j, cj in enumerate(history.clocks):
            expected = "equal" if i == j else "before" if i in reach[j] \
                else "after" if j in reach[i] else "concurrent"
            assert ci.compare(cj) == expected, (i, j, ci, cj)
            assert happened_before(ci, cj) == (expected == "before")


# ------------------------------------------------------------------------- merge laws

@given(clocks, clocks, clocks)
def test_merge_is_a_join(a: VectorClock, b: VectorClock, c: VectorClock) -> None:
    assert a.merge(b) == b.merge(a)
    assert a.merge(b).merge(c) == a.merge(b.merge(c))
    assert a.merge(a) == a
    joined = a.merge(b)
    assert joined.descends(a) and joined.descends(b)
    assert a <= joined and b <= joined
    assert joined.compare(a) in ("after", "equal")


@given(clocks, clocks)
def test_compare_is_antisymmetric(a: VectorClock, b: VectorClock) -> None:
    mirror = {"before": "after", "after": "before", "equal": "equal", "concurrent": "concurrent"}
    assert b.compare(a) == mirror[a.compare(b)]
    assert (a.compare(b) == "equal") == (a == b)


# ------------------------------------------------------------------------- vector clock dicts

@given(clocks)
def test_vector_clock_round_trip(clock: VectorClock) -> None:
    data = clock.to_dict()
    assert data["type"] == "VectorClock" and data["v"] == 1
    assert list(data["clock"]) == sorted(data["clock"])
    assert VectorClock.from_dict(data) == clock


@pytest.mark.parametrize("bad", [
    None,
    [],
    {"v": 1, "clock": {}},
    {"type": "GCounter", "v": 1, "clock": {}},
    {"type": "VectorClock", "clock": {}},
    {"type": "VectorClock", "v": 2, "clock": {}},
    {"type": "VectorClock", "v": True, "clock": {}},
    {"type": "VectorClock", "v": 1},
    {"type": "VectorClock", "v": 1, "clock": [["a", 1]]},
    {"type": "VectorClock", "v": 1, "clock": {"a": -1}},
    {"type": "VectorClock", "v": 1, "clock": {"a": True}},
    {"type": "VectorClock", "v": 1, "clock": {"": 1}},
    {"type": "VectorClock", "v": 1, "clock": {1: 1}},
])
def test_vector_clock_from_dict_rejects(bad: object) -> None:
    with pytest.raises(ConfigError):
        VectorClock.from_dict(bad)  # type: ignore[arg-type]


# ------------------------------------------------------------------------- HLC timestamps

@given(timestamps)
def test_timestamp_round_trip(ts: HLCTimestamp) -> None:
    assert HLCTimestamp.from_dict(ts.to_dict()) == ts


def test_timestamp_total_order() -> None:
    assert HLCTimestamp(1, 9, "z") < HLCTimestamp(2, 0, "a")
    assert HLCTimestamp(1, 0, "z") < HLCTimestamp(1, 1, "a")
    assert HLCTimestamp(1, 1, "a") < HLCTimestamp(1, 1, "b")


@pytest.mark.parametrize("bad", [
    None,
    {"wall_ms": 1, "logical": 0},
    {"wall_ms": -1, "logical": 0, "replica": "a"},
    {"wall_ms": 1, "logical": -1, "replica": "a"},
    {"wall_ms": True, "logical": 0, "replica": "a"},
    {"wall_ms": 1, "logical": False, "replica": "a"},
    {"wall_ms": 1.5, "logical": 0, "replica": "a"},
    {"wall_ms": 1, "logical": 0, "replica": ""},
    {"wall_ms": 1, "logical": 0, "replica": 7},
])
def test_timestamp_from_dict_rejects(bad: object) -> None:
    with pytest.raises(ConfigError):
        HLCTimestamp.from_dict(bad)  # type: ignore[arg-type]


# ------------------------------------------------------------------------- HLC behaviour

class FakePhysical:
    """An injectable physical clock the test moves by hand."""

    def __init__(self, ms: int = 1_000_000) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


DRIFT = 500
hlc_ops = st.lists(st.one_of(
    st.tuples(st.just("tick"), st.integers(-DRIFT, DRIFT)),
    st.tuples(st.just("now"), st.just(0)),
    # remote wall time relative to local physical time, up to the drift bound
    st.tuples(st.just("update"), st.integers(-3 * DRIFT, DRIFT)),
), max_size=60)


@given(hlc_ops, st.integers(0, 5))
def test_hlc_strictly_increases_whatever_physical_time_does(
        ops: list[tuple[str, int]], remote_logical: int) -> None:
    physical = FakePhysical()
    clock = HybridLogicalClock("a", max_drift_ms=DRIFT, physical_ms=physical)
    previous: HLCTimestamp | None = None
    highest_wall = physical.ms  # the largest physical or remote wall time seen
    for op, arg in ops:
        if op == "tick":
            physical.ms += arg
            continue
        highest_wall = max(highest_wall, physical.ms)
        if op == "now":
            stamp = clock.now()
        else:
            remote = HLCTimestamp(physical.ms + arg, remote_logical, "b")
            stamp = clock.update(remote)
            assert stamp > remote
            highest_wall = max(highest_wall, remote.wall_ms)
        assert previous is None or stamp > previous
        assert stamp.replica == "a" and clock.last == stamp
        # HLC keeps close to physical time: never behind it, never ahead of the largest
        # physical or remote time it was shown
        assert physical.ms <= stamp.wall_ms <= highest_wall
        previous = stamp


def test_logical_counter_counts_within_a_millisecond_and_resets_when_time_advances() -> None:
    physical = FakePhysical(1000)
    clock = HybridLogicalClock("a", physical_ms=physical)
    assert clock.last is None
    assert clock.now() == HLCTimestamp(1000, 0, "a")
    assert clock.now() == HLCTimestamp(1000, 1, "a")
    physical.ms = 999  # physical time went backwards: wall time holds, the counter counts
    assert clock.now() == HLCTimestamp(1000, 2, "a")
    physical.ms = 1001
    assert clock.now() == HLCTimestamp(1001, 0, "a")
    assert clock.update(HLCTimestamp(1001, 7, "b")) == HLCTimestamp(1001, 8, "a")
    assert clock.update(HLCTimestamp(1005, 3, "b")) == HLCTimestamp(1005, 4, "a")
    assert clock.now() == HLCTimestamp(1005, 5, "a")
    assert clock.update(HLCTimestamp(900, 50, "b")) == HLCTimestamp(1005, 6, "a")
    physical.ms = 1006
    assert clock.now() == HLCTimestamp(1006, 0, "a")
    physical.ms = 1010
    assert clock.update(HLCTimestamp(1002, 9, "b")) == HLCTimestamp(1010, 0, "a")


def test_first_stamp_at_physical_zero() -> None:
    clock = HybridLogicalClock("a", physical_ms=lambda: 0)
    assert clock.now() == HLCTimestamp(0, 0, "a")
    assert clock.now() == HLCTimestamp(0, 1, "a")


def test_remote_beyond_max_drift_is_rejected_without_changing_the_clock() -> None:
    physical = FakePhysical(10_000)
    clock = HybridLogicalClock("a", max_drift_ms=100, physical_ms=physical)
    before = clock.now()
    with pytest.raises(ClockSkewError) as excinfo:
        clock.update(HLCTimestamp(10_101, 0, "b"))
    message = str(excinfo.value)
    assert "10101" in message and "10000" in message and "100" in message
    assert clock.last == before
    assert clock.now() == HLCTimestamp(10_000, 1, "a")
    # exactly at the bound is accepted
    assert clock.update(HLCTimestamp(10_100, 0, "b")) == HLCTimestamp(10_100, 1, "a")


def test_hlc_rejects_bad_configuration() -> None:
    with pytest.raises(ConfigError):
        HybridLogicalClock("")
    with pytest.raises(ConfigError):
        HybridLogicalClock("a", max_drift_ms=-1)
    with pytest.raises(ConfigError):
        HybridLogicalClock("a", max_drift_ms=True)
    with pytest.raises(ConfigError):
        HybridLogicalClock("a", physical_ms=5)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        as_dict = {"wall_ms": 1, "logical": 0, "replica": "b"}
        HybridLogicalClock("a").update(as_dict)  # type: ignore[arg-type]


def test_default_physical_clock_is_wall_time() -> None:
    before = time.time_ns() // 1_000_000
    stamp = HybridLogicalClock("a").now()
    assert before <= stamp.wall_ms <= time.time_ns() // 1_000_000


def test_hlc_is_thread_safe() -> None:
    clock = HybridLogicalClock("a")
    per_thread: list[list[HLCTimestamp]] = [[] for _ in range(8)]
    barrier = threading.Barrier(len(per_thread))

    def stamp(out: list[HLCTimestamp]) -> None:
        barrier.wait()
        for i in range(2000):
            if i % 10 == 0:
                out.append(clock.update(HLCTimestamp(1, 0, "b")))
            else:
                out.append(clock.now())

    threads = [threading.Thread(target=stamp, args=(out,)) for out in per_thread]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = [s for out in per_thread for s in out]
    assert len(set(everything)) == len(everything) == 8 * 2000
    for out in per_thread:
        assert all(x < y for x, y in zip(out, out[1:], strict=False))
    assert clock.last == max(everything)
