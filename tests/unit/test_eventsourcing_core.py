"""The pure parts of herd.eventsourcing: the append planner, the codec and its upcasters, the
rehydration and idempotency rules, the handler retry policy, group commit (no Ray, no I/O)."""

from __future__ import annotations

import asyncio
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from herd.eventsourcing.codec import Event, EventCodec
from herd.eventsourcing.errors import Fenced, UnknownEventType, WrongExpectedVersion
from herd.eventsourcing.examples.bank import Account, Deposit, Deposited, Open, Opened
from herd.eventsourcing.model import CommandResult
from herd.eventsourcing.policy import HandlerRetry, backoff_s
from herd.eventsourcing.rehydration import AggregateState, IdempotencyWindow, snapshot_due
from herd.eventsourcing.store.batching import GroupCommit
from herd.eventsourcing.store.planner import plan_batch
from herd.eventsourcing.store.records import (
    AppendRequest,
    AppendResult,
    NewEvent,
    RecordedEvent,
    StreamState,
)

E = NewEvent("X", "{}")


def test_planner_numbers_positions_and_versions_in_request_order() -> None:
    plan = plan_batch([AppendRequest("a", (E, E), 0), AppendRequest("b", (E,), None),
                       AppendRequest("a", (E,), 2)], {"b": StreamState(4)}, head=10, now=1.0)
    assert [(r[0], r[1], r[2]) for r in plan.rows] == [(11, "a", 1), (12, "a", 2), (13, "b", 5),
                                                       (14, "a", 3)]
    assert plan.streams == {"a": StreamState(3), "b": StreamState(5)} and plan.head == 14


def test_planner_refusals_write_nothing() -> None:
    plan = plan_batch([AppendRequest("a", (E,), 1), AppendRequest("f", (E,), None, fence=2)],
                      {"a": StreamState(3), "f": StreamState(1, fence=5)}, head=7, now=0.0)
    assert isinstance(plan.outcomes[0], WrongExpectedVersion)
    assert isinstance(plan.outcomes[1], Fenced) and plan.outcomes[1].current == 5
    assert plan.rows == [] and plan.streams == {} and plan.head == 7


def test_a_claim_raises_the_fence_without_events() -> None:
    plan = plan_batch([AppendRequest("a", (), None, fence=9)], {"a": StreamState(2, 3)}, 5, 0.0)
    assert plan.rows == [] and plan.streams == {"a": StreamState(2, 9)}
    result = plan.outcomes[0]
    assert isinstance(result, AppendResult) and result.last_version == 2


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 3),
                          st.one_of(st.none(), st.integers(0, 4))), max_size=20))
def test_planner_keeps_versions_contiguous(requests: list[tuple[str, int, int | None]]) -> None:
    batch = [AppendRequest(s, (E,) * n, expected) for s, n, expected in requests]
    plan = plan_batch(batch, {}, head=0, now=0.0)
    assert [r[0] for r in plan.rows] == list(range(1, len(plan.rows) + 1))
    for stream in "abc":
        versions = [r[2] for r in plan.rows if r[1] == stream]
        assert versions == list(range(1, len(versions) + 1))


class V2(Event):
    event_type = "Renamed"
    schema_version = 3
    first: str
    last: str


def recorded(event_type: str, data: dict, version: int = 1) -> RecordedEvent:
    return RecordedEvent(1, "s", 1, event_type, version, json.dumps(data), "{}", 0.0)


def test_codec_round_trip_and_upcasters() -> None:
    codec = EventCodec([V2])
    codec.upcaster("Renamed", 1)(lambda d: {"full": d["name"]})
    codec.upcaster("Renamed", 2)(lambda d: dict(zip(("first", "last"), d["full"].split(),
                                                    strict=True)))
    new = codec.encode(V2(first="a", last="b"), {"correlation_id": "c"})
    assert (new.type, new.schema_version, json.loads(new.metadata)) == ("Renamed", 3,
                                                                        {"correlation_id": "c"})
    assert codec.decode(recorded("Renamed", {"name": "ada lovelace"})) == V2(first="ada",
                                                                             last="lovelace")
    assert codec.decode(recorded("Renamed", {"first": "x", "last": "y"}, 3)).first == "x"


