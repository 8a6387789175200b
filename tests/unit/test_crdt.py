"""herd.platform.crdt: the join-semilattice laws, delta mutators (``X.op() == X ⊔ δ``), delivery
of deltas and states in any order with duplicates, replicas against brute-force oracles under
the causal delta-merging condition, serialisation round trips, and bad input.

Every type is described by a :class:`Case`: how to draw an operation, how to apply it, and an
oracle that computes the value a replica must show from the operations it has seen. Each
operation records ``past``, the ids of the operations its replica had seen when it ran; that is
the causal order the oracles use (a write is overwritten when a later operation on the same key,
or on a prefix of its path, has it in its past).
"""

from __future__ import annotations

import json
import pickle
import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from herd.platform.clocks import HLCTimestamp, HybridLogicalClock
from herd.platform.crdt import (
    CRDT,
    AWLWWMap,
    CausalContext,
    GCounter,
    GSet,
    LWWRegister,
    MVRegister,
    ORMap,
    ORSet,
    PNCounter,
    TwoPSet,
    load,
    loads,
)
from herd.platform.errors import ClockSkewError, ConfigError

REPLICAS = ("a", "b", "c")
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.tuples(inner, inner)
    | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=8)
# the replica simulations draw from a fixed pool (one cheap draw per write) that still has
# ties, nesting, floats, a tuple and unsorted object keys
write_values = st.sampled_from([None, True, 0, 1, -2, 0.5, "x", "", [1, [2]], (1, 2),
                                {"b": 1, "a": [None]}, {"a": {"c": "z"}}])
elements = st.sampled_from(["x", "y", 3])
inner_keys = st.sampled_from(["p", 7])


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


# ------------------------------------------------------------------------- operations, oracles

@dataclass(frozen=True)
class Op:
    """One drawn operation. ``path`` is what it acts on: (element,), (key,), (key, element),
    or () for the whole state; ``past`` the ids its replica had seen."""

    id: int
    replica: str
    kind: str
    path: tuple[Any, ...] = ()
    value: Any = None
    timestamp: HLCTimestamp | None = None
    past: frozenset[int] = frozenset()


WRITES = {"add", "set", "put", "inc", "dec"}


def alive(ops: Sequence[Op]) -> list[Op]:
    """Writes no other seen operation on the same path (or a prefix of it) has observed."""
    return [w for w in ops if w.kind in WRITES
            and not any(w.id in o.past and w.path[:len(o.path)] == o.path for o in ops)]


def by_key(writes: Sequence[Op], level: int) -> dict[Any, list[Op]]:
    groups: dict[Any, list[Op]] = defaultdict(list)
    for w in writes:
        groups[w.path[level]].append(w)
    return groups


def mv_value(writes: Sequence[Op]) -> list[Any]:
    return [json.loads(t) for t in sorted({canonical(w.value) for w in writes})]


def lww_value(writes: Sequence[Op]) -> Any:
    assert all(w.timestamp is not None for w in writes)
    return max(writes, key=lambda w: (w.timestamp, canonical(w.value))).value


def value_json(value: Any) -> Any:
    """A value in JSON form (tuples as lists), as the CRDTs store it."""
    return json.loads(canonical(value))


@dataclass(frozen=True)
class Case:
    """How to exercise one CRDT type."""

    name: str
    empty: Callable[..., CRDT]  # called with a replica id, or with none for a read-only state
    kinds: tuple[str, ...]
    paths: st.SearchStrategy[tuple[Any, ...]]
    apply: Callable[[CRDT, Op], CRDT]
    oracle: Callable[[list[Op]], Any]
    values: st.SearchStrategy[Any] = st.none()
    timed: bool = False
    large_paths: st.SearchStrategy[tuple[Any, ...]] | None = None
    large_path: Callable[[int], tuple[Any, ...]] = lambda n: (n,)


