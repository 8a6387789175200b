"""Per-key access to the map CRDTs (AWLWWMap, ORMap): ``keys``, ``encode_key``, ``slice``,
``merge_slice`` and ``changed_keys``, each checked against what the whole-state operations
(``to_dict``, ``merge``) give."""

from __future__ import annotations

import random
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from herd.platform.crdt import AWLWWMap, CausalContext, ORMap, ORSet, load
from herd.platform.errors import ConfigError

KEYS = [f"k{n}" for n in range(12)] + [1, 2]


def _lww(replica: str, ops: list[tuple[int, int]]) -> AWLWWMap:
    state = AWLWWMap(replica)
    for op, n in ops:
        key = KEYS[n % len(KEYS)]
        if op == 0:
            state.remove(key)
        else:
            state.put(key, f"{replica}-{op}-{n}")
    return state


def _sets(replica: str, ops: list[tuple[int, int]]) -> ORMap:
    state = ORMap(ORSet, replica)
    for op, n in ops:
        key = KEYS[n % len(KEYS)]
        if op == 0:
            state.remove(key)
        elif op == 1:
            state.update(key, lambda s, n=n: s.remove(f"e{n % 3}"))
        else:
            state.update(key, lambda s, n=n: s.add(f"e{n % 3}"))
    return state


def _restricted(state: Any, keys: set[Any]) -> Any:
    """The reference slice: ``to_dict`` with the store filtered, loaded back."""
    data = state.to_dict()
    return load({**data, "store": [e for e in data["store"] if e[0] in keys]})


OPS = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 40)), max_size=30)
BUILDERS = [_lww, _sets]


def test_keys_and_encode_key_match_to_dict() -> None:
    for build in BUILDERS:
        state = build("a", [(2, n) for n in range(20)] + [(0, 3)])
        entries = {key: encoded for key, encoded in state.to_dict()["store"]}
        assert set(state.keys()) == set(entries) and len(state) == len(entries)
        for key in KEYS:
            assert state.encode_key(key) == entries.get(key)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(OPS, OPS, st.sets(st.sampled_from(KEYS)), st.sampled_from(BUILDERS))
def test_slice_is_the_filtered_state(ops_a: list[tuple[int, int]],
                                     ops_b: list[tuple[int, int]], keys: set[Any],
                                     build: Any) -> None:
    state = build("a", ops_a).merge(build("b", ops_b))
    before = state.to_dict()
    sliced = state.slice(keys)
    assert sliced == _restricted(state, keys)
    assert sliced.context() == state.context() and sliced.replica is None
    sliced.merge(build("c", [(2, 1)]))  # an independent state: the original is unchanged
    assert state.to_dict() == before


@settings(max_examples=80, deadline=None, derandomize=True)
@given(OPS, OPS, OPS, st.sets(st.sampled_from(KEYS)), st.sampled_from(BUILDERS))
def test_merge_slice_joins_inside_and_keeps_outside(ops_a: list[tuple[int, int]],
                                                    ops_b: list[tuple[int, int]],
                                                    shared: list[tuple[int, int]],
                                                    keys: set[Any], build: Any) -> None:
    base = build("s", shared)
    mine = build("a", ops_a).merge(base)
    theirs = build("b", ops_b).merge(base)
    joined = mine.copy().merge_slice(theirs.slice(keys), keys)
    full = mine.copy().merge(theirs)
    entries = {k: e for k, e in joined.to_dict()["store"]}
    expected_inside = {k: e for k, e in full.to_dict()["store"] if k in keys}
    kept_outside = {k: e for k, e in mine.to_dict()["store"] if k not in keys}
    assert {k: e for k, e in entries.items() if k in keys} == expected_inside
    assert {k: e for k, e in entries.items() if k not in keys} == kept_outside
    assert joined.context() == full.context()
    # with every key revisited, merge_slice of the whole state is merge
    everything = set(mine.keys()) | set(theirs.keys())
    assert mine.copy().merge_slice(theirs, everything) == full


def test_merge_slice_removes_inside_keys_the_slice_dropped() -> None:
    mine = AWLWWMap("a")
    mine.put("x", 1)
    mine.put("y", 2)
    theirs = mine.copy("b")
    theirs.remove("x")
    theirs.remove("y")
    joined = mine.copy().merge_slice(theirs.slice(["x"]), ["x"])
    assert joined.value() == {"y": 2}  # x removed (inside), y kept (outside the slice)
    assert mine.copy().merge(theirs.slice(["x"])).value() == {}  # why merge is wrong here


def test_changed_keys_tracks_every_change() -> None:
    state = AWLWWMap("a")
    state.put("x", 1)
    assert state.changed_keys() == {"x"}  # the first call: every key present
    assert state.changed_keys() == set()
    state.put("y", 2)
    state.remove("x")
    state.remove("absent")
    assert state.changed_keys() == {"x", "y"}
    other = AWLWWMap("b")
    other.put("z", 3)
    state.merge(other)
    state.merge(other)  # nothing new
    assert state.changed_keys() == {"z"}
    sets = ORMap(ORSet, "a")
    sets.changed_keys()
    sets.update("s", lambda s: s.add("e"))
    sets.update("s", lambda s: s.remove("e"))  # emptied: the key disappears
    assert sets.changed_keys() == {"s"} and "s" not in sets
    assert state.copy().changed_keys() == {"y", "z"}  # a copy starts its own tracking


def test_changed_keys_match_a_diff_of_states() -> None:
    rng = random.Random(7)
    state = AWLWWMap("a")
    state.changed_keys()
    for _ in range(200):
        before = {k: e for k, e in state.to_dict()["store"]}
        other = AWLWWMap(rng.choice(["b", "c"]))
        other.merge(state.slice(rng.sample(KEYS, 3)))
        for _ in range(rng.randint(0, 3)):
            key = rng.choice(KEYS)
            if rng.random() < 0.3:
                other.remove(key)
            else:
                other.put(key, rng.randint(0, 5))
        if rng.random() < 0.5:
            state.merge(other)
        else:
            state.put(rng.choice(KEYS), rng.randint(0, 5))
        after = {k: e for k, e in state.to_dict()["store"]}
        differ = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
        assert differ <= state.changed_keys()


@pytest.mark.parametrize("build", BUILDERS)
def test_merge_slice_rejects_another_type(build: Any) -> None:
    with pytest.raises(ConfigError):
        build("a", []).merge_slice(ORMap("MVRegister"), [])


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(st.lists(st.tuples(st.sampled_from("abc"), st.integers(1, 30)), max_size=12),
                max_size=8))
def test_context_merge_is_the_union_in_canonical_form(groups: list[list[tuple[str, int]]]
                                                      ) -> None:
    joined = CausalContext()
    seen: set[tuple[str, int]] = set()
    for group in groups:
        joined.merge(CausalContext.of_dots(group))
        seen |= set(group)
        assert joined == CausalContext.of_dots(seen)
        assert joined.to_dict() == CausalContext.of_dots(seen).to_dict()


def test_context_merge_of_many_small_deltas_is_linear() -> None:
    """Joining 20k one-dot contexts into one with a large cloud stays fast (it re-sorted the
    whole cloud on every merge)."""
    ctx = CausalContext.of_dots(("s", 2 * n) for n in range(1, 20_001))
    started = time.perf_counter()
    for n in range(1, 20_001):
        ctx.merge(CausalContext.of_dots([("a", n), ("s", 4 * n)]))
    assert time.perf_counter() - started < 5.0
    assert ctx.to_dict()["vv"] == {"a": 20_000}
