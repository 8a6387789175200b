"""herd.platform.crdt: the CRDT laws (hypothesis), convergence of replicas under arbitrary,
stale, duplicated and reordered delivery, reference models, and unit behaviour."""

from __future__ import annotations

import json
import pickle
import random
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from herd.platform.crdt import (
    CRDT,
    GCounter,
    HybridClock,
    LWWRegister,
    MVRegister,
    ORSet,
    PNCounter,
    Timestamp,
    VectorClock,
    load,
)
from herd.platform.errors import ConfigError

REPLICAS = ["a", "b", "c"]
replica_ids = st.sampled_from(REPLICAS)
counts = st.dictionaries(replica_ids, st.integers(0, 50))
json_values = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.text(max_size=3),
                        st.lists(st.integers(0, 3), max_size=2))
timestamps = st.builds(Timestamp, st.integers(0, 4), st.integers(0, 3), replica_ids)


# ------------------------------------------------------------------------- law helpers

def assert_laws(a: CRDT, b: CRDT, c: CRDT) -> None:
    assert a.merge(b) == b.merge(a), "commutative"
    assert a.merge(b).merge(c) == a.merge(b.merge(c)), "associative"
    assert a.merge(a) == a, "idempotent"
    assert a.merge(b).value == b.merge(a).value


def assert_roundtrip(x: CRDT) -> None:
    data = json.loads(json.dumps(x.to_dict(), allow_nan=False))
    assert type(x).from_dict(data) == x
    assert load(data) == x
    assert pickle.loads(pickle.dumps(x)) == x


# ------------------------------------------------------------------------- arbitrary states

vector_clocks = st.builds(VectorClock, counts)
gcounters = st.builds(GCounter, counts)
pncounters = st.builds(lambda p, n: PNCounter(GCounter(p), GCounter(n)), counts, counts)
lww_registers = st.one_of(st.just(LWWRegister()), st.builds(LWWRegister, json_values, timestamps))


@pytest.mark.parametrize("states", [vector_clocks, gcounters, pncounters, lww_registers],
                         ids=["VectorClock", "GCounter", "PNCounter", "LWWRegister"])
@settings(max_examples=50, deadline=None)
@given(data=st.data())
def test_laws_on_arbitrary_states(states: st.SearchStrategy[CRDT], data: st.DataObject) -> None:
    a, b, c = data.draw(states), data.draw(states), data.draw(states)
    assert_laws(a, b, c)
    assert_roundtrip(a)


@settings(max_examples=100, deadline=None)
@given(vector_clocks, vector_clocks)
def test_vector_clock_compare_is_consistent(a: VectorClock, b: VectorClock) -> None:
    opposite = {"before": "after", "after": "before", "equal": "equal",
                "concurrent": "concurrent"}
    assert b.compare(a) == opposite[a.compare(b)]
    pointwise_le = all(a.get(r) <= b.get(r) for r in REPLICAS)
    pointwise_ge = all(a.get(r) >= b.get(r) for r in REPLICAS)
    assert (a.compare(b) == "equal") == (a == b)
    assert (a.compare(b) in ("before", "equal")) == pointwise_le
    assert (a.compare(b) in ("after", "equal")) == pointwise_ge
    merged = a.merge(b)
    assert merged.descends(a) and merged.descends(b)


# ------------------------------------------------------------------------- replica simulation
#
# Three replicas start empty. A step is a local operation on one replica, or the delivery to one
# replica of any state another replica had at any earlier time (stale, duplicated, out of order).
# Reference models run alongside and say what the converged value must be.

class Sim:
    """Replays drawn steps for one CRDT type and keeps every state each replica went through."""

    def __init__(self, empty: CRDT) -> None:
        self.history: list[list[CRDT]] = [[empty] for _ in REPLICAS]

    def current(self, i: int) -> CRDT:
        return self.history[i][-1]

    def apply(self, i: int, state: CRDT) -> None:
        self.history[i].append(state)

    def deliver(self, data: st.DataObject, dst: int) -> None:
        src = data.draw(st.integers(0, len(REPLICAS) - 1))
        snapshot = data.draw(st.sampled_from(self.history[src]))
        self.apply(dst, self.current(dst).merge(snapshot))

    def converge(self, data: st.DataObject) -> CRDT:
        """Every replica merges every final state in its own random order; all must agree."""
        finals = [self.current(i) for i in range(len(REPLICAS))]
        results = []
        for i in range(len(REPLICAS)):
            order = data.draw(st.permutations(finals))
            state = self.current(i)
            for other in order:
                state = state.merge(other)
            results.append(state)
        assert all(r == results[0] for r in results), "replicas did not converge"
        everything = [s for h in self.history for s in h]
        a, b, c = (data.draw(st.sampled_from(everything)) for _ in range(3))
        assert_laws(a, b, c)
        assert_roundtrip(results[0])
        return results[0]