def one(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[tuple[Any, ...]]:
    return strategy.map(lambda x: (x,))


def apply_counter(state: Any, op: Op) -> CRDT:
    return state.increment(op.value) if op.kind == "inc" else state.decrement(op.value)


def apply_orset(state: Any, op: Op) -> CRDT:
    if op.kind == "add":
        return state.add(op.path[0])
    if op.kind == "remove":
        return state.remove(op.path[0])
    return state.clear()


def apply_awlww(state: Any, op: Op) -> CRDT:
    if op.kind == "put":
        return state.put(op.path[-1], op.value, op.timestamp)
    return state.remove(op.path[-1])


def apply_ormap_orset(state: Any, op: Op) -> CRDT:
    if op.kind == "remove_key":
        return state.remove(op.path[0])
    key, element = op.path
    return state.update(key, lambda s: apply_orset(s, Op(op.id, op.replica, op.kind, (element,))))


def apply_ormap_mv(state: Any, op: Op) -> CRDT:
    if op.kind == "remove_key":
        return state.remove(op.path[0])
    return state.update(op.path[0], lambda r: r.set(op.value))


def apply_ormap_awlww(state: Any, op: Op) -> CRDT:
    if op.kind == "remove_key":
        return state.remove(op.path[0])
    return state.update(op.path[0], lambda m: apply_awlww(m, op))


def apply_ormap_ormap_mv(state: Any, op: Op) -> CRDT:
    if op.kind == "remove_key":
        return state.remove(op.path[0])
    key, inner = op.path
    if op.kind == "remove":
        return state.update(key, lambda m: m.remove(inner))
    return state.update(key, lambda m: m.update(inner, lambda r: r.set(op.value)))


CASES = [
    Case("GCounter", GCounter, ("inc",), st.just(()),
         lambda s, op: s.increment(op.value),  # type: ignore[attr-defined]
         lambda ops: sum(o.value for o in ops), values=st.integers(1, 5)),
    Case("PNCounter", PNCounter, ("inc", "dec"), st.just(()), apply_counter,
         lambda ops: sum(o.value if o.kind == "inc" else -o.value for o in ops),
         values=st.integers(1, 5)),
    Case("GSet", GSet, ("add",), one(elements),
         lambda s, op: s.add(op.path[0]),  # type: ignore[attr-defined]
         lambda ops: frozenset(o.path[0] for o in ops)),
    Case("TwoPSet", TwoPSet, ("add", "add", "remove"), one(elements),
         lambda s, op: getattr(s, op.kind)(op.path[0]),
         lambda ops: frozenset(o.path[0] for o in ops if o.kind == "add")
         - frozenset(o.path[0] for o in ops if o.kind == "remove")),
    Case("ORSet", ORSet, ("add", "add", "add", "remove", "remove", "clear"), one(elements),
         apply_orset, lambda ops: frozenset(w.path[0] for w in alive(ops)),
         large_paths=one(st.integers(0, 150))),
    Case("LWWRegister", LWWRegister, ("set",), st.just(()),
         lambda s, op: s.set(op.value, op.timestamp),  # type: ignore[attr-defined]
         lambda ops: value_json(lww_value(ops)) if ops else None, write_values, timed=True),
    Case("MVRegister", MVRegister, ("set",), st.just(()),
         lambda s, op: s.set(op.value),  # type: ignore[attr-defined]
         lambda ops: mv_value(alive(ops)), write_values),
    Case("AWLWWMap", AWLWWMap, ("put", "put", "remove"), one(elements), apply_awlww,
         lambda ops: {k: value_json(lww_value(ws)) for k, ws in by_key(alive(ops), 0).items()},
         write_values, timed=True, large_paths=one(st.integers(0, 150))),
    Case("ORMap[ORSet]", partial(ORMap, ORSet), ("add", "add", "remove", "remove_key"),
         st.tuples(elements, inner_keys), apply_ormap_orset,
         lambda ops: {k: frozenset(w.path[1] for w in ws)
                      for k, ws in by_key(alive(ops), 0).items()},
         large_paths=st.tuples(st.integers(0, 150), inner_keys), large_path=lambda n: (n, "p")),
    Case("ORMap[MVRegister]", partial(ORMap, MVRegister), ("set", "set", "remove_key"),
         one(elements), apply_ormap_mv,
         lambda ops: {k: mv_value(ws) for k, ws in by_key(alive(ops), 0).items()}, write_values),
    Case("ORMap[AWLWWMap]", partial(ORMap, AWLWWMap), ("put", "put", "remove", "remove_key"),
         st.tuples(elements, inner_keys), apply_ormap_awlww,
         lambda ops: {k: {k2: value_json(lww_value(w2)) for k2, w2 in by_key(ws, 1).items()}
                      for k, ws in by_key(alive(ops), 0).items()}, write_values, timed=True),
    Case("ORMap[ORMap[MVRegister]]", partial(ORMap, "ORMap[MVRegister]"),
         ("set", "set", "remove", "remove_key"), st.tuples(elements, inner_keys),
         apply_ormap_ormap_mv,
         lambda ops: {k: {k2: mv_value(w2) for k2, w2 in by_key(ws, 1).items()}
                      for k, ws in by_key(alive(ops), 0).items()}, write_values),
]
# how much of the drawn path an operation kind acts on: remove_key the key alone (so it
# overwrites everything below it), clear the whole state
SCOPE = {"remove_key": 1, "clear": 0}


# ------------------------------------------------------------------------- drawn programs
#
# A test draws its whole program at once (a list of steps and a seed): one hypothesis draw per
# test case instead of one per decision keeps 200 examples of 12 types fast.

ACTIONS = ("op", "op", "op", "deliver", "deliver", "state")


@dataclass(frozen=True)
class Step:
    """``replica`` does ``action``: an operation, or a delivery from ``peer``; ``pick`` and
    ``pick2`` choose among the things that could be delivered."""

    replica: int
    peer: int
    action: str
    kind: str
    path: tuple[Any, ...]
    value: Any
    wall_ms: int
    logical: int
    pick: int
    pick2: int


def programs(case: Case, paths: st.SearchStrategy[tuple[Any, ...]] | None = None,
             min_size: int = 0, max_size: int = 25
             ) -> st.SearchStrategy[tuple[list[Step], int]]:
    def decode(bits: int, path: tuple[Any, ...], value: Any) -> Step:
        """The scalar choices of a step come from one drawn integer (fewer, cheaper draws)."""
        bits, replica = divmod(bits, len(REPLICAS))
        bits, peer = divmod(bits, len(REPLICAS))
        bits, action = divmod(bits, len(ACTIONS))
        bits, kind = divmod(bits, len(case.kinds))
        bits, wall_ms = divmod(bits, 5)
        bits, logical = divmod(bits, 3)
        pick2, pick = divmod(bits, 1000)
        return Step(replica, peer, ACTIONS[action], case.kinds[kind], path, value,
                    wall_ms if case.timed else 0, logical if case.timed else 0, pick, pick2)

    steps = st.builds(decode, st.integers(0, 2**40), case.paths if paths is None else paths,
                      case.values)
    return st.tuples(st.lists(steps, min_size=min_size, max_size=max_size),
                     st.integers(0, 2**32))


def make_op(case: Case, step: Step, op_id: int, past: frozenset[int]) -> Op:
    replica = REPLICAS[step.replica]
    timestamp = HLCTimestamp(step.wall_ms, step.logical, replica) if case.timed else None
    return Op(op_id, replica, step.kind, step.path[:SCOPE.get(step.kind)], step.value,
              timestamp, past)


def run_op(state: CRDT, case: Case, op: Op) -> CRDT:
    """Apply ``op`` (on the replica ``op.replica`` stands for) and check the delta law
    ``state.op() == state ⊔ δ``."""
    assert state.replica == op.replica
    before = state.copy()
    delta = case.apply(state, op)
    assert type(delta) is type(state) and delta.replica is None
    assert before.merge(delta) == state, "applying an operation must equal joining its delta"
    return delta


def joined(states: Sequence[CRDT], empty: Callable[[], CRDT]) -> CRDT:
    result = empty()
    for state in states:
        result.merge(state)
    return result


def shuffled(rng: random.Random, items: Sequence[CRDT]) -> list[CRDT]:
    return rng.sample(list(items), len(items))


def assert_roundtrip(x: CRDT) -> None:
    data = json.loads(json.dumps(x.to_dict(), allow_nan=False))
    assert type(x).from_dict(data) == x
    assert load(data) == x
    assert type(x).from_bytes(x.to_bytes()) == x
    assert loads(x.to_bytes()) == x
    assert loads(x.to_bytes()).to_bytes() == x.to_bytes()
    assert pickle.loads(pickle.dumps(x)) == x
    assert x.copy() == x


def assert_laws(a: CRDT, b: CRDT, c: CRDT) -> None:
    a_before, b_before = a.copy(), b.copy()
    assert a.copy().merge(b) == b.copy().merge(a), "commutative"
    assert a.copy().merge(b).merge(c) == a.copy().merge(b.copy().merge(c)), "associative"
    assert a.copy().merge(a) == a, "idempotent"
    assert a.copy().merge(a.copy()) == a, "idempotent"
    assert a == a_before and b == b_before, "merge must not change its argument"


# ------------------------------------------------------------------------- any-order delivery

@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
@given(data=st.data())
def test_laws_and_delivery_in_any_order_with_duplicates(case: Case, data: st.DataObject) -> None:
    """Replicas apply random operations and receive random deltas and old states, in any order
    and any number of times. Every state and delta obeys the lattice laws; joining all deltas
    in any order with duplicates equals joining the final states, and every replica converges
    whatever order it merges the others in."""
    steps, seed = data.draw(programs(case))
    rng = random.Random(seed)
    states = [case.empty(replica) for replica in REPLICAS]
    history: list[list[CRDT]] = [[s.copy()] for s in states]
    deltas: list[CRDT] = []
    for n, step in enumerate(steps):
        state = states[step.replica]
        if step.action == "op":
            deltas.append(run_op(state, case, make_op(case, step, n, frozenset())))
        elif step.action == "deliver" and deltas:
            state.merge(deltas[step.pick % len(deltas)])
        else:
            snapshots = history[step.peer]
            state.merge(snapshots[step.pick % len(snapshots)])
        history[step.replica].append(state.copy())

    full = joined(shuffled(rng, states), case.empty)
    duplicates = rng.choices(deltas, k=min(5, len(deltas)))
    assert joined(shuffled(rng, deltas + duplicates), case.empty) == full
    for state in states:
        assert joined([state, *shuffled(rng, states)], case.empty) == full
    pool = [s for h in history for s in h] + deltas
    assert_laws(*rng.choices(pool, k=3))
    assert_roundtrip(full)
    assert_roundtrip(rng.choice(pool))


# ------------------------------------------------------------------------- causal delivery

class Net:
    """Replicas running the anti-entropy of Almeida et al.: each logs its deltas and what it
    receives, and ships delta-intervals of its log to peers. An interval starts at or before
    the receiver's acknowledgement, so the receiver already includes the state where the
    interval starts (the causal delta-merging condition); old intervals are re-sent at random,
    and whole states (any old snapshot) are delivered too."""

    def __init__(self, case: Case) -> None:
        n = len(REPLICAS)
        self.case = case
        self.states = [case.empty(replica) for replica in REPLICAS]
        self.known: list[frozenset[int]] = [frozenset()] * n
        self.logs: list[list[tuple[CRDT, frozenset[int]]]] = [[] for _ in range(n)]
        self.acks = [[0] * n for _ in range(n)]
        self.snapshots: list[list[tuple[CRDT, frozenset[int]]]] = [
            [(case.empty(), frozenset())] for _ in range(n)]
        self.ops: dict[int, Op] = {}

    def step(self, step: Step) -> None:
        i, peer = step.replica, step.peer
        if step.action == "op" or peer == i:
            self.operate(make_op(self.case, step, len(self.ops), self.known[i]))
        elif step.action == "deliver":
            ack, size = self.acks[i][peer], len(self.logs[peer])
            self.send_interval(peer, i, step.pick % (ack + 1), ack + step.pick2 % (size - ack + 1))
        else:
            state, ops = self.snapshots[peer][step.pick % len(self.snapshots[peer])]
            self.states[i].merge(state)
            self.receive(i, state, ops)

    def operate(self, op: Op) -> None:
        self.ops[op.id] = op
        i = REPLICAS.index(op.replica)
        delta = run_op(self.states[i], self.case, op)
        self.receive(i, delta, frozenset([op.id]))

    def send_interval(self, src: int, dst: int, start: int, end: int) -> None:
        """Ship ``src``'s log entries ``start:end``; ``start`` must not pass the ack."""
        assert start <= self.acks[dst][src] <= end
        interval, ops = self.case.empty(), frozenset[int]()
        for delta, delta_ops in self.logs[src][start:end]:
            interval.merge(delta)
            ops |= delta_ops
        self.states[dst].merge(interval)
        self.receive(dst, interval, ops)
        self.acks[dst][src] = end

    def receive(self, i: int, entry: CRDT, ops: frozenset[int]) -> None:
        self.known[i] |= ops
        self.logs[i].append((entry, ops))
        self.snapshots[i].append((self.states[i].copy(), self.known[i]))

    def expected(self, ops: frozenset[int]) -> Any:
        return self.case.oracle([self.ops[k] for k in sorted(ops)])

    def check(self, i: int) -> None:
        assert self.states[i].value() == self.expected(self.known[i])

    def sync_all(self) -> None:
        """Every replica receives the rest of every other replica's log."""
        for dst in range(len(REPLICAS)):
            for src in range(len(REPLICAS)):
                if src != dst:
                    self.send_interval(src, dst, self.acks[dst][src], len(self.logs[src]))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
@given(data=st.data())
def test_replicas_match_the_oracle_under_causal_delta_delivery(case: Case,
                                                               data: st.DataObject) -> None:
    """After every step, each replica shows exactly what the oracle computes from the
    operations it has seen (counters: the sum; registers and maps: the writes no seen operation
    overwrote, LWW picking the greatest timestamp; OR-sets: the adds no seen remove observed);
    after a full exchange all replicas agree with the oracle over all operations."""
    steps, _ = data.draw(programs(case))
    net = Net(case)
    for step in steps:
        net.step(step)
        net.check(step.replica)
    net.sync_all()
    for state in net.states:
        assert state == net.states[0]
        assert state.value() == net.expected(frozenset(net.ops))


LARGE = [c for c in CASES if c.large_paths is not None]


@pytest.mark.parametrize("case", LARGE, ids=[c.name for c in LARGE])
@settings(max_examples=50)
@given(data=st.data())
def test_small_deltas_into_large_states(case: Case, data: st.DataObject) -> None:
    """Deltas much smaller than the receiver take the dot-index path of the map join; the
    result must equal the oracle, keep the index exact, and equal the join computed by
    scanning (whole states merged into an empty one)."""
    assert case.large_paths is not None
    net = Net(case)
    for n in range(100):  # two replicas write 50 keys each
        replica = REPLICAS[n % 2]
        timestamp = HLCTimestamp(n, 0, replica) if case.timed else None
        net.operate(Op(n, replica, case.kinds[0], case.large_path(n), n, timestamp,
                       net.known[n % 2]))
    steps, _ = data.draw(programs(case, case.large_paths, min_size=5, max_size=30))
    for step in steps:
        net.step(step)
        net.check(step.replica)
    for state in net.states:
        index = getattr(state, "_index", None)
        assert index is None or index == loads(state.to_bytes())._dot_index()  # type: ignore
    scanned = joined([s.copy() for s in net.states], case.empty)
    net.sync_all()
    assert net.states[0] == scanned
    assert net.states[0].value() == net.expected(frozenset(net.ops))


# ------------------------------------------------------------------------- JSON values

@given(json_values)
def test_values_are_stored_in_canonical_json_form(value: Any) -> None:
    """Registers and maps hold the JSON form of a value (tuples become lists): reads equal the
    value after a JSON round trip, and states round-trip exactly."""
    expected = value_json(value)
    reg, mv, m = LWWRegister("a"), MVRegister("a"), AWLWWMap("a")
    reg.set(value)
    mv.set(value)
    m.put("k", value)
    assert reg.value() == expected and mv.value() == [expected] and m.get("k") == expected
    for state in (reg, mv, m):
        assert_roundtrip(state)


# ------------------------------------------------------------------------- unit behaviour

def test_counters() -> None:
    g = GCounter("a")
    assert g.increment().to_dict() == {"type": "GCounter", "v": 1, "counts": {"a": 1}}
    delta = g.increment(4)
    assert delta.to_dict()["counts"] == {"a": 5}, "the delta is just this replica's entry"
    g.merge(GCounter("b").increment())
    assert g.value() == 6
    p, q = PNCounter("a"), PNCounter("b")
    p.increment(10)
    q.decrement(3)
    p.merge(q)
    q.decrement(2)
    assert p.copy().merge(q).value() == 5
    assert q.decrement().to_dict() == {"type": "PNCounter", "v": 1, "p": {}, "n": {"b": 6}}


def test_two_phase_set_remove_is_forever() -> None:
    s = TwoPSet()  # mints nothing, so needs no replica id
    s.add("x")
    s.remove("x")
    s.add("x")
    assert not s.contains("x") and s.value() == frozenset()
    early = TwoPSet()
    early.remove("y")  # never added here: tombstoned anyway, so a later add never shows
    other = TwoPSet()
    other.add("y")
    assert early.merge(other).value() == frozenset()
    g = GSet()
    g.add(1)
    assert g.add("1").to_dict() == {"type": "GSet", "v": 1, "elements": ["1"]}
    assert g.value() == frozenset({1, "1"}) and g.contains(1)


def synced(*states: CRDT) -> None:
    for state in states:
        for other in states:
            state.merge(other)


@given(st.lists(st.tuples(st.sampled_from(REPLICAS), elements), max_size=8), elements)
def test_or_set_add_wins_over_a_concurrent_remove(history: list[tuple[str, Any]],
                                                  element: Any) -> None:
    """An element added on A concurrently with its removal on B is present after merge; an
    element removed after observing all its adds is absent."""
    a, b = ORSet("a"), ORSet("b")
    for replica, x in history:
        a.merge(a.copy(replica).add(x))  # the add of a writer that has seen everything
    b.merge(a)
    a.add(element)
    b.remove(element)
    synced(a, b)
    assert a.contains(element) and element in b
    b.remove(element)
    synced(a, b)
    assert element not in a.value() and a == b


def test_or_set_deltas_are_small_and_adds_retire_old_dots() -> None:
    s = ORSet("a")
    for n in range(1000):
        s.add(n)
    add = s.copy("b").add(5)
    s.merge(add)
    assert add.to_dict() == {"type": "ORSet", "v": 1,
                             "context": {"vv": {"b": 1}, "cloud": [["a", 6]]},
                             "store": [[5, [["b", 1]]]]}
    assert s.to_dict()["store"][5] == [5, [["b", 1]]], "re-adding keeps one dot"
    remove = s.remove(7)
    assert remove.to_dict() == {"type": "ORSet", "v": 1,
                                "context": {"vv": {}, "cloud": [["a", 8]]}, "store": []}
    assert s.remove(7).to_dict()["context"] == {"vv": {}, "cloud": []}, "absent: empty delta"
    assert len(remove.to_bytes()) < 100 < len(s.to_bytes()) // 100
    cleared = s.copy()
    everything = cleared.clear()
    assert cleared.value() == frozenset() and len(everything.to_dict()["store"]) == 0
    assert s.merge(everything).value() == frozenset()


def test_returned_deltas_do_not_alias_the_replica() -> None:
    s = ORSet("a")
    delta = s.add("x")
    delta.merge(ORSet("b").add("y"))
    delta.remove("x")
    assert s.value() == frozenset({"x"}) and delta.value() == frozenset({"y"})
    m = ORMap(ORSet, "a")
    d = m.update("k", lambda v: v.add(1))
    d.merge(ORMap(ORSet, "b").update("k", lambda v: v.add(2)))
    assert m.value() == {"k": frozenset({1})} and d.value() == {"k": frozenset({1, 2})}
    got = m.get("k")
    got.remove(1)
    assert m.value() == {"k": frozenset({1})} and got.value() == frozenset()


def test_causal_context_is_compact_and_canonical() -> None:
    ctx = CausalContext({"a": 2}, [("a", 4), ["b", 2]])
    assert ctx.to_dict() == {"vv": {"a": 2}, "cloud": [["a", 4], ["b", 2]]}
    assert ctx.next_dot("a") == ("a", 5) and ctx.next_dot("c") == ("c", 1)
    ctx.merge(CausalContext(cloud=[("a", 3), ("b", 1)]))
    assert ctx == CausalContext({"a": 4, "b": 2}) and ctx.dot_count() == 6
    assert ctx.covers(("a", 4)) and not ctx.covers(("a", 5))
    assert CausalContext({"a": 0}) == CausalContext()


def test_lww_register_orders_by_hlc_timestamp() -> None:
    physical = [1000]
    clock_a = HybridLogicalClock("a", physical_ms=lambda: physical[0])
    clock_b = HybridLogicalClock("b", physical_ms=lambda: physical[0] - 500)  # runs behind
    a, b = LWWRegister(clock=clock_a), LWWRegister(clock=clock_b)
    assert a.value() is None and a.timestamp is None and b.replica == "b"
    a.set("first")
    b.merge(a)
    b.set("second")  # b's clock first receives a's write, so this one orders after it
    a.merge(b)
    assert a.value() == b.value() == "second"
    stale = a.set("stale", HLCTimestamp(1, 0, "z"))
    assert a.value() == "second" and stale.value() == "stale"
    x, y = LWWRegister(), LWWRegister()
    x.set("from-a", HLCTimestamp(10, 0, "a"))
    y.set("from-b", HLCTimestamp(10, 0, "b"))
    assert x.copy().merge(y).value() == y.copy().merge(x).value() == "from-b"
    # the very same timestamp with different values (a reused replica id): one winner anyway
    p, q = LWWRegister(), LWWRegister()
    p.set(1, HLCTimestamp(1, 0, "a"))
    q.set(2, HLCTimestamp(1, 0, "a"))
    assert p.copy().merge(q) == q.copy().merge(p) and p.merge(q).value() == 2


def test_mv_register_keeps_concurrent_writes_until_overwritten() -> None:
    a, b = MVRegister("a"), MVRegister("b")
    assert a.value() == []
    a.set("left")
    b.set("right")
    synced(a, b)
    assert a.value() == ["left", "right"]
    resolved = a.set({"both": True})
    assert resolved.to_dict()["context"] == {"vv": {"a": 2, "b": 1}, "cloud": []}
    assert b.merge(resolved).value() == [{"both": True}]
    b.set("same")
    a.set("same")
    assert a.merge(b).value() == ["same"], "equal concurrent values are shown once"


def test_aw_lww_map_semantics() -> None:
    a, b = AWLWWMap("a"), AWLWWMap("b")
    a.put("k", 1, HLCTimestamp(5, 0, "a"))
    b.merge(a)
    b.remove("k")
    a.put("k", 2, HLCTimestamp(6, 0, "a"))  # concurrent with the remove
    synced(a, b)
    assert a.value() == b.value() == {"k": 2}, "put wins over a concurrent remove"
    b.remove("k")
    synced(a, b)
    assert "k" not in a and a.get("k", "gone") == "gone"
    a.put("j", "old", HLCTimestamp(7, 0, "a"))
    b.put("j", "new", HLCTimestamp(8, 0, "b"))  # concurrent: greatest timestamp wins
    synced(a, b)
    assert a.get("j") == b.get("j") == "new"
    a.put("j", "after", HLCTimestamp(1, 0, "a"))  # saw "new": causality first
    synced(a, b)
    assert b.get("j") == "after" and len(b) == 1
    assert a.put("j", "x", HLCTimestamp(9, 0, "a")).to_dict()["store"] == [
        ["j", [["a", 5, [9, 0, "a", "x"]]]]]


def test_or_map_update_wins_over_concurrent_remove_and_resets() -> None:
    a = ORMap(ORSet, "a")
    assert a.value_type == "ORSet"
    a.update("cart", lambda s: (s.add("apple"), s.add("pear")))
    b = a.copy()  # a remove needs no replica id
    b.remove("cart")
    a.update("cart", lambda s: s.add("plum"))  # concurrent with the remove
    synced(a, b)
    assert a.value() == b.value() == {"cart": frozenset({"plum"})}, \
        "the key survives with only the concurrent update's effects"
    a.update("cart", lambda s: s.remove("plum"))
    assert a.value() == {}, "a value emptied by its own operations drops the key"
    assert a.update("cart", lambda s: None).to_dict()["store"] == []
    assert a.get("cart") is None and a.remove("nothing").to_dict()["store"] == []


def test_nested_or_maps() -> None:
    m = ORMap("ORMap[MVRegister]", "a")
    assert m.value_type == "ORMap[MVRegister]"
    delta = m.update("user", lambda u: (u.update("name", lambda r: r.set("ann")),
                                        u.update("age", lambda r: r.set(30))))
    assert m.value() == {"user": {"age": [30], "name": ["ann"]}}
    assert delta.to_dict()["value_type"] == "ORMap[MVRegister]"
    assert ORMap("ORMap[MVRegister]").merge(delta) == m
    other = m.copy()
    other.update("user", lambda u: u.remove("age"))
    m.update("user", lambda u: u.update("name", lambda r: r.set("anne")))
    synced(m, other)
    assert m.value() == {"user": {"name": ["anne"]}}
    inner = m.get("user")
    assert isinstance(inner, ORMap) and inner.get("name").value() == ["anne"]
    assert_roundtrip(m)


def test_repr_is_short_and_useful() -> None:
    s = ORSet("a")
    for n in range(100):
        s.add(n)
    assert repr(s).startswith("ORSet(frozenset({") and len(repr(s)) < 120
    assert repr(GCounter()) == "GCounter(0)"
    assert "vv={'a': 100}" in repr(CausalContext({"a": 100}))


def test_replica_ids_are_bound_at_construction_and_never_shipped() -> None:
    """Mutations mint under the id given at construction; copies, deltas and loaded or
    unpickled states carry no id unless one is given, and a state restored under its own id
    continues its own sequence of dots."""
    s = ORSet("a")
    s.add("x")
    assert s.replica == "a" and s.to_dict()["context"]["vv"] == {"a": 1}
    assert set(s.to_dict()) == {"type", "v", "context", "store"}
    for detached in (s.copy(), s.add("y"), loads(s.to_bytes()), pickle.loads(pickle.dumps(s))):
        assert detached.replica is None
    restored = ORSet.from_bytes(s.to_bytes(), replica="a")
    assert restored == s and restored.add("z").to_dict()["store"] == [["z", [["a", 3]]]]
    assert load(s.to_dict(), replica="b").replica == "b"
    assert loads(s.to_bytes(), "a", clock=s.clock).clock is s.clock
    assert ORSet.from_dict(s.to_dict(), clock=s.clock).replica == "a", "a clock brings its id"
    other = s.copy("b")
    assert other.replica == "b" and other.add("w").to_dict()["store"] == [["w", [["b", 1]]]]
    assert s.value() == frozenset({"x", "y"}), "a copy is independent"
    assert s.copy("a").clock is s.clock, "a snapshot under the same id shares the clock"
    assert s.copy("b").clock is not s.clock and s.copy("b").clock.replica == "b"
    for cls in (GSet, TwoPSet):  # mint nothing: mutate without an id, accept one like all
        assert cls().add(1).value() == frozenset({1}) and cls("a").replica == "a"


def test_timestamped_writes_default_to_the_replicas_clock() -> None:
    """LWWRegister.set and AWLWWMap.put without ``at`` stamp with the replica's HLC after
    feeding it the write they replace, so a replica whose wall clock runs behind still
    overwrites what it has seen; a replaced write too far ahead is refused, state unchanged."""
    ahead = LWWRegister("a", clock=HybridLogicalClock("a", physical_ms=lambda: 50_000))
    ahead.set("from-a")
    behind = LWWRegister("b", clock=HybridLogicalClock("b", physical_ms=lambda: 1_000))
    behind.merge(ahead)
    behind.set("from-b")
    assert behind.value() == "from-b" and behind.timestamp is not None
    assert behind.timestamp.wall_ms == 50_000 and behind.timestamp.replica == "b"
    assert ahead.merge(behind).value() == "from-b"
    plain = LWWRegister("c")  # a clock made for "c" on first use, on wall time
    plain.set(1)
    assert plain.timestamp is not None and plain.timestamp.replica == "c"
    assert plain.timestamp == plain.clock.last

    strict = LWWRegister(clock=HybridLogicalClock("s", max_drift_ms=1_000,
                                                  physical_ms=lambda: 1_000))
    strict.merge(ahead)
    with pytest.raises(ClockSkewError):
        strict.set("late")
    assert strict.value() == "from-b" and strict.clock.last is None
    strict.set("explicit", HLCTimestamp(60_000, 0, "s"))  # an explicit timestamp is taken as is
    assert strict.value() == "explicit"

    m = ORMap(AWLWWMap, "a")
    m.update("k", lambda v: v.put("x", 1))
    m.update("k", lambda v: v.put("x", 2))
    assert m.value() == {"k": {"x": 2}}
    last = m.clock.last
    assert last is not None and m.to_dict()["store"] == [
        ["k", [["x", [["a", 2, [last.wall_ms, last.logical, "a", 2]]]]]]], \
        "the nested map stamps with the map's clock"
    direct = AWLWWMap("b", clock=HybridLogicalClock("b", physical_ms=lambda: last.wall_ms - 10))
    direct.merge(m.get("k"))
    direct.put("x", 3)
    assert direct.get("x") == 3 and m.get("k").merge(direct).get("x") == 3


TS = [1, 0, "a"]
ORSET_OK = {"type": "ORSet", "v": 1, "context": {"vv": {"a": 1}, "cloud": []},
            "store": [["x", [["a", 1]]]]}


@pytest.mark.parametrize("make, field", [
    (lambda: load({"type": "Nope", "v": 1}), "type"),
    (lambda: load("GCounter"), "type"),  # type: ignore[arg-type]
    (lambda: GCounter.from_dict(PNCounter().to_dict()), "type"),
    (lambda: load({"type": "GCounter", "v": 2, "counts": {}}), "v"),
    (lambda: load({"type": "GCounter", "v": True, "counts": {}}), "v"),
    (lambda: load({"type": "GCounter", "counts": {}}), "v"),
    (lambda: load({"type": "GCounter", "v": 1}), "counts"),
    (lambda: load({"type": "GCounter", "v": 1, "counts": {"a": -1}}), "counts.a"),
    (lambda: load({"type": "PNCounter", "v": 1, "p": {"a": 1.5}, "n": {}}), "p.a"),
    (lambda: load({"type": "GCounter", "v": 1, "counts": {"": 1}}), "counts."),
    (lambda: load({"type": "GSet", "v": 1, "elements": [True]}), "elements[0]"),
    (lambda: load({"type": "TwoPSet", "v": 1, "added": "x", "removed": []}), "added"),
    (lambda: load({"type": "LWWRegister", "v": 1, "timestamp": None, "value": 1}),
     "timestamp"),
    (lambda: load({"type": "LWWRegister", "v": 1, "timestamp": [1, 2], "value": 1}),
     "timestamp"),
    (lambda: load({"type": "LWWRegister", "v": 1, "timestamp": [-1, 0, "a"], "value": 1}),
     "wall_ms"),
    (lambda: load({**ORSET_OK, "context": {"vv": {}, "cloud": []}}), "store"),
    (lambda: load({**ORSET_OK, "store": [["x", [["a", 1]]], ["y", [["a", 1]]]]}), "store"),
    (lambda: load({**ORSET_OK, "store": [["x", [["a", 1]]], ["x", []]]}), "store[1]"),
    (lambda: load({**ORSET_OK, "store": [["x"]]}), "store[0]"),
    (lambda: load({**ORSET_OK, "store": [[1.5, [["a", 1]]]]}), "store[0]"),
    (lambda: load({**ORSET_OK, "store": [["x", [["", 1]]]]}), "store[0][0]"),
    (lambda: load({**ORSET_OK, "context": {"vv": {"a": -1}, "cloud": []}}), "context.vv.a"),
    (lambda: load({**ORSET_OK, "context": {"vv": {}, "cloud": [["a", 0]]}}), "context.cloud"),
    (lambda: load({**ORSET_OK, "context": []}), "context"),
    (lambda: load({"type": "MVRegister", "v": 1, "context": {"vv": {"a": 1}, "cloud": []},
                   "store": [["a", 1]]}), "store[0]"),
    (lambda: load({"type": "AWLWWMap", "v": 1, "context": {"vv": {"a": 1}, "cloud": []},
                   "store": [["k", [["a", 1, [1, 0, "", 5]]]]]}), "replica"),
    (lambda: load({**ORSET_OK, "type": "ORMap"}), "value_type"),
    (lambda: load({**ORSET_OK, "type": "ORMap", "value_type": "GCounter"}), "value_type"),
    (lambda: load({**ORSET_OK, "type": "ORMap", "value_type": 3}), "value_type"),
    (lambda: loads(b"\xff\xfe"), "raw"),
    (lambda: loads(b'{"type": "GSet", "v": 1, "elements": [1'), "raw"),
    (lambda: GSet.from_bytes("not bytes"), "raw"),  # type: ignore[arg-type]
    (lambda: GCounter(""), "replica"),
    (lambda: GCounter(3), "replica"),  # type: ignore[arg-type]
    (lambda: GCounter().increment(), "replica"),
    (lambda: PNCounter().decrement(), "replica"),
    (lambda: GCounter("a").increment(0), "amount"),
    (lambda: PNCounter("a").decrement(True), "amount"),
    (lambda: ORSet().add("x"), "replica"),
    (lambda: ORSet("a").add("x").add("y"), "replica"),  # a delta is bound to no replica
    (lambda: ORSet("a").copy().add("y"), "replica"),
    (lambda: ORSet.from_bytes(ORSet().to_bytes()).add("y"), "replica"),
    (lambda: ORSet.from_bytes(ORSet().to_bytes(), replica=""), "replica"),
    (lambda: ORMap(ORSet).update("k", lambda s: s.add("x")), "replica"),
    (lambda: ORSet("a").add(1.5), "element"),  # type: ignore[arg-type]
    (lambda: ORSet("a").add(True), "element"),
    (lambda: ORSet().remove(None), "element"),  # type: ignore[arg-type]
    (lambda: GSet().add([1]), "element"),  # type: ignore[arg-type]
    (lambda: MVRegister().set(1), "replica"),
    (lambda: MVRegister("a").set(float("nan")), "value"),
    (lambda: MVRegister("a").set({1, 2}), "value"),
    (lambda: MVRegister("a").set({1: "x", "1": "y"}), "value"),
    (lambda: LWWRegister().set(object(), HLCTimestamp(1, 0, "a")), "value"),
    (lambda: LWWRegister("a").set(1, 5), "at"),  # type: ignore[arg-type]
    (lambda: LWWRegister().set(1), "replica"),
    (lambda: LWWRegister("a", clock=HybridLogicalClock("b")), "clock"),
    (lambda: LWWRegister(clock="a"), "clock"),  # type: ignore[arg-type]
    (lambda: AWLWWMap().put("k", 1), "replica"),
    (lambda: AWLWWMap("a").put("k", float("inf")), "value"),
    (lambda: AWLWWMap("a").put(("k",), 1), "key"),  # type: ignore[arg-type]
    (lambda: ORMap(ORSet).update(1.5, lambda s: None), "key"),  # type: ignore[arg-type]
    (lambda: ORMap(GCounter), "value_type"),  # type: ignore[arg-type]
    (lambda: ORMap(ORMap), "value_type"),
    (lambda: ORMap("ORMap[Nope]"), "value_type"),
    (lambda: GCounter().merge(PNCounter()), "other"),  # type: ignore[arg-type]
    (lambda: ORSet().merge(AWLWWMap()), "other"),  # type: ignore[arg-type]
    (lambda: ORMap(ORSet).merge(ORMap(MVRegister)), "other"),
])
def test_bad_input_raises_config_error(make: Callable[[], Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        make()
    assert info.value.field == field


def test_well_formed_input_is_accepted() -> None:
    """The malformed cases above differ from these by one thing."""
    assert load(ORSET_OK).value() == frozenset({"x"})
    assert load({"type": "LWWRegister", "v": 1, "timestamp": TS, "value": 1}).value() == 1
    assert load({"type": "LWWRegister", "v": 1, "timestamp": None, "value": None}) \
        == LWWRegister()
    assert load({**ORSET_OK, "type": "ORMap", "value_type": "MVRegister",
                 "store": [["k", [["a", 1, {"z": 1}]]]]}).value() == {"k": [{"z": 1}]}
