"""Batched writes and group commit in the pure registry state (herd.registry.state), the
log-structured shard store (herd.registry.store) over an in-memory KV, and the client-side
checking of batches (herd.registry.batches)."""

from __future__ import annotations

import asyncio
import pickle
from typing import Any

import pytest

from herd.registry import batches, store
from herd.registry.change import Change
from herd.registry.errors import RegistryInputError
from herd.registry.records import (
    ClaimItem,
    MetaMatch,
    Registered,
    RegisterItem,
    Registration,
    Rejection,
    RemoveItem,
    Unregistered,
    Updated,
)
from herd.registry.state import RegistryState


def item(key: str, holder: str, op: str = "", **kw: Any) -> RegisterItem:
    return RegisterItem(key, f"h-{holder}", holder, "node-1", kw.get("meta", {}),
                        kw.get("on_holder_death", "remove"), op or f"op-{key}-{holder}")


def commit(state: RegistryState, change: Change) -> Any:
    state.commit(change)
    return change.result


def test_register_many_is_one_change_with_per_item_results() -> None:
    state = RegistryState("unique")
    commit(state, state.plan_register_many([item("taken", "x")], 1.0))
    change = state.plan_register_many(
        [item("a", "h"), item("taken", "h"), item("b", "h"), item("a", "other")], 2.0)
    assert state.count() == 1  # planning changed nothing
    results = commit(state, change)
    assert [type(r) for r in results] == [Registration, Rejection, Registration, Rejection]
    assert results[1].kind == "already_registered" and results[1].holder == "h-x"
    assert results[3].holder == "h-h"  # a key twice in one batch: the second sees the first
    assert [r.epoch for r in (results[0], results[2])] == [2, 3]
    assert [e.seq for e in change.events] == [2, 3] and state.counter == 3
    assert state.keys_of("h") == ["a", "b"] and state.holders() == {"h": "h-h", "x": "h-x"}


def test_retried_batch_returns_committed_items_and_plans_the_rest() -> None:
    state = RegistryState("unique")
    first = commit(state, state.plan_register_many([item("a", "h", op="b/0")], 1.0))
    again = state.plan_register_many([item("a", "h", op="b/0"), item("c", "h", op="b/1")], 1.0)
    assert again.result[0] == first[0] and len(again.puts) == 1


def test_duplicate_registry_batch_adds_memberships_in_order() -> None:
    state = RegistryState("duplicate")
    results = commit(state, state.plan_register_many(
        [item("g", "a", op="1"), item("g", "a", op="2"), item("g", "b", op="3")], 1.0))
    assert [r.entry_id for r in results] == [1, 2, 3]
    assert [r.holder_id for r in state.registrations("g")] == ["a", "a", "b"]


def test_compare_and_set_many_mixes_wins_and_conflicts() -> None:
    state = RegistryState("unique")
    created = commit(state, state.plan_compare_and_set_many(
        [ClaimItem(f"c{i}", 0, {"meta": {"n": i}}, None, None, f"create/{i}")
         for i in range(3)], 1.0))
    assert [r.epoch for r in created] == [1, 2, 3] and all(r.handle is None for r in created)
    claims = [ClaimItem("c0", 1, {"handle": "h-n"}, "n", "node-2", "claim/0"),
              ClaimItem("c1", 99, {"handle": "h-n"}, "n", "node-2", "claim/1"),
              ClaimItem("c2", 3, {"handle": "h-n"}, "n", "node-2", "claim/2"),
              ClaimItem("c2", 3, {"handle": "h-m"}, "m", "node-3", "claim/3"),  # lost race
              ClaimItem("c2", 5, {"meta": {"n": 9}}, None, None, "claim/4")]  # sees claim/2
    change = state.plan_compare_and_set_many(claims, 2.0)
    results = commit(state, change)
    assert isinstance(results[0], Registration) and results[0].epoch == 4
    assert results[1] == Rejection("epoch_conflict", "c1", expected=99, actual=2)
    assert results[2].epoch == 5 and results[3].actual == 5
    assert results[4].epoch == 6 and results[4].holder_id == "n" and results[4].meta == {"n": 9}
    assert len(change.puts) == 2  # c2 written once, in its final version
    assert [type(e) for e in change.events] == [Updated, Updated, Updated]
    assert state.keys_of("n") == ["c0", "c2"] and not state.has_holder("m")
    assert state.registrations("c2")[0].epoch == 6 and state.counter == 6


