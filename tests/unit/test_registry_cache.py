"""herd.registry.cache: the per-process lookup cache and how events keep it fresh (no Ray)."""

from __future__ import annotations

from herd.registry.cache import LookupCache
from herd.registry.records import EventBatch, Registered, Registration, Unregistered, Updated


def registration(key: str, holder: str, epoch: int, entry_id: int | None = None) -> Registration:
    return Registration(key=key, handle=f"h-{holder}", meta={}, node_id="n", epoch=epoch,
                        registered_at=0.0, entry_id=entry_id or epoch, holder_id=holder)


def test_nothing_is_cached_until_the_event_stream_is_in_sync() -> None:
    cache = LookupCache("unique", shards=1)
    cache.offer("k", 0, 5, [registration("k", "a", 5)])
    assert "k" not in cache.slots
    cache.apply(0, EventBatch(seq=5, reset=True))
    cache.offer("k", 0, 5, [registration("k", "a", 5)])
    assert cache.slots["k"].value == "h-a"


def test_an_answer_older_than_the_applied_events_is_not_cached() -> None:
    cache = LookupCache("unique", shards=1)
    cache.apply(0, EventBatch(seq=10, reset=True))
    cache.offer("k", 0, 9, [registration("k", "a", 5)])
    assert "k" not in cache.slots


def test_removal_event_clears_a_cached_holder_and_old_events_are_ignored() -> None:
    cache = LookupCache("unique", shards=1)
    cache.apply(0, EventBatch(seq=4, reset=True))
    first = registration("k", "a", 3)
    cache.offer("k", 0, 4, [first])
    cache.apply(0, EventBatch(seq=5, events=(Registered(3, 0, first),)))  # not newer: ignored
    assert cache.slots["k"].value == "h-a"
    cache.apply(0, EventBatch(seq=6, events=(Unregistered(6, 0, first, "holder died"),)))
    assert cache.slots["k"].value is None  # a negative slot: absent, still kept fresh
    second = registration("k", "b", 7)
    cache.apply(0, EventBatch(seq=7, events=(Registered(7, 0, second),)))
    assert cache.slots["k"].value == "h-b"
    third = registration("k", "c", 8, entry_id=7)
    cache.apply(0, EventBatch(seq=8, events=(Updated(8, 0, third, second, "compare_and_set"),)))
    assert cache.slots["k"].value == "h-c"


def test_duplicate_slots_track_members() -> None:
    cache = LookupCache("duplicate", shards=1)
    cache.apply(0, EventBatch(seq=2, reset=True))
    a, b = registration("g", "a", 1), registration("g", "b", 2)
    cache.offer("g", 0, 2, [a, b])
    assert cache.slots["g"].value == ("h-a", "h-b")
    cache.apply(0, EventBatch(seq=3, events=(Unregistered(3, 0, a, "unregistered"),)))
    assert cache.slots["g"].value == ("h-b",)


def test_losing_the_stream_forgets_the_shard() -> None:
    cache = LookupCache("unique", shards=2)
    cache.apply(0, EventBatch(seq=1, reset=True))
    cache.apply(1, EventBatch(seq=1, reset=True))
    cache.offer("x", 0, 1, [registration("x", "a", 1)])
    cache.offer("y", 1, 1, [registration("y", "a", 1)])
    cache.suspend(1)
    assert "x" in cache.slots and "y" not in cache.slots and not cache.in_sync(1)
    cache.offer("y", 1, 1, [registration("y", "a", 1)])
    assert "y" not in cache.slots
    cache.apply(0, EventBatch(seq=9, reset=True))  # a reset drops the shard's slots too
    assert "x" not in cache.slots


def test_invalidate_only_drops_a_slot_naming_that_holder() -> None:
    cache = LookupCache("unique", shards=1)
    cache.apply(0, EventBatch(seq=1, reset=True))
    cache.offer("k", 0, 1, [registration("k", "a", 1)])
    cache.invalidate("k", "b")
    assert "k" in cache.slots
    cache.invalidate("k", "a")
    assert "k" not in cache.slots


def test_cache_is_bounded() -> None:
    cache = LookupCache("unique", shards=1, max_slots=3)
    cache.apply(0, EventBatch(seq=1, reset=True))
    for i in range(5):
        cache.offer(f"k{i}", 0, 1, [])
    assert list(cache.slots) == ["k2", "k3", "k4"]