def run_steps(data: st.DataObject, sim: Sim, op: Callable[[int, CRDT], CRDT],
              max_steps: int = 25) -> None:
    for _ in range(data.draw(st.integers(0, max_steps))):
        i = data.draw(st.integers(0, len(REPLICAS) - 1))
        if data.draw(st.booleans()):
            sim.apply(i, op(i, sim.current(i)))
        else:
            sim.deliver(data, i)


@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_pn_counter_converges_to_the_sum_of_operations(data: st.DataObject) -> None:
    sim, total = Sim(PNCounter()), [0]

    def op(i: int, state: CRDT) -> CRDT:
        assert isinstance(state, PNCounter)
        amount = data.draw(st.integers(1, 5))
        if data.draw(st.booleans()):
            total[0] += amount
            return state.increment(REPLICAS[i], amount)
        total[0] -= amount
        return state.decrement(REPLICAS[i], amount)

    run_steps(data, sim, op)
    assert sim.converge(data).value == total[0]


@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_g_counter_converges_to_the_sum_of_increments(data: st.DataObject) -> None:
    sim, total = Sim(GCounter()), [0]

    def op(i: int, state: CRDT) -> CRDT:
        assert isinstance(state, GCounter)
        amount = data.draw(st.integers(1, 5))
        total[0] += amount
        return state.increment(REPLICAS[i], amount)

    run_steps(data, sim, op)
    assert sim.converge(data).value == total[0]


class NaiveORSet:
    """Reference OR-set: unique tags and tombstones kept forever."""

    def __init__(self, adds: frozenset[tuple[Any, int]] = frozenset(),
                 removed: frozenset[int] = frozenset()) -> None:
        self.adds, self.removed = adds, removed

    def merge(self, other: NaiveORSet) -> NaiveORSet:
        return NaiveORSet(self.adds | other.adds, self.removed | other.removed)

    def value(self) -> frozenset[Any]:
        return frozenset(e for e, tag in self.adds if tag not in self.removed)


@settings(max_examples=50, deadline=None)
@given(data=st.data())
def test_or_set_converges_and_matches_the_tombstone_model(data: st.DataObject) -> None:
    sim = Sim(ORSet())
    models = [[NaiveORSet()] for _ in REPLICAS]
    tags = iter(range(10**6))
    elements = st.sampled_from(["x", "y", 3])
    for _ in range(data.draw(st.integers(0, 30))):
        i = data.draw(st.integers(0, len(REPLICAS) - 1))
        state, model = sim.current(i), models[i][-1]
        assert isinstance(state, ORSet)
        kind = data.draw(st.sampled_from(["add", "remove", "deliver"]))
        if kind == "add":
            element = data.draw(elements)
            sim.apply(i, state.add(REPLICAS[i], element))
            models[i].append(NaiveORSet(model.adds | {(element, next(tags))}, model.removed))
        elif kind == "remove":
            element = data.draw(elements)
            sim.apply(i, state.remove(element))
            seen = frozenset(t for e, t in model.adds if e == element)
            models[i].append(NaiveORSet(model.adds, model.removed | seen))
        else:
            src = data.draw(st.integers(0, len(REPLICAS) - 1))
            at = data.draw(st.integers(0, len(sim.history[src]) - 1))
            sim.apply(i, state.merge(sim.history[src][at]))
            models[i].append(model.merge(models[src][at]))
        assert sim.current(i).value == models[i][-1].value()
    converged = sim.converge(data)
    reference = NaiveORSet()
    for history in models:
        reference = reference.merge(history[-1])
    assert converged.value == reference.value()