def test_remove_many_and_a_record_created_and_removed_in_one_group() -> None:
    state = RegistryState("unique")
    commit(state, state.plan_register_many([item("a", "h"), item("b", "h")], 1.0))
    results = commit(state, state.plan_remove_many(
        [RemoveItem("a"), RemoveItem("b", epoch=7), RemoveItem("zz")]))
    assert results[0] == 1 and results[1].kind == "epoch_conflict" and results[2] == 0
    change, outcomes = state.plan_group([
        lambda s: s.plan_register("n", "h-h", "h", None, {}, "remove", "r", 1.0),
        lambda s: s.plan_unregister("n"),
        lambda s: s.plan_register("n", "h-h", "h", None, {}, "remove", "r2", 1.0)])
    assert [getattr(o, "result", None) for o in outcomes][1] == 1
    assert not change.puts[:-1] and [r.key for r in change.deletes] == ["n"]
    assert [type(e) for e in change.events] == [Registered, Unregistered, Registered]
    commit(state, change)
    assert [r.epoch for r in state.registrations("n")] == [6]


def test_holder_gone_after_a_batch_removes_every_name_of_the_holder_at_once() -> None:
    state = RegistryState("unique")
    commit(state, state.plan_register_many(
        [item(f"k{i}", "host", on_holder_death="clear" if i % 2 else "remove")
         for i in range(1000)], 1.0))
    assert list(state.holders()) == ["host"]  # one holder to monitor for 1000 names
    change = state.plan_holder_gone("host", "holder died")
    commit(state, change)
    assert state.count() == 500 and not state.has_holder("host")
    assert len(change.deletes) == 500 and len(change.puts) == 500


def test_planning_a_group_leaves_the_state_exactly_as_it_was() -> None:
    state = RegistryState("duplicate")
    commit(state, state.plan_register_many([item("g", h, op=h) for h in "abc"], 1.0))
    before = (state.select(), state.counter, state.holders(), state.events_since(0))
    state.plan_group([lambda s: s.plan_unregister("g", "a"),
                      lambda s: s.plan_holder_gone("b", "holder died"),
                      lambda s: s.plan_register("g", "h-d", "d", None, {}, "remove", "d", 1.0),
                      lambda s: s.plan_update_meta("g", {"x": 1}, "c", "u")])
    assert (state.select(), state.counter, state.holders(), state.events_since(0)) == before
    assert [r.holder_id for r in state.registrations("g")] == ["a", "b", "c"]


def test_a_batch_reaches_pollers_as_one_event_batch() -> None:
    state = RegistryState("unique")
    commit(state, state.plan_register_many([item("first", "h")], 1.0))
    commit(state, state.plan_register_many([item(f"k{i}", "h") for i in range(2500)], 1.0))
    commit(state, state.plan_register_many([item("last", "h")], 1.0))
    batch = state.events_since(1)
    assert len(batch.events) == 2500 and batch.seq == 2501
    assert [e.key for e in state.events_since(batch.seq).events] == ["last"]


