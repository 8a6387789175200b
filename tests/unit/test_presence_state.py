"""The presence tracker state (pure delta CRDT): diffs, deltas vs full parts, restarts, dead
replicas, and convergence under any delivery order."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from herd.replication.presence_state import NotTracked, PresenceState


def exchange(a: PresenceState, b: PresenceState, acked: dict[tuple[str, str], object]) -> None:
    """One heartbeat from ``a`` to ``b``, acknowledged."""
    payload = a.payload_for(acked.get((a.replica, b.replica)))  # type: ignore[arg-type]
    acked[(a.replica, b.replica)] = b.apply(payload)


def settle(states: list[PresenceState], acked: dict[tuple[str, str], object]) -> None:
    for _ in range(2):
        for a in states:
            for b in states:
                if a is not b:
                    exchange(a, b, acked)


def test_track_update_untrack_report_joins_and_leaves() -> None:
    state = PresenceState("n1", 1)
    state.track("p1", "room", "alice", {"status": "away"})
    assert state.take_diff().topics == {"room": {"joins": {"alice": [{"status": "away"}]},
                                                 "leaves": {}}}
    state.update("p1", "room", "alice", {"status": "here"})
    assert state.take_diff().topics["room"] == {"joins": {"alice": [{"status": "here"}]},
                                                "leaves": {"alice": [{"status": "away"}]}}
    state.track("p2", "room", "alice", {"status": "phone"})
    assert state.list("room") == {"alice": [{"status": "here"}, {"status": "phone"}]}
    state.take_diff()
    assert state.untrack("p1") == 1
    assert state.take_diff().topics["room"]["leaves"] == {"alice": [{"status": "here"}]}
    assert state.list("room") == {"alice": [{"status": "phone"}]}
    with pytest.raises(NotTracked):
        state.update("p1", "room", "alice", {})


def test_deltas_after_the_acknowledged_clock_and_full_part_otherwise() -> None:
    a, b = PresenceState("a", 1, log_size=3), PresenceState("b", 1)
    a.track("p1", "t", "k1", 1)
    first = a.payload_for(None)
    assert "full" in first
    clock = b.apply(first)
    assert clock == (1, 1) and a.payload_for(clock) == {"replica": "a", "clock": (1, 1)}
    a.track("p2", "t", "k2", 2)
    delta = a.payload_for(clock)
    assert delta["after"] == 1 and len(delta["ops"]) == 1 and "full" not in delta
    for n in range(5):  # past the log: the next payload is the whole part
        a.track(f"q{n}", "t", "k", n)
    assert "full" in a.payload_for(clock)


def test_out_of_order_delta_is_not_applied() -> None:
    a, b = PresenceState("a", 1), PresenceState("b", 1)
    clock = b.apply(a.payload_for(None))
    a.track("p1", "t", "k", 1)
    a.track("p2", "t", "k", 2)
    skipped = a.payload_for((1, 1))  # b never acknowledged version 1
    now = b.apply(skipped)
    assert now == clock and b.list("t") == {}


def test_restarted_replica_drops_its_stale_entries() -> None:
    old, peer = PresenceState("a", 1), PresenceState("b", 1)
    old.track("p1", "t", "k", "old")
    peer.apply(old.payload_for(None))
    peer.take_diff()
    restarted = PresenceState("a", 2)
    clock = peer.apply(restarted.payload_for(None))
    assert peer.take_diff().topics["t"]["leaves"] == {"k": ["old"]} and peer.list("t") == {}
    assert peer.apply(old.payload_for(None)) == (2, 0)  # the old incarnation, late: stale
    assert not peer.take_diff() and peer.list("t") == {} and clock == (2, 0)


def test_dead_replica_leaves_and_stays_out() -> None:
    a, b = PresenceState("a", 1), PresenceState("b", 1)
    a.track("p1", "t", "k", 1)
    b.apply(a.payload_for(None))
    b.take_diff()
    b.drop_replica("a")
    assert b.take_diff().topics["t"]["leaves"] == {"k": [1]}
    assert b.apply(a.payload_for(None)) is None
    assert b.list("t") == {} and not b.take_diff()


ops = st.lists(st.tuples(st.integers(0, 2), st.sampled_from(["track", "untrack", "send"]),
                         st.integers(0, 3), st.integers(0, 2)), max_size=40)


@settings(max_examples=150, deadline=None)
@given(ops)
def test_any_delivery_order_converges(steps: list[tuple[int, str, int, int]]) -> None:
    states = [PresenceState(f"n{i}", 1, log_size=4) for i in range(3)]
    acked: dict[tuple[str, str], object] = {}
    for who, action, pid, other in steps:
        state = states[who]
        if action == "track":
            state.track(f"{state.replica}-p{pid}", "t", f"k{pid % 2}", pid)
        elif action == "untrack":
            state.untrack(f"{state.replica}-p{pid}")
        elif other != who:
            exchange(state, states[other], acked)
    settle(states, acked)
    expected = set().union(*({(ref, repr(meta)) for ref, meta in s.own.entries.items()}
                             for s in states))
    assert all(s.digest() == expected for s in states)


@settings(max_examples=100, deadline=None)
@given(ops)
def test_diffs_replayed_give_the_view(steps: list[tuple[int, str, int, int]]) -> None:
    """A subscriber that applies every diff it gets ends with the tracker's own view."""
    states = [PresenceState(f"n{i}", 1) for i in range(2)]
    seen: dict[str, list[object]] = {}
    acked: dict[tuple[str, str], object] = {}

    def feed(diff: object) -> None:
        for kinds in diff.topics.values():  # type: ignore[attr-defined]
            for key, metas in kinds["leaves"].items():
                for meta in metas:
                    seen[key].remove(meta)
            for key, metas in kinds["joins"].items():
                seen.setdefault(key, []).extend(metas)

    for index, action, pid, _ in steps:
        who = index % 2
        state = states[who]
        if action == "track":
            state.track(f"{state.replica}-p{pid}", "t", f"k{pid % 2}", pid)
        elif action == "untrack":
            state.untrack(f"{state.replica}-p{pid}")
        elif who == 0:
            payload = state.payload_for(acked.get((state.replica, "n1")))  # type: ignore[arg-type]
            acked[(state.replica, "n1")] = states[1].apply(payload)
        if pid % 2:  # diffs taken now and then: a batch is as good as each change
            feed(states[1].take_diff())
    feed(states[1].take_diff())
    assert {k: sorted(v) for k, v in seen.items() if v} == \
        {k: sorted(v) for k, v in states[1].list("t").items()}  # type: ignore[type-var]
