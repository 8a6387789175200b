"""The event store contract, on both backends (``store_url`` is parametrized)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from herd.eventsourcing.errors import Fenced, StoreError, WrongExpectedVersion
from herd.eventsourcing.store.base import EventStore, ProjectionTx
from herd.eventsourcing.store.open import make_store, open_store
from herd.eventsourcing.store.postgres import PostgresStore
from herd.eventsourcing.store.records import (
    NO_STREAM,
    AppendRequest,
    AppendResult,
    NewEvent,
    Parked,
    Snapshot,
)

T = TypeVar("T")


def run(coroutine: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
    """Run one test's coroutine with a deadline."""
    return asyncio.run(asyncio.wait_for(coroutine, timeout))


def events(*values: int, kind: str = "Added") -> list[NewEvent]:
    return [NewEvent(kind, json.dumps({"n": v}), metadata=json.dumps({"correlation_id": "c"}))
            for v in values]


def numbers(recorded: list) -> list[int]:
    return [json.loads(e.data)["n"] for e in recorded]


async def opened(url: str) -> EventStore:
    return await open_store(url)


def test_append_and_read_forward_backward(store_url: str) -> None:
    async def body() -> None:
        store = await opened(store_url)
        first = await store.append("acc-1", events(1, 2), NO_STREAM)
        assert (first.first_version, first.last_version) == (1, 2)
        await store.append("acc-2", events(10), NO_STREAM)
        third = await store.append("acc-1", events(3), expected_version=2)
        assert third.first_position == 4 and third.last_version == 3
        forward = await store.read_stream("acc-1")
        assert [e.version for e in forward] == [1, 2, 3] and numbers(forward) == [1, 2, 3]
        assert numbers(await store.read_stream("acc-1", from_version=2)) == [2, 3]
        assert numbers(await store.read_stream("acc-1", backward=True)) == [3, 2, 1]
        assert numbers(await store.read_stream("acc-1", from_version=2, backward=True)) == [2, 1]
        assert numbers(await store.read_stream("acc-1", limit=1)) == [1]
        assert forward[0].meta() == {"correlation_id": "c"} and forward[0].recorded_at > 0
        assert (await store.stream_state("acc-1")).version == 3
        assert [s.stream for s in await store.streams()] == ["acc-1", "acc-2"]
        assert await store.head() == 4
        await store.close()
    run(body())


def test_wrong_expected_version_writes_nothing(store_url: str) -> None:
    async def body() -> None:
        store = await opened(store_url)
        await store.append("s", events(1), NO_STREAM)
        for expected in (NO_STREAM, 2, 5):
            with pytest.raises(WrongExpectedVersion) as info:
                await store.append("s", events(99, 100), expected)
            assert info.value.actual == 1 and info.value.expected == expected
        assert numbers(await store.read_all()) == [1]
        assert (await store.append("s", events(2))).last_version == 2  # ANY
        await store.close()
    run(body())


def test_batch_is_one_transaction_with_an_outcome_per_request(store_url: str) -> None:
    async def body() -> None:
        store = await opened(store_url)
        outcomes = await store.append_batch([
            AppendRequest("a", tuple(events(1)), NO_STREAM),
            AppendRequest("a", tuple(events(2)), 1),        # sees the request before it
            AppendRequest("a", tuple(events(3)), 1),        # conflicts: nothing written
            AppendRequest("b", tuple(events(4, 5)), NO_STREAM),
        ])
        assert [type(o) for o in outcomes] == [AppendResult, AppendResult,
                                               WrongExpectedVersion, AppendResult]
        assert [e.position for e in await store.read_all()] == [1, 2, 3, 4]
        assert numbers(await store.read_all()) == [1, 2, 4, 5]
        await store.close()
    run(body())


def test_concurrent_appends_share_commits(store_url: str) -> None:
    async def body() -> None:
        store = await opened(store_url)
        results = await asyncio.gather(*(store.append(f"s-{i}", events(i), NO_STREAM)
                                         for i in range(300)))
        assert sorted(r.last_position for r in results) == list(range(1, 301))
        assert store._group.batches < 300  # grouped, not one transaction per append
        await store.close()
    run(body())


def test_fencing_refuses_a_replaced_writer(store_url: str) -> None:
    async def body() -> None:
        store = await opened(store_url)
        await store.append("agg", events(1), NO_STREAM, fence=3)
        await store.claim("agg", 5)                       # the replacement claims the stream
        with pytest.raises(Fenced) as info:               # the old writer, version matching
            await store.append("agg", events(2), 1, fence=3)
        assert (info.value.epoch, info.value.current) == (3, 5)
        with pytest.raises(Fenced):
            await store.claim("agg", 4)
        assert (await store.append("agg", events(2), 1, fence=5)).last_version == 2
        assert (await store.stream_state("agg")).fence == 5
        assert numbers(await store.read_all()) == [1, 2]
        await store.close()
    run(body())


