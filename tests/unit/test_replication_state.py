"""ReplicaState's incremental digests and per-key extraction, against whole-state references:
a bucket's hash is equal in two states exactly when their entries in that bucket are; the
incrementally kept hashes equal those of a state rebuilt from the payload; partial states and
partial merges match filtering the full ``to_dict``; merging a partial state keeps the
writer's clock."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from herd.replication.state import FINE_BUCKETS, ReplicaState, bucket_of

OPS = {"lww_map": ("put", "delete"), "ormap": ("put", "delete", "incr", "add", "discard")}


def _apply(state: ReplicaState, op: str, n: int) -> None:
    key = f"k{n % 17}"
    if op == "put":
        state.put(key, n)
    elif op == "delete":
        state.delete(key)
    elif op == "incr":
        state.incr(key, n % 5 + 1)
    elif op == "add":
        state.add(key, f"e{n % 3}")
    else:
        state.discard(key, f"e{n % 3}")


def _entries_by_bucket(state: ReplicaState, count: int) -> list[list[Any]]:
    buckets: list[list[Any]] = [[] for _ in range(count)]
    for name, part in state.payload()["parts"].items():
        for key, encoded in part["store"]:
            buckets[bucket_of(name, key, count)].append([name, key, encoded])
    return [sorted(b, key=repr) for b in buckets]


def _fresh(state: ReplicaState) -> ReplicaState:
    copy = ReplicaState(state.kind, "fresh")
    copy.merge(state.payload())
    return copy


SCHEDULE = st.lists(st.tuples(st.sampled_from(["a", "b", "sync_ab", "sync_ba"]),
                              st.integers(0, 4), st.integers(0, 200)), max_size=40)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.sampled_from(["lww_map", "ormap"]), SCHEDULE,
       st.sampled_from([1, 2, 8, 64, FINE_BUCKETS, 2 * FINE_BUCKETS]))
def test_bucket_hashes_follow_the_entries(kind: str, schedule: list[tuple[str, int, int]],
                                          count: int) -> None:
    a, b = ReplicaState(kind, "a@1"), ReplicaState(kind, "b@1")
    ops = OPS[kind]
    for who, op, n in schedule:
        if who == "a":
            _apply(a, ops[op % len(ops)], n)
        elif who == "b":
            _apply(b, ops[op % len(ops)], n)
        else:
            source, target = (a, b) if who == "sync_ab" else (b, a)
            if n % 2:
                target.merge(source.payload())
            else:
                chosen = [c for c in range(8) if (n >> (c % 6)) & 1]
                target.merge_partial(source.partial(chosen, 8), chosen, 8)
        if n % 7 == 0:  # digests taken in between must not go stale
            a.bucket_hashes(count)
    hashes_a, whole_a = a.bucket_hashes(count)
    hashes_b, whole_b = b.bucket_hashes(count)
    assert (hashes_a, whole_a) == _fresh(a).bucket_hashes(count)
    entries_a, entries_b = _entries_by_bucket(a, count), _entries_by_bucket(b, count)
    for bucket in range(count):
        assert (hashes_a[bucket] == hashes_b[bucket]) == (entries_a[bucket] == entries_b[bucket])
    assert (whole_a == whole_b) == (a.payload() == b.payload())


@settings(max_examples=40, deadline=None, derandomize=True)
@given(st.lists(st.integers(0, 200), max_size=30), st.lists(st.integers(0, 200), max_size=30),
       st.sets(st.integers(0, 15)))
def test_partial_state_and_merge_match_filtering(mine_ops: list[int], their_ops: list[int],
                                                 chosen: set[int]) -> None:
    count = 16
    mine, theirs = ReplicaState("lww_map", "a@1"), ReplicaState("lww_map", "b@1")
    for n in mine_ops:
        _apply(mine, "delete" if n % 4 == 0 else "put", n)
    theirs.merge(mine.payload())
    for n in their_ops:
        _apply(theirs, "delete" if n % 4 == 0 else "put", n)
    partial = theirs.partial(sorted(chosen), count)
    full = theirs.payload()["parts"]["map"]
    assert partial["parts"]["map"] == {
        **full, "store": [e for e in full["store"] if bucket_of("map", e[0], count) in chosen]}
    expected = ReplicaState("lww_map", "x")
    expected.merge(mine.payload())
    expected.merge(theirs.payload())
    before = dict(mine.payload()["parts"]["map"]["store"])
    mine.merge_partial(partial, sorted(chosen), count)
    after = dict(mine.payload()["parts"]["map"]["store"])
    joined = dict(expected.payload()["parts"]["map"]["store"])
    for key in before.keys() | after.keys() | joined.keys():
        inside = bucket_of("map", key, count) in chosen
        assert after.get(key) == (joined.get(key) if inside else before.get(key))


def test_partial_key_holds_one_key_and_the_context() -> None:
    state = ReplicaState("ormap", "a@1")
    state.put("r", 1)
    state.add("s", "x")
    state.incr("c", 2)
    reader = ReplicaState("ormap", "reader")
    reader.merge(state.partial_key("s"))
    assert reader.items() == {"s": {"x"}}
    assert reader.version_vector() == state.version_vector() == {"a@1": 1}  # a dot per part


def test_merge_partial_keeps_the_writers_clock() -> None:
    mine, theirs = ReplicaState("lww_map", "a@1"), ReplicaState("lww_map", "b@1")
    mine.put("k", 1)
    clock = mine.parts["map"].clock
    theirs.put("j", 2)
    mine.merge_partial(theirs.partial(list(range(4)), 4), list(range(4)), 4)
    assert mine.parts["map"].clock is clock and mine.parts["map"].replica == "a@1"
    mine.put("k", 3)
    assert mine.items() == {"k": 3, "j": 2}