@settings(max_examples=50, deadline=None)
@given(data=st.data())
def test_mv_register_keeps_exactly_the_writes_not_overwritten(data: st.DataObject) -> None:
    sim = Sim(MVRegister())
    known: list[list[frozenset[int]]] = [[frozenset()] for _ in REPLICAS]  # write ids seen
    overwrites: dict[int, frozenset[int]] = {}
    values: dict[int, Any] = {}
    for _ in range(data.draw(st.integers(0, 25))):
        i = data.draw(st.integers(0, len(REPLICAS) - 1))
        state = sim.current(i)
        assert isinstance(state, MVRegister)
        if data.draw(st.booleans()):
            write = len(values)
            values[write] = data.draw(st.integers(0, 1000))
            overwrites[write] = known[i][-1]
            sim.apply(i, state.assign(REPLICAS[i], values[write]))
            known[i].append(known[i][-1] | {write})
        else:
            src = data.draw(st.integers(0, len(REPLICAS) - 1))
            at = data.draw(st.integers(0, len(sim.history[src]) - 1))
            sim.apply(i, state.merge(sim.history[src][at]))
            known[i].append(known[i][-1] | known[src][at])
    converged = sim.converge(data)
    live = [w for w in values if not any(w in seen for seen in overwrites.values())]
    assert sorted(converged.value) == sorted(values[w] for w in live)


@settings(max_examples=50, deadline=None)
@given(data=st.data())
def test_lww_register_converges_to_the_greatest_timestamp(data: st.DataObject) -> None:
    sim = Sim(LWWRegister())
    physical = [0, 0, 0]
    clocks = [HybridClock(r, now_ms=lambda i=i: physical[i]) for i, r in enumerate(REPLICAS)]
    writes: list[tuple[Timestamp, Any]] = []
    for _ in range(data.draw(st.integers(0, 25))):
        i = data.draw(st.integers(0, len(REPLICAS) - 1))
        physical[i] = max(0, physical[i] + data.draw(st.integers(-2, 3)))  # skew, even backwards
        state = sim.current(i)
        assert isinstance(state, LWWRegister)
        if data.draw(st.booleans()):
            ts, value = clocks[i].now(), data.draw(st.integers(0, 1000))
            writes.append((ts, value))
            sim.apply(i, state.assign(value, ts))
        else:
            sim.deliver(data, i)
            received = sim.current(i)
            assert isinstance(received, LWWRegister)
            if received.timestamp is not None:
                clocks[i].observe(received.timestamp)
    converged = sim.converge(data)
    assert isinstance(converged, LWWRegister)
    if writes:
        assert converged.value == max(writes, key=lambda w: w[0])[1]
    else:
        assert converged.value is None and converged.timestamp is None


# ------------------------------------------------------------------------- unit behaviour

def test_vector_clock_basics() -> None:
    a = VectorClock().increment("a")
    b = VectorClock().increment("b")
    assert a.compare(b) == "concurrent"
    ab = a.merge(b)
    assert a.compare(ab) == "before" and ab.compare(a) == "after"
    assert ab.increment("a").value == {"a": 2, "b": 1}
    assert VectorClock({"a": 0}) == VectorClock() and VectorClock({"a": 0}).compare(
        VectorClock()) == "equal"
    assert a.value == {"a": 1} and a.to_dict() == {"type": "VectorClock", "clock": {"a": 1}}


def test_counters() -> None:
    g = GCounter().increment("a").increment("a", 4).increment("b")
    assert g.value == 6 and g.counts == {"a": 5, "b": 1}
    p = PNCounter().increment("a", 10).decrement("b", 3)
    q = PNCounter().decrement("a", 2)
    assert p.merge(q).value == 5
    assert p.merge(q).merge(p).value == 5
    assert p.to_dict() == {"type": "PNCounter", "p": {"a": 10}, "n": {"b": 3}}


def test_operations_do_not_change_the_original() -> None:
    g = GCounter()
    g.increment("a")
    s = ORSet()
    s.add("a", "x")
    assert g.value == 0 and s.value == frozenset()


def test_hybrid_clock_is_monotonic_and_orders_after_received() -> None:
    wall = [1000]
    clock = HybridClock("a", now_ms=lambda: wall[0])
    t1 = clock.now()
    wall[0] = 900  # the wall clock jumps back
    t2 = clock.now()
    assert t1 < t2 and t2.wall_ms == 1000 and t2.counter == 1
    ahead = Timestamp(5000, 7, "b")  # a sender whose clock runs ahead
    t3 = clock.observe(ahead)
    assert t3 > ahead and clock.now() > t3
    wall[0] = 6000
    assert clock.now() == Timestamp(6000, 0, "a")