def test_codec_refuses_what_it_cannot_decode() -> None:
    codec = EventCodec([V2])
    with pytest.raises(UnknownEventType, match="no registered class"):
        codec.decode(recorded("Gone", {}))
    with pytest.raises(UnknownEventType, match="no upcaster from schema version 1"):
        codec.decode(recorded("Renamed", {"name": "x"}))
    with pytest.raises(UnknownEventType, match="newer"):
        codec.decode(recorded("Renamed", {}, 4))
    with pytest.raises(UnknownEventType, match="does not validate"):
        codec.decode(recorded("Renamed", {"first": 1}, 3))
    with pytest.raises(UnknownEventType, match="not registered"):
        codec.encode(Opened(owner="x"))
    with pytest.raises(ValueError, match="registered already"):
        codec.register(type("V2", (Event,), {"__annotations__": {}, "event_type": "Renamed"}))


def test_rehydration_replays_in_order_and_restores_snapshots() -> None:
    state = AggregateState(Account("a"))
    state.replay(1, Opened(owner="ann"), {"idempotency_key": "k1", "command_events": ["Opened"]},
                 1)
    state.replay(2, Deposited(amount=5), {"idempotency_key": "k2",
                                          "command_events": ["Deposited"]}, 2)
    with pytest.raises(ValueError, match="version 4 after version 2"):
        state.replay(4, Deposited(amount=1), {}, 3)
    again = AggregateState(Account("a"))
    again.restore(2, state.snapshot_json())
    assert (again.version, again.aggregate.balance, again.aggregate.owner) == (2, 5, "ann")
    known = again.window.get("k2")
    assert known is not None and known.version == 2 and known.events == ("Deposited",)
    assert Account("a").execute(Open(aggregate_id="a", owner="b")) == [Opened(owner="b")]
    with pytest.raises(ValueError, match="not open"):
        Account("a").execute(Deposit(aggregate_id="a", amount=1))


def test_idempotency_window_is_bounded() -> None:
    window = IdempotencyWindow(capacity=2)
    for k in ("a", "b", "c"):
        window.remember(k, CommandResult(aggregate_id="x", version=1))
    assert window.get("a") is None and window.get("c") is not None and len(window) == 2
    window.remember(None, CommandResult(aggregate_id="x", version=1))
    assert len(window) == 2
    assert snapshot_due(200, 0, 200) and not snapshot_due(199, 0, 200)
    assert not snapshot_due(10**6, 0, 0)


def test_handler_retry_backs_off_then_parks() -> None:
    retry = HandlerRetry(retries=2, base_s=0.1)
    assert retry.failed(7) == 0.1 and retry.failed(7) == 0.2 and retry.failed(7) is None
    assert retry.failed(8) == 0.1  # a new position starts over
    assert backoff_s(30, 0.1, cap_s=2.0) == 2.0


def test_group_commit_batches_concurrent_appends() -> None:
    batches: list[int] = []

    async def commit(requests: list[AppendRequest]) -> list:
        batches.append(len(requests))
        await asyncio.sleep(0.01)
        return [AppendResult(r.stream, 1, 1, 1, 1) if r.stream != "bad"
                else WrongExpectedVersion(r.stream, 0, 1) for r in requests]

    async def body() -> None:
        group = GroupCommit(commit, max_batch=50)
        results = await asyncio.gather(*(group.submit(AppendRequest(f"s{i}", (E,)))
                                         for i in range(120)),
                                       group.submit(AppendRequest("bad", (E,))),
                                       return_exceptions=True)
        assert sum(isinstance(r, AppendResult) for r in results) == 120
        assert isinstance(results[-1], WrongExpectedVersion)

    asyncio.run(body())
    assert batches == [50, 50, 21]
