"""The cache's pure parts: LRU/TTL/LWW entries, ring holders and re-homing plans, the local
topology (single flight in one process) and bad input at the boundary."""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from herd.platform.errors import ConfigError
from herd.replication.cache import Cache
from herd.replication.cache_ring import CacheRing, RehomePlan
from herd.replication.cache_store import CacheStore, Entry
from herd.replication.errors import InvalidValue


def entry(value: object, version: tuple[int, int, str], expires_ms: int | None = None) -> Entry:
    return Entry(value, version, expires_ms)


def test_lru_evicts_the_least_recently_used() -> None:
    store = CacheStore(max_entries=2)
    store.merge("a", entry(1, (1, 0, "x")), (1, 0, "x"), 0)
    store.merge("b", entry(2, (2, 0, "x")), (2, 0, "x"), 0)
    assert store.get("a", 0) == (True, 1)  # a is now the most recent
    store.merge("c", entry(3, (3, 0, "x")), (3, 0, "x"), 0)
    assert store.get("b", 0) == (False, None)
    assert store.get("a", 0) == (True, 1) and store.get("c", 0) == (True, 3)
    assert store.stats.as_dict() == {"hits": 3, "misses": 1, "evictions": 1, "expired": 0,
                                     "loads": 0}


def test_ttl_expires_per_entry() -> None:
    store = CacheStore()
    store.merge("a", entry(1, (1, 0, "x"), expires_ms=100), (1, 0, "x"), 0)
    store.merge("b", entry(2, (1, 1, "x")), (1, 1, "x"), 0)
    assert store.get("a", 99) == (True, 1)
    assert store.get("a", 100) == (False, None) and store.stats.expired == 1
    assert store.get("b", 10**12) == (True, 2)


def test_last_writer_wins_and_tombstones_stop_late_writes() -> None:
    store = CacheStore(tombstone_ms=1000)
    assert store.merge("k", entry("new", (5, 0, "b")), (5, 0, "b"), 0)
    assert not store.merge("k", entry("old", (4, 9, "a")), (4, 9, "a"), 0)
    assert store.merge("k", None, (6, 0, "a"), 0)
    assert not store.merge("k", entry("late", (5, 5, "c")), (5, 5, "c"), 10)
    assert store.get("k", 10) == (False, None)
    assert store.merge("k", entry("after", (5, 5, "c")), (5, 5, "c"), 2000)  # tombstone gone


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 20), st.sampled_from("xyz"),
                          st.booleans()), max_size=30), st.randoms())
def test_any_delivery_order_gives_the_same_values(writes: list[tuple[str, int, str, bool]],
                                                  rng: object) -> None:
    items = [(key, None if delete else entry(f"{wall}{rep}", (wall, n, rep)), (wall, n, rep))
             for n, (key, wall, rep, delete) in enumerate(writes)]  # versions are unique
    shuffled = list(items)
    rng.shuffle(shuffled)  # type: ignore[attr-defined]
    stores = [CacheStore(), CacheStore()]
    for store, order in zip(stores, (items, shuffled), strict=True):
        for key, value, version in order:
            store.merge(key, value, version, 0)
    assert [stores[0].get(k, 0) for k in "abc"] == [stores[1].get(k, 0) for k in "abc"]


def test_holders_are_distinct_and_stable() -> None:
    ring = CacheRing(backups=2)
    nodes = ["n1", "n2", "n3", "n4"]
    holders = ring.holders("key-7", nodes)
    assert len(holders) == 3 == len(set(holders))
    assert ring.holders("key-7", list(reversed(nodes))) == holders
    assert CacheRing(backups=5).holders("k", ["n1", "n2"]) in (["n1", "n2"], ["n2", "n1"])


def test_rehome_plan_after_a_holder_dies_reaches_the_new_holders() -> None:
    ring = CacheRing(backups=1)
    before = ["n1", "n2", "n3", "n4"]
    keys = [f"k{i}" for i in range(200)]
    dead = "n1"
    after = [n for n in before if n != dead]
    plans = {me: RehomePlan(ring, me, [k for k in keys if me in ring.holders(k, before)],
                            before, after) for me in after}
    for key in keys:
        survivors = [h for h in ring.holders(key, before) if h != dead]
        if not survivors:
            continue
        holders_now = set(survivors)
        for me in survivors:
            holders_now |= {node for node, sent in plans[me].sends.items() if key in sent}
        assert set(ring.holders(key, after)) <= holders_now


def test_rehome_plan_on_join_moves_about_a_share_and_drops_what_left() -> None:
    ring = CacheRing(backups=0)
    before, after = ["n1", "n2", "n3"], ["n1", "n2", "n3", "n4"]
    keys = [f"k{i}" for i in range(600)]
    moved = 0
    for me in before:
        mine = [k for k in keys if ring.holders(k, before) == [me]]
        plan = RehomePlan(ring, me, mine, before, after)
        assert set(plan.sends) <= {"n4"}
        assert sorted(plan.drops) == sorted(plan.sends.get("n4", []))
        moved += len(plan.drops)
    assert 60 < moved < 300  # ~1/4 of the keys


def test_local_cache_single_flight_calls_the_loader_once() -> None:
    cache = Cache.start("unit-local", topology="local", ttl=30)
    calls: list[int] = []
    gate = threading.Event()

    def loader() -> str:
        calls.append(1)
        gate.wait(5)
        return "loaded"

    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(cache.get_or_load("k", loader)))
               for _ in range(20)]
    for thread in threads:
        thread.start()
    time.sleep(0.05)
    gate.set()
    for thread in threads:
        thread.join(5)
    assert results == ["loaded"] * 20 and calls == [1]
    assert cache.stats()["loads"] == 1
    cache.delete("k")
    assert cache.get("k") is None


def test_local_cache_put_get_ttl_and_lru() -> None:
    cache = Cache.start("unit-lru", topology="local", max_entries=2)
    cache.put("a", 1, ttl=0.05)
    cache.put("b", 2)
    assert cache.get("a") == 1
    time.sleep(0.06)
    assert cache.get("a", "gone") == "gone"
    cache.put("c", 3)
    cache.put("d", 4)
    assert cache.get("b") is None and cache.stats()["evictions"] == 1


@pytest.mark.parametrize("kwargs,field", [({"topology": "sharded"}, "topology"),
                                          ({"ttl": 0}, "ttl"), ({"ttl": -1.5}, "ttl"),
                                          ({"max_entries": 0}, "max_entries"),
                                          ({"backups": -1}, "backups")])
def test_bad_settings_name_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        Cache.start("bad", **kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


def test_bad_values_and_ttls_are_typed_errors() -> None:
    cache = Cache.start("unit-bad", topology="local")
    with pytest.raises(InvalidValue, match="pickled"):
        cache.put("k", threading.Lock())
    with pytest.raises(InvalidValue, match="hashable"):
        cache.put(["list"], 1)
    with pytest.raises(ConfigError, match="ttl"):
        cache.put("k", 1, ttl=0)
    with pytest.raises(ConfigError, match="loader"):
        cache.get_or_load("k", "not callable")  # type: ignore[arg-type]