def test_lww_register_tie_breaks() -> None:
    reg = LWWRegister().assign("old", Timestamp(10, 0, "a"))
    assert reg.assign("older", Timestamp(9, 5, "z")).value == "old"
    assert reg.assign("same ms, later counter", Timestamp(10, 1, "a")).value \
        == "same ms, later counter"
    # same wall time and counter: the greater replica id wins, on every replica
    x = LWWRegister("from-a", Timestamp(10, 0, "a"))
    y = LWWRegister("from-b", Timestamp(10, 0, "b"))
    assert x.merge(y).value == y.merge(x).value == "from-b"
    # identical timestamps (a reused replica id): still one deterministic winner
    p, q = LWWRegister(1, Timestamp(1, 0, "a")), LWWRegister(2, Timestamp(1, 0, "a"))
    assert p.merge(q) == q.merge(p)
    assert LWWRegister((1, 2), Timestamp(1, 0, "a")).value == [1, 2]  # stored as JSON


def test_or_set_add_wins_over_concurrent_remove() -> None:
    base = ORSet().add("a", "x")
    removed_on_b = base.remove("x")
    readded_on_a = base.add("a", "x")  # concurrent with the remove
    assert "x" in removed_on_b.merge(readded_on_a).value
    assert "x" in readded_on_a.merge(removed_on_b)
    # a remove that observed the add wins
    assert "x" not in readded_on_a.remove("x").merge(base).value
    # removal is not undone by re-delivering the old state
    assert base.remove("x").merge(base).value == frozenset()
    # adding an element twice keeps one entry
    assert ORSet().add("a", 1).add("b", 1).value == frozenset({1})


def test_mv_register_keeps_concurrent_siblings_until_overwritten() -> None:
    a = MVRegister().assign("a", "left")
    b = MVRegister().assign("b", "right")
    both = a.merge(b)
    assert both.value == ["left", "right"]
    assert both.clock.value == {"a": 1, "b": 1}
    resolved = both.assign("a", "merged")
    assert resolved.value == ["merged"]
    assert resolved.merge(a).merge(b).value == ["merged"]
    assert MVRegister().value == []


@pytest.mark.parametrize("make, field", [
    (lambda: GCounter({"a": -1}), "counts.a"),
    (lambda: GCounter({"": 1}), "counts."),
    (lambda: GCounter().increment("a", 0), "amount"),
    (lambda: PNCounter().decrement("", 1), "replica"),
    (lambda: VectorClock({"a": 1.5}), "clock.a"),
    (lambda: VectorClock({"a": True}), "clock.a"),
    (lambda: LWWRegister({1, 2}, Timestamp(1, 0, "a")), "value"),
    (lambda: LWWRegister("x"), "timestamp"),
    (lambda: Timestamp(-1, 0, "a"), "timestamp.wall_ms"),
    (lambda: ORSet().add("a", 1.5), "element"),
    (lambda: ORSet().add("a", True), "element"),
    (lambda: ORSet({"x": [("a", 3)]}, VectorClock({"a": 2})), "entries"),
    (lambda: GCounter().merge(PNCounter()), "other"),
    (lambda: MVRegister().assign("a", float("nan")), "value"),
])
def test_bad_input_raises_config_error(make: Callable[[], Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        make()
    assert info.value.field == field


@pytest.mark.parametrize("data", [
    {"type": "Nope"}, {"counts": {}}, "GCounter", {"type": "GCounter"},
    {"type": "ORSet", "clock": {}, "entries": [["x"]]},
    {"type": "MVRegister", "siblings": [[1]]},
    {"type": "LWWRegister", "value": 1, "timestamp": [1, 2]},
])
def test_load_rejects_malformed_data(data: Any) -> None:
    with pytest.raises(ConfigError):
        load(data)


def test_from_dict_checks_the_type_tag() -> None:
    with pytest.raises(ConfigError) as info:
        GCounter.from_dict(PNCounter().to_dict())
    assert info.value.field == "type"


def test_large_or_set_merge() -> None:
    rng = random.Random(7)
    state = ORSet()
    for n in range(500):
        state = state.add(rng.choice(REPLICAS), n % 200)
        if n % 3 == 0:
            state = state.remove(rng.randrange(200))
    other = state.add("a", "new").remove(5)
    merged = state.merge(other)
    assert "new" in merged.value and 5 not in merged.value