def test_readers_never_skip_a_late_commit(store_url: str) -> None:
    """Four writers (own connections) append concurrently while a reader follows ``read_all``:
    every batch the reader gets continues exactly where the last one ended."""
    async def body() -> None:
        writers = [await opened(store_url) for _ in range(4)]
        reader = await opened(store_url)
        total = 4 * 60

        async def write(store: EventStore, w: int) -> None:
            for i in range(60):
                await store.append(f"w{w}-{i % 5}", events(w * 1000 + i))

        tasks = [asyncio.ensure_future(write(s, w)) for w, s in enumerate(writers)]
        seen: list[int] = []
        position = 0
        while len(seen) < total:
            batch = await reader.read_all(position, 17)
            for event in batch:
                assert event.position == position + 1, (event.position, position)
                position = event.position
                seen.append(event.position)
            if not batch:
                await asyncio.sleep(0.001)
        await asyncio.gather(*tasks)
        assert seen == list(range(1, total + 1))
        for store in (*writers, reader):
            await store.close()
    run(body())


def test_subscribe_catches_up_then_follows_live(store_url: str) -> None:
    async def body() -> None:
        store = await opened(store_url)
        await store.append("s", events(1, 2, 3))
        got: list[int] = []
        subscription = store.subscribe(after_position=1, batch_size=2)
        async for batch in subscription:
            got.extend(numbers(batch))
            if got == [2, 3]:
                await store.append("s", events(4))       # live from here
            if len(got) == 3:
                last = batch[-1].position
                break
        await subscription.aclose()
        assert got == [2, 3, 4]
        resumed = store.subscribe(after_position=last)
        await store.append("t", events(5))
        batch = await resumed.__anext__()
        await resumed.aclose()
        assert numbers(batch) == [5]
        await store.close()
    run(body())


def test_snapshots_keep_the_latest(store_url: str) -> None:
    async def body() -> None:
        store = await opened(store_url)
        assert await store.load_snapshot("s") is None
        await store.save_snapshot(Snapshot("s", 10, '{"balance": 10}', 1.0))
        await store.save_snapshot(Snapshot("s", 5, '{"balance": 5}', 2.0))  # older: ignored
        snapshot = await store.load_snapshot("s")
        assert snapshot is not None and (snapshot.version, snapshot.state) == (10,
                                                                               '{"balance": 10}')
        await store.close()
    run(body())


def test_projection_writes_and_checkpoint_commit_together(store_url: str) -> None:
    async def body() -> None:
        store = await opened(store_url)

        def create(tx: ProjectionTx) -> None:
            tx.execute("CREATE TABLE IF NOT EXISTS totals (k TEXT PRIMARY KEY, n BIGINT)")
            tx.execute("INSERT INTO totals (k, n) VALUES (?, ?)", ("a", 1))

        await store.project("totals", 7, '{"s": 1}', create)
        assert await store.checkpoint("totals") == (7, '{"s": 1}')

        def failing(tx: ProjectionTx) -> None:
            tx.execute("UPDATE totals SET n = n + 1 WHERE k = ?", ("a",))
            raise RuntimeError("crash mid-batch")

        with pytest.raises(RuntimeError):
            await store.project("totals", 9, None, failing)
        assert await store.checkpoint("totals") == (7, '{"s": 1}')

        def read(tx: ProjectionTx) -> None:
            assert tx.execute("SELECT n FROM totals WHERE k = ?", ("a",)) == [(1,)]

        await store.project("totals", 7, None, read)
        assert await store.checkpoints() == {"totals": 7}
        await store.close()
    run(body())


def test_parked_handlers_are_listed_until_unparked(store_url: str) -> None:
    async def body() -> None:
        store = await opened(store_url)
        await store.park(Parked("h", 42, "ValueError: bad", 5, 3.0))
        assert await store.parked() == [Parked("h", 42, "ValueError: bad", 5, 3.0)]
        await store.unpark("h")
        assert await store.parked() == []
        await store.close()
    run(body())


def test_bad_urls_are_refused() -> None:
    with pytest.raises(StoreError, match="unknown store URL"):
        make_store("mysql://x")
    with pytest.raises(StoreError, match="in-memory"):
        run(open_store("sqlite://"))
    with pytest.raises(StoreError, match="cannot connect"):
        run(PostgresStore("postgresql://postgres@127.0.0.1:1/none", open_timeout_s=0.5).open())