# ---------------------------------------------------------------------------------- store
class MemoryKV:
    """The subset of herd.platform.kv the store uses, in memory; ``fail_after`` puts fail."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.puts = 0
        self.fail_after: int | None = None

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for name in ("get", "get_object", "keys", "aput", "aput_object", "adelete"):
            monkeypatch.setattr(store.kv, name, getattr(self, name))

    def get(self, key: str) -> bytes | None:
        return self.data.get(key)

    def get_object(self, key: str, default: Any = None) -> Any:
        return pickle.loads(self.data[key]) if key in self.data else default

    async def aput(self, key: str, value: bytes) -> None:
        if self.fail_after is not None and self.puts >= self.fail_after:
            raise ConnectionError("KV unavailable")
        self.puts += 1
        self.data[key] = value

    def keys(self, prefix: str) -> list[str]:
        return [k for k in self.data if k.startswith(prefix)]

    async def aput_object(self, key: str, value: Any) -> None:
        if self.fail_after is not None and self.puts >= self.fail_after:
            raise ConnectionError("KV unavailable")
        self.puts += 1
        self.data[key] = pickle.dumps(value)

    async def adelete(self, key: str) -> None:
        self.data.pop(key, None)


def run_history(shard: store.ShardStore, state: RegistryState, changes: int) -> None:
    for n in range(changes):
        change = state.plan_register_many([item(f"k{n}-{i}", f"h{i % 3}") for i in range(40)], 1.0)
        asyncio.run(shard.write(change))
        state.commit(change)
        if n % 3 == 0:
            gone = state.plan_holder_gone(f"h{n % 3}", "holder died")
            asyncio.run(shard.write(gone))
            state.commit(gone)


@pytest.mark.parametrize("fail_after", [None, 0, 1, 3])
def test_store_reloads_the_same_state_after_compaction_or_its_failure(
        monkeypatch: pytest.MonkeyPatch, fail_after: int | None) -> None:
    monkeypatch.setattr(store, "CHUNK", 16)
    kv = MemoryKV()
    kv.install(monkeypatch)
    shard, state = store.ShardStore("r", 0), RegistryState("unique")
    run_history(shard, state, 10)
    assert kv.puts == 14  # one put per change, whatever its size
    kv.fail_after = None if fail_after is None else kv.puts + fail_after
    try:
        asyncio.run(shard.compact())
    except ConnectionError:
        assert fail_after is not None
    kv.fail_after = None
    for _ in range(2):  # reload, write more, compact, reload again
        reloaded = store.ShardStore("r", 0)
        entries, counter = reloaded.load()
        assert counter == state.counter
        assert sorted((e.registration for e in entries), key=lambda r: r.entry_id) == sorted(
            state.select(), key=lambda r: r.entry_id)
        run_history(reloaded, state, 2)
        asyncio.run(reloaded.compact())
    assert not kv.keys("registry/r/0/w/")  # every segment folded


def test_store_compaction_is_due_after_many_segments(monkeypatch: pytest.MonkeyPatch) -> None:
    MemoryKV().install(monkeypatch)
    shard, state = store.ShardStore("r", 0), RegistryState("unique")
    run_history(shard, state, store.COMPACT_SEGMENTS // 2)
    assert not shard.compaction_due()
    run_history(shard, state, store.COMPACT_SEGMENTS // 2)
    assert shard.compaction_due()


# --------------------------------------------------------------------------- client side
class Layout:
    name, keys, shards = "r", "unique", 4


def test_bad_batch_items_are_named_and_nothing_is_sent() -> None:
    with pytest.raises(RegistryInputError, match=r"entries\[0\]") as caught:
        batches.register_many(Layout(), [("ok", None)], "remove", None)
    assert caught.value.field == "entries[0].handle"
    with pytest.raises(RegistryInputError) as caught:
        batches.compare_and_set_many(Layout(), [("a", 0), ("", 0)], None)
    assert caught.value.field == "items[1].key"
    with pytest.raises(RegistryInputError) as caught:
        batches.compare_and_set_many(Layout(), [("a", -1)], None)
    assert caught.value.field == "items[0].expected_epoch"
    with pytest.raises(RegistryInputError) as caught:
        batches.compare_and_set_many(Layout(), [("a", 0, {"colour": 1})], None)
    assert caught.value.field == "items[0].changes.colour"
    with pytest.raises(RegistryInputError):
        batches.remove_many(Layout(), "not-a-list", None)


def test_batches_are_split_by_shard_and_answers_put_back_in_order() -> None:
    operation = batches.remove_many(Layout(), [f"k{i}" for i in range(40)] + [("e", 3)], None)
    assert 1 < len(operation.calls) <= 4
    assert all(c.method == "remove_many" for c in operation.calls)
    answers = [[len(c.args[0][0].key)] * len(c.args[0]) for c in operation.calls]
    for answer, call in zip(answers, operation.calls, strict=True):
        for i, removal in enumerate(call.args[0]):
            answer[i] = Rejection("epoch_conflict", removal.key, expected=3, actual=1) \
                if removal.key == "e" else removal.key
    results = operation.combine(answers)
    assert results[:40] == [f"k{i}" for i in range(40)]
    assert type(results[40]).__name__ == "EpochConflict"


def test_items_sharing_one_changes_dict_share_one_checked_copy() -> None:
    patch = {"meta_update": {"owner": "n2"}, "meta_increment": {"incarnation": 1}}
    operation = batches.compare_and_set_many(
        Layout(), [(f"k{i}", MetaMatch({"owner": "n1", "incarnation": 1}), patch)
                   for i in range(50)] + [("other", 3, {"meta": {"x": 1}})], None)
    items = [item for call in operation.calls for item in call.args[0]]
    shared = {id(item.changes) for item in items if item.key != "other"}
    assert len(items) == 51 and len(shared) == 1
    assert next(i for i in items if i.key == "k7").changes == patch
    assert next(i for i in items if i.key == "other").changes == {"meta": {"x": 1}}


def test_entries_reads_many_keys_one_call_per_shard_and_answers_in_order() -> None:
    keys = [f"k{i}" for i in range(30)]
    operation = batches.entries(Layout(), keys, None)
    asked = [key for call in operation.calls for key in call.args[0]]
    assert sorted(asked) == sorted(keys) and len(operation.calls) <= Layout.shards
    assert {call.method for call in operation.calls} == {"entries"}
    answers = [(7, [[f"record of {key}"] if key != "k3" else [] for key in call.args[0]])
               for call in operation.calls]
    found = operation.combine(answers)
    assert found[3] == [] and [regs[0] for i, regs in enumerate(found) if i != 3] == [
        f"record of {key}" for key in keys if key != "k3"]
    with pytest.raises(RegistryInputError):
        batches.entries(Layout(), "k1", None)
