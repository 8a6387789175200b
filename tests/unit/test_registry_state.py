"""herd.registry.state: the registry shard as a pure state machine (no Ray)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from herd.registry.change import Change
from herd.registry.meta import MAX_META_BYTES
from herd.registry.records import (
    AbsentOr,
    Entry,
    MetaMatch,
    Registered,
    Registration,
    Rejection,
    Unregistered,
    Updated,
)
from herd.registry.state import RegistryState


class FakeStore:
    """Mirrors ShardStore.write: records by entry id, high-water mark raised before deletes."""

    def __init__(self) -> None:
        self.entries: dict[int, Entry] = {}
        self.hw = 0

    def write(self, change: Change) -> None:
        if change.deletes:
            self.hw = change.counter
        for entry in change.puts:
            self.entries[entry.registration.entry_id] = entry
        for reg in change.deletes:
            self.entries.pop(reg.entry_id, None)

    def reload(self, mode: str) -> RegistryState:
        return RegistryState(mode, 0, self.hw, list(self.entries.values()))  # type: ignore[arg-type]


def apply(state: RegistryState, store: FakeStore, planned: Change | Rejection) -> Any:
    if isinstance(planned, Rejection):
        return planned
    if not planned.empty:
        store.write(planned)
        state.commit(planned)
    return planned.result


def reg(state: RegistryState, key: str, holder: str, op: str = "", **kw: Any) -> Change | Rejection:
    return state.plan_register(key, f"h-{holder}", holder, "node-1", kw.get("meta", {}),
                               kw.get("on_holder_death", "remove"), op or f"op-{key}-{holder}", 1.0)


def test_unique_register_rejects_second_holder_and_names_the_first() -> None:
    state, store = RegistryState("unique"), FakeStore()
    first = apply(state, store, reg(state, "k", "a"))
    assert isinstance(first, Registration) and first.epoch == 1 and first.holder_id == "a"
    second = reg(state, "k", "b")
    assert isinstance(second, Rejection) and second.kind == "already_registered"
    assert second.holder == "h-a"
    assert [r.holder_id for r in state.registrations("k")] == ["a"]


def test_retried_operation_returns_the_committed_result() -> None:
    state, store = RegistryState("unique"), FakeStore()
    first = apply(state, store, reg(state, "k", "a", op="same"))
    again = reg(state, "k", "a", op="same")
    assert isinstance(again, Change) and again.empty and again.result == first
    assert state.counter == 1


def test_duplicate_keys_keep_groups_and_a_holder_may_join_many_times() -> None:
    state, store = RegistryState("duplicate"), FakeStore()
    for holder, op in [("a", "1"), ("b", "2"), ("a", "3")]:
        apply(state, store, reg(state, "g", holder, op=op))
    assert [r.holder_id for r in state.registrations("g")] == ["a", "b", "a"]
    assert state.keys_of("a") == ["g"] and state.count() == 3
    assert apply(state, store, state.plan_unregister("g", "a")) == 2  # what it removed
    assert [r.holder_id for r in state.registrations("g")] == ["b"]
    assert apply(state, store, state.plan_unregister("g", "a")) == 0  # nothing left: visible


def test_unregister_of_a_holder_keeps_other_holders_records() -> None:
    state, store = RegistryState("unique"), FakeStore()
    apply(state, store, reg(state, "k", "a"))
    counter = state.counter
    assert apply(state, store, state.plan_unregister("k", "b")) == 0
    assert [r.holder_id for r in state.registrations("k")] == ["a"] and state.counter == counter
    assert apply(state, store, state.plan_unregister("k", None)) == 1  # every holder's
    assert state.registrations("k") == []


def test_compare_and_set_creates_updates_and_rejects() -> None:
    state, store = RegistryState("unique"), FakeStore()
    created = apply(state, store, state.plan_compare_and_set("c", 0, {"meta": {"owner": 1}},
                                                             None, None, "op1", 1.0))
    assert created.handle is None and created.meta == {"owner": 1} and created.epoch == 1
    conflict = state.plan_compare_and_set("c", 0, {}, None, None, "op2", 1.0)
    assert isinstance(conflict, Rejection) and (conflict.expected, conflict.actual) == (0, 1)
    claimed = apply(state, store, state.plan_compare_and_set(
        "c", 1, {"handle": "h-x", "meta": {"owner": 2}}, "x", "node-2", "op3", 2.0))
    assert (claimed.epoch, claimed.holder_id, claimed.node_id) == (2, "x", "node-2")
    assert claimed.entry_id == created.entry_id and claimed.registered_at == 1.0
    stale = state.plan_compare_and_set("c", 1, {}, None, None, "op4", 1.0)
    assert isinstance(stale, Rejection) and stale.actual == 2
    missing = state.plan_compare_and_set("nope", 5, {}, None, None, "op5", 1.0)
    assert isinstance(missing, Rejection) and missing.actual is None
    assert state.keys_of("x") == ["c"]


def test_compare_and_set_on_meta_values_ignores_other_changes() -> None:
    state, store = RegistryState("unique"), FakeStore()
    apply(state, store, reg(state, "c", "a", on_holder_death="clear",
                            meta={"owner": "n1", "incarnation": 1, "flag": True}))
    apply(state, store, state.plan_holder_gone("a", "holder died"))  # epoch 1 -> 2
    claim = MetaMatch({"owner": "n1", "incarnation": 1})
    won = apply(state, store, state.plan_compare_and_set(
        "c", claim, {"handle": "h-b", "meta": {"owner": "n2", "incarnation": 2}}, "b", "n2",
        "op1", 2.0))
    assert isinstance(won, Registration) and won.epoch == 3 and won.holder_id == "b"
    again = state.plan_compare_and_set("c", claim, {}, None, None, "op2", 3.0)  # lost: n2 now
    assert isinstance(again, Rejection) and again.kind == "epoch_conflict"
    assert (again.expected, again.actual) == (claim, 3)
    for values in ({"incarnation": True}, {"incarnation": 2.0}, {"missing": None}):
        assert isinstance(state.plan_compare_and_set("c", MetaMatch(values), {}, None, None,
                                                     "op3", 3.0), Rejection)
    absent = state.plan_compare_and_set("nope", claim, {}, None, None, "op4", 3.0)
    assert isinstance(absent, Rejection) and absent.actual is None


def test_compare_and_set_absent_or_epoch_takes_over_a_dead_holders_name_either_way() -> None:
    """A supervisor naming a crashed child's replacement: one write whether the registry has
    dropped the dead holder's record already or not; a third holder's record is never taken."""
    state, store = RegistryState("unique"), FakeStore()
    dead = apply(state, store, reg(state, "c", "a", meta={"pid": 1}))
    replaced = apply(state, store, state.plan_compare_and_set(
        "c", AbsentOr(dead.epoch), {"handle": "h-b", "meta": {"pid": 2}}, "b", "n2", "op1", 2.0))
    assert (replaced.holder_id, replaced.meta, replaced.node_id) == ("b", {"pid": 2}, "n2")
    assert replaced.epoch > dead.epoch and state.keys_of("a") == []
    apply(state, store, state.plan_holder_gone("b", "holder died"))  # the registry was first
    assert state.registrations("c") == []
    again = apply(state, store, state.plan_compare_and_set(
        "c", AbsentOr(replaced.epoch), {"handle": "h-c", "meta": {"pid": 3}}, "c", "n3",
        "op2", 3.0))
    assert again.holder_id == "c" and again.on_holder_death == "remove"
    other = state.plan_compare_and_set("c", AbsentOr(replaced.epoch), {"handle": "h-d"}, "d",
                                       "n4", "op3", 4.0)
    assert isinstance(other, Rejection) and other.kind == "epoch_conflict"
    assert (other.expected, other.actual) == (AbsentOr(replaced.epoch), again.epoch)


def test_partial_meta_changes_merge_and_add() -> None:
    state, store = RegistryState("unique"), FakeStore()
    apply(state, store, reg(state, "c", "a", meta={"owner": "n1", "incarnation": 1, "kind": "x",
                                                   "label": "text"}))
    patch = {"meta_update": {"owner": "n2", "state": "running"},
             "meta_increment": {"incarnation": 1, "failovers": 1, "label": 2}}
    won = apply(state, store, state.plan_compare_and_set("c", 1, patch, None, None, "op1", 1.0))
    assert won.meta == {"owner": "n2", "incarnation": 2, "kind": "x", "label": 2,
                        "state": "running", "failovers": 1}
    huge = state.plan_compare_and_set("c", won.epoch, {"meta_update": {
        "big": "x" * (MAX_META_BYTES - 20)}}, None, None, "op2", 1.0)
    assert isinstance(huge, Rejection) and huge.kind == "meta_too_large"
    assert "at most" in huge.detail and state.registrations("c")[0].meta == won.meta


def test_unregister_with_epoch_is_conditional() -> None:
    state, store = RegistryState("unique"), FakeStore()
    apply(state, store, reg(state, "k", "a"))
    wrong = state.plan_unregister("k", None, 7)
    assert isinstance(wrong, Rejection) and wrong.kind == "epoch_conflict"
    apply(state, store, state.plan_unregister("k", None, 1))
    assert state.registrations("k") == []


def test_holder_gone_removes_or_clears_and_bumps_epochs() -> None:
    state, store = RegistryState("unique"), FakeStore()
    apply(state, store, reg(state, "gone", "a"))
    apply(state, store, reg(state, "kept", "a", on_holder_death="clear", meta={"spec": 1}))
    change = state.plan_holder_gone("a", "holder died")
    apply(state, store, change)
    assert [type(e) for e in change.events] == [Unregistered, Updated]
    assert state.registrations("gone") == []
    kept = state.registrations("kept")[0]
    assert kept.handle is None and kept.holder_id is None and kept.meta == {"spec": 1}
    assert kept.epoch == 4 and not state.has_holder("a")


def test_update_meta_targets_the_holder() -> None:
    state, store = RegistryState("duplicate"), FakeStore()
    apply(state, store, reg(state, "g", "a", op="1"))
    apply(state, store, reg(state, "g", "b", op="2"))
    updated = apply(state, store, state.plan_update_meta("g", {"v": 2}, "b", "op"))
    assert [(r.holder_id, r.meta) for r in updated] == [("b", {"v": 2})]
    assert [r.holder_id for r in state.registrations("g")] == ["a", "b"]  # order kept
    missing = state.plan_update_meta("g", {}, "zz", "op2")
    assert isinstance(missing, Rejection) and missing.kind == "not_registered"


def test_select_by_prefix_and_meta() -> None:
    state, store = RegistryState("unique"), FakeStore()
    apply(state, store, reg(state, "jobs/1", "a", meta={"role": "x", "n": 1}))
    apply(state, store, reg(state, "jobs/2", "b", meta={"role": "y"}))
    apply(state, store, reg(state, "other", "c", meta={"role": "x"}))
    assert [r.key for r in state.select("jobs/")] == ["jobs/1", "jobs/2"]
    assert [r.key for r in state.select("", {"role": "x"})] == ["jobs/1", "other"]
    assert [r.key for r in state.select("jobs/", {"role": "x", "n": 1})] == ["jobs/1"]


def test_event_log_long_poll_positions_and_reset() -> None:
    state, store = RegistryState("unique", log_capacity=3), FakeStore()
    assert state.events_since(-1).reset  # a new poller first learns the position
    for i in range(4):
        apply(state, store, reg(state, f"k{i}", "a", op=str(i)))
    batch = state.events_since(0)
    assert [e.seq for e in batch.events] == [1, 2, 3, 4] and batch.seq == 4
    assert state.events_since(2, prefix="k3").events[0].key == "k3"
    assert state.events_since(4).events == () and state.events_since(4).seq == 4
    for i in range(4, 8):
        apply(state, store, reg(state, f"k{i}", "a", op=str(i)))
    assert state.events_since(1).reset  # trimmed out of the log
    assert [e.seq for e in state.events_since(6).events] == [7, 8]
    assert state.events_since(99).reset  # a position the shard never reached


def test_restart_loses_the_log_but_never_reuses_epochs_or_positions() -> None:
    state, store = RegistryState("unique"), FakeStore()
    apply(state, store, reg(state, "k", "a", op="1"))
    apply(state, store, state.plan_unregister("k"))
    reloaded = store.reload("unique")
    assert reloaded.counter == 2 and reloaded.registrations("k") == []
    assert reloaded.events_since(1).reset and not reloaded.events_since(2).reset
    again = apply(reloaded, store, reg(reloaded, "k", "b", op="2"))
    assert again.epoch == 3


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["reg", "unreg", "cas", "gone", "meta", "reload"]),
                          st.sampled_from(["k1", "k2", "k3"]),
                          st.sampled_from(["a", "b", "c"]),
                          st.integers(0, 6)), max_size=40),
       st.sampled_from(["unique", "duplicate"]))
def test_epochs_and_positions_only_grow_across_any_history(ops: list[tuple[str, str, str, int]],
                                                           mode: str) -> None:
    state, store = RegistryState(mode), FakeStore()  # type: ignore[arg-type]
    last_epoch: dict[str, int] = {}
    last_seq = 0
    for i, (kind, key, holder, number) in enumerate(ops):
        if kind == "reload":
            state = store.reload(mode)
            assert state.counter >= last_seq
            continue
        planned: Change | Rejection
        if kind == "reg":
            planned = reg(state, key, holder, op=str(i))
        elif kind == "unreg":
            planned = state.plan_unregister(key, holder if number % 2 else None)
        elif kind == "cas" and mode == "unique":
            planned = state.plan_compare_and_set(key, number, {"meta": {"i": i}}, None, None,
                                                 str(i), 1.0)
        elif kind == "meta" and state.registrations(key):
            planned = state.plan_update_meta(key, {"i": i}, None, str(i))
        else:
            planned = state.plan_holder_gone(holder, "holder died")
        before = state.counter
        apply(state, store, planned)
        if isinstance(planned, Change) and not planned.empty:
            seqs = [e.seq for e in planned.events]
            assert seqs == list(range(before + 1, before + 1 + len(seqs)))
            assert seqs[0] > last_seq
            last_seq = seqs[-1]
            for event in planned.events:
                if isinstance(event, (Registered, Updated)):
                    assert event.registration.epoch == event.seq
                    assert event.registration.epoch > last_epoch.get(event.key, 0)
                    last_epoch[event.key] = event.registration.epoch
        if mode == "unique":
            assert all(len(state.registrations(k)) <= 1 for k in ("k1", "k2", "k3"))
    reloaded = store.reload(mode)
    assert reloaded.counter >= last_seq
    assert (sorted(r.entry_id for r in reloaded.select())
            == sorted(r.entry_id for r in state.select()))
