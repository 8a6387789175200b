"""herd.registry.operations: what the blocking and the asyncio client share -- argument checks,
shard addressing, combining answers, retry bookkeeping and the refusal -> exception mapping
(no Ray)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pytest
from ray.exceptions import ActorUnavailableError

from herd.platform.errors import HerdTimeoutError
from herd.registry import operations as ops
from herd.registry.cache import LookupCache
from herd.registry.errors import (
    AlreadyRegistered,
    EpochConflict,
    HolderDead,
    KeyModeError,
    NotRegistered,
    RegistryInputError,
)
from herd.registry.layout import shard_of
from herd.registry.records import EventBatch, KeyMode, Registration, Rejection


@dataclass
class Layout:
    name: str = "r"
    keys: KeyMode = "unique"
    shards: int = 1


def registration(key: str, entry_id: int, handle: Any = "h") -> Registration:
    return Registration(key=key, handle=handle, meta={}, node_id="n", epoch=entry_id,
                        registered_at=0.0, entry_id=entry_id, holder_id=f"holder-{entry_id}")


# --------------------------------------------------------------------- refusals -> errors
def test_every_refusal_maps_to_its_typed_error_with_its_fields() -> None:
    already = ops.rejection_error(Rejection("already_registered", "k", holder="h1"))
    assert isinstance(already, AlreadyRegistered) and (already.key, already.holder) == ("k", "h1")
    conflict = ops.rejection_error(Rejection("epoch_conflict", "k", expected=3, actual=5))
    assert isinstance(conflict, EpochConflict)
    assert (conflict.key, conflict.expected, conflict.actual) == ("k", 3, 5)
    missing = ops.rejection_error(Rejection("not_registered", "k", detail="no such holder"))
    assert isinstance(missing, NotRegistered) and "no such holder" in str(missing)
    dead = ops.rejection_error(Rejection("holder_dead", "k", holder="h2"))
    assert isinstance(dead, HolderDead) and dead.holder == "h2"
    late = ops.rejection_error(Rejection("holder_not_ready", "k", detail="PENDING_CREATION"))
    assert isinstance(late, HerdTimeoutError) and "PENDING_CREATION" in str(late)


def test_attempts_pass_answers_raise_refusals_and_respect_the_deadline() -> None:
    call = ops.ShardCall(0, "count")
    attempts = ops.Attempts("r", call, time.monotonic() + 10)
    assert attempts.result(7) == 7 and 9 < attempts.remaining() <= 10
    with pytest.raises(EpochConflict):
        attempts.result(Rejection("epoch_conflict", "k", expected=1, actual=2))
    assert attempts.pause_after(ActorUnavailableError("restarting", None)) == ops.RETRY_PAUSE_S
    expired = ops.Attempts("r", call, time.monotonic() - 1)
    with pytest.raises(HerdTimeoutError, match="registry 'r' count did not complete"):
        expired.remaining()
    with pytest.raises(HerdTimeoutError, match="unavailable"):
        expired.pause_after(ActorUnavailableError("restarting", None))


# ------------------------------------------------------------------------ building calls
def test_single_key_operations_go_to_the_keys_shard() -> None:
    registry = Layout(shards=5)
    for key in ("a", "b", "some/longer/key"):
        operation = ops.remove(registry, key, None, None)
        assert [c.shard for c in operation.calls] == [shard_of(key, 5)]
        assert operation.calls[0] == ops.ShardCall(shard_of(key, 5), "unregister",
                                                   (key, None, None))


def test_queries_fan_out_to_every_shard_and_combine() -> None:
    registry = Layout(shards=3)
    select = ops.select(registry, "p/", {"x": 1}, None)
    assert [c.shard for c in select.calls] == [0, 1, 2]
    assert all(c.args == ("p/", {"x": 1}, True) for c in select.calls)
    bare = ops.select(registry, "p/", None, None, handles=False)  # meta only: no handles
    assert all(c.args == ("p/", {}, False) for c in bare.calls)
    merged = select.combine([[registration("p/b", 2)], [], [registration("p/a", 9)]])
    assert [r.key for r in merged] == ["p/a", "p/b"]
    assert ops.count(registry, None).combine([1, 2, 3]) == 6
    assert ops.info(registry, None).combine([{"a": 1}, {"b": 2}, {}]) == [{"a": 1}, {"b": 2}, {}]
    assert ops.ping(registry, time.monotonic() + 1).combine([0, 0, 0]) is None


def test_timeouts_become_deadlines_and_bad_ones_are_refused() -> None:
    before = time.monotonic()
    operation = ops.count(Layout(), 2.5)
    assert before + 2.5 <= operation.deadline <= time.monotonic() + 2.5
    for bad in (0, -1, float("inf"), "5", True):
        with pytest.raises(RegistryInputError, match="seconds") as info:
            ops.count(Layout(), bad)  # type: ignore[arg-type]
        assert info.value.field == "timeout"


def test_unregister_outside_an_actor_needs_a_handle_and_points_to_remove() -> None:
    with pytest.raises(RegistryInputError, match=r"remove\(key\)") as info:
        ops.unregister(Layout(), "k", None, None, None)
    assert info.value.field == "handle"
    with pytest.raises(RegistryInputError):
        ops.unregister(Layout(), "k", "not a handle", None, None)


def test_epoch_conditions_need_a_unique_registry() -> None:
    duplicate = Layout(keys="duplicate")
    with pytest.raises(KeyModeError, match=r"remove\(epoch=...\) needs a unique registry"):
        ops.remove(duplicate, "k", 3, None)
    with pytest.raises(KeyModeError, match="compare_and_set needs a unique registry"):
        ops.compare_and_set(duplicate, "k", 0, {}, None)
    with pytest.raises(RegistryInputError):
        ops.remove(Layout(), "k", -1, None)
    assert ops.remove(Layout(), "k", 4, None).calls[0].args == ("k", None, 4)


def test_compare_and_set_checks_changes_and_carries_an_operation_id() -> None:
    registry = Layout()
    first = ops.compare_and_set(registry, "k", None, {"meta": {"a": (1, 2)}}, None)
    second = ops.compare_and_set(registry, "k", None, {"meta": {"a": (1, 2)}}, None)
    key, expected, changes, node, op, ready_s = first.calls[0].args
    assert (key, expected, changes, node) == ("k", 0, {"meta": {"a": [1, 2]}}, None)
    assert op != second.calls[0].args[4] and 0 < ready_s < first.deadline - time.monotonic()
    with pytest.raises(RegistryInputError) as info:
        ops.compare_and_set(registry, "k", 0, {"owner": "n1"}, None)
    assert info.value.field == "owner"
    for bad_node in ("", 7):
        with pytest.raises(RegistryInputError) as info:
            ops.compare_and_set(registry, "k", 0, {}, None, bad_node)  # type: ignore[arg-type]
        assert info.value.field == "holder_node"


def test_update_meta_returns_one_record_or_a_list_by_mode() -> None:
    unique = ops.update_meta(Layout(), "k", {"v": 1}, None, None)
    assert unique.combine([[registration("k", 1)]]) == registration("k", 1)
    with pytest.raises(RegistryInputError, match="required"):
        ops.update_meta(Layout(keys="duplicate"), "k", {"v": 1}, None, None)


# ----------------------------------------------------------------------- cache and waits
def test_fetch_offers_its_answer_to_the_cache_and_lookups_read_it() -> None:
    cache = LookupCache("unique", shards=1)
    cache.apply(0, EventBatch(seq=4, reset=True))
    assert ops.cached(cache, "k") is ops.MISS and ops.cached_entry(cache, "k") is ops.MISS
    fetched = ops.fetch(Layout(), "k", None, cache)
    assert fetched.calls[0] == ops.ShardCall(0, "entry", ("k",))
    assert fetched.combine([(5, [registration("k", 5)])]) == [registration("k", 5)]
    assert ops.cached(cache, "k") == "h" and ops.cached_entry(cache, "k") == registration("k", 5)
    assert ops.cached(cache, 42) is ops.MISS  # a bad key is left to the fetch to refuse
    uncached = ops.fetch(Layout(), "other", None, None)
    uncached.combine([(6, [registration("other", 6)])])
    assert ops.cached(cache, "other") is ops.MISS


def test_results_by_mode() -> None:
    regs = [registration("k", 1, "a"), registration("k", 2, None), registration("k", 3, "c")]
    assert ops.lookup_result("unique", regs) == "a" and ops.lookup_result("unique", []) is None
    assert ops.lookup_result("duplicate", regs) == ["a", "c"]
    assert ops.entry_result("unique", []) is None and ops.entry_result("duplicate", []) == []


def test_wait_for_polls_within_its_deadline_then_says_not_registered() -> None:
    waiting = ops.WaitFor(Layout(shards=4), "k", None, 30)
    poll = waiting.next_poll()
    key, excluded, wait_s = poll.calls[0].args
    assert (poll.calls[0].shard, key, excluded) == (shard_of("k", 4), "k", None)
    assert wait_s == ops.LONG_POLL_S and poll.deadline == waiting.deadline
    assert isinstance(waiting.timed_out(HerdTimeoutError("slow")), NotRegistered)
    short = ops.WaitFor(Layout(), "k", None, ops.WAIT_GRACE_S / 2)
    with pytest.raises(NotRegistered, match="no holder registered in time"):
        short.next_poll()


def test_dispatch_calls_every_member_and_names_a_missing_method() -> None:
    class Method:
        def __init__(self, calls: list[Any]) -> None:
            self.calls = calls

        def remote(self, *args: Any, **kwargs: Any) -> str:
            self.calls.append((args, kwargs))
            return f"ref{len(self.calls)}"

    class Member:
        def __init__(self) -> None:
            self.calls: list[Any] = []
            self.ping = Method(self.calls)

    members = [Member(), Member()]
    assert ops.dispatch("g", members, "ping", (1,), {"x": 2}) == ["ref1", "ref1"]
    assert members[0].calls == [((1,), {"x": 2})]
    with pytest.raises(RegistryInputError, match="no such actor method"):
        ops.dispatch("g", [object()], "ping", (), {})
    with pytest.raises(KeyModeError):
        ops.dispatch_method(Layout(), "ping")
    assert ops.dispatch_method(Layout(keys="duplicate"), "ping") == "ping"


def test_config_round_trip_and_mismatch() -> None:
    raw = ops.config_bytes("unique", 2)
    assert ops.parse_config(raw) == {"keys": "unique", "shards": 2}
    assert ops.parse_config(None) is None
    ops.check_config("r", "unique", 2, None)
    ops.check_config("r", "unique", 2, ops.parse_config(raw))
    with pytest.raises(KeyModeError, match="exists with keys='unique', shards=2"):
        ops.check_config("r", "duplicate", 2, ops.parse_config(raw))
