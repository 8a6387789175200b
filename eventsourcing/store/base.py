"""The event store's one interface; the backends (``sqlite``, ``postgres``) fill in how SQL
runs. Every method is a coroutine.

* ``append`` goes through group commit (``batching``): concurrent appends share a transaction;
  ``append_batch`` commits a list of requests in one transaction directly.
* positions are assigned under the store's write lock, in commit order, so ``read_all`` and
  ``subscribe`` never skip an event that commits late: there is no "late" commit.
* ``project`` applies a projection's batch of events and its checkpoint in one transaction of
  the same database (an exactly-once effect for read models kept in the store's database).
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from herd.eventsourcing.store.batching import GroupCommit
from herd.eventsourcing.store.planner import Outcome, Row, plan_batch
from herd.eventsourcing.store.records import (
    ANY,
    AppendRequest,
    AppendResult,
    NewEvent,
    Parked,
    RecordedEvent,
    Snapshot,
    StreamInfo,
    StreamState,
)
from herd.eventsourcing.store.sql import STATEMENTS, placeholders

__all__ = ["EventStore", "ProjectionTx", "StreamRows"]

StreamRows = dict[str, StreamState]
DEFAULT_READ_LIMIT = 1000
MAX_POLL_S = 0.1
NO_LIMIT = 2**62


class ProjectionTx:
    """What a projection's ``project(event, tx)`` writes with: ``tx.execute(sql, params)`` in
    the store's database, inside the transaction that also moves the projection's checkpoint.
    SQL uses ``?`` placeholders on every backend; it returns the rows of a query."""

    def __init__(self, cursor: Any, convert: Callable[[str], str]) -> None:
        self._cursor = cursor
        self._convert = convert

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        self._cursor.execute(self._convert(sql), tuple(params))
        if self._cursor.description is None:
            return []
        return [tuple(row) for row in self._cursor.fetchall()]


class EventStore(ABC):
    """An event store at ``url``. Open it with ``await store.open()`` (creates the schema)."""

    url: str

    def __init__(self, url: str, max_batch: int = 1024) -> None:
        self.url = url
        self._group = GroupCommit(self.append_batch, max_batch=max_batch)

    # --------------------------------------------------------------- backend hooks
    @abstractmethod
    async def open(self) -> None:
        """Connect and create the tables if needed."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections and threads."""

    @abstractmethod
    async def _query(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Rows of one statement (``?`` placeholders), outside any write transaction."""

    @abstractmethod
    async def _write(self, sql: str, params: Sequence[Any]) -> None:
        """One statement in its own durable transaction."""

    @abstractmethod
    async def append_batch(self, requests: Sequence[AppendRequest]) -> list[Outcome]:
        """Decide and write ``requests`` in one transaction under the store's write lock (see
        ``planner``): one outcome per request, a refusal as the error object."""

    @abstractmethod
    async def _run_projection(self, work: Callable[[Any], None]) -> None:
        """Run ``work(cursor)`` in one transaction on a connection of the store's database."""

    # --------------------------------------------------------------- shared by backends
    @staticmethod
    def _plan(requests: Sequence[AppendRequest], found: Sequence[tuple[Any, ...]], head: int
              ) -> tuple[list[Row], list[tuple[str, int, int, float]], list[Outcome]]:
        streams = {str(name): StreamState(int(version), int(fence))
                   for name, version, fence in found}
        now = time.time()
        plan = plan_batch(requests, streams, head, now)
        updates = [(name, state.version, state.fence, now) for name, state in plan.streams.items()]
        return plan.rows, updates, plan.outcomes

    @staticmethod
    def _streams_query(requests: Sequence[AppendRequest]) -> tuple[str, list[str]]:
        names = sorted({r.stream for r in requests})
        sql = ("SELECT stream, version, fence FROM es_streams "
               f"WHERE stream IN ({placeholders(len(names))})")
        return sql, names

    # --------------------------------------------------------------- appends
    async def append(self, stream: str, events: Sequence[NewEvent],
                     expected_version: int | None = ANY, fence: int | None = None
                     ) -> AppendResult:
        """Append ``events`` to ``stream`` (see ``AppendRequest``); durable when this returns.
        Raises ``WrongExpectedVersion`` or ``Fenced`` (nothing written)."""
        return await self._group.submit(AppendRequest(stream, tuple(events), expected_version,
                                                      fence))

    async def claim(self, stream: str, fence: int) -> AppendResult:
        """Record writer epoch ``fence`` on ``stream``: appends with a lower epoch are refused
        from now on. ``Fenced`` if a higher epoch claimed it already."""
        return await self.append(stream, (), ANY, fence)

    # --------------------------------------------------------------- reads
    async def stream_state(self, stream: str) -> StreamState:
        rows = await self._query(STATEMENTS["stream_state"], (stream,))
        return StreamState(int(rows[0][0]), int(rows[0][1])) if rows else StreamState(0)

    async def read_stream(self, stream: str, from_version: int | None = None,
                          backward: bool = False, limit: int | None = None
                          ) -> list[RecordedEvent]:
        """Events of ``stream`` from ``from_version`` on (default 1), or backward from it down
        to 1 (default: from the last event), at most ``limit``."""
        if backward:
            start, sql = (NO_LIMIT if from_version is None else from_version), "read_backward"
        else:
            start, sql = (1 if from_version is None else from_version), "read_forward"
        rows = await self._query(STATEMENTS[sql], (stream, start,
                                                   NO_LIMIT if limit is None else limit))
        return [_event(row) for row in rows]

    async def read_all(self, after_position: int = 0, limit: int = DEFAULT_READ_LIMIT
                       ) -> list[RecordedEvent]:
        """Events of every stream after ``after_position``, in global order."""
        rows = await self._query(STATEMENTS["read_all"], (after_position, limit))
        return [_event(row) for row in rows]

    async def head(self) -> int:
        """The global position of the last committed event (0: none)."""
        return int((await self._query(STATEMENTS["head"], ()))[0][0])

    async def subscribe(self, after_position: int = 0, batch_size: int = 500,
                        poll_s: float = 0.01) -> AsyncIterator[list[RecordedEvent]]:
        """Batches of events after ``after_position``: the stored ones first (catch-up), then
        new ones as they commit (live, polled with a backoff up to 0.1 s). Resume a
        subscription from the ``position`` of the last event handled."""
        position = after_position
        wait = poll_s
        while True:
            batch = await self.read_all(position, batch_size)
            if batch:
                position = batch[-1].position
                wait = poll_s
                yield batch
                continue
            await asyncio.sleep(wait)
            wait = min(wait * 2, MAX_POLL_S)

    async def streams(self, after: str = "", limit: int = DEFAULT_READ_LIMIT) -> list[StreamInfo]:
        rows = await self._query(STATEMENTS["streams"], (after, limit))
        return [StreamInfo(str(r[0]), int(r[1]), int(r[2]), float(r[3])) for r in rows]

    # --------------------------------------------------------------- snapshots
    async def save_snapshot(self, snapshot: Snapshot) -> None:
        """Keep ``snapshot`` unless a snapshot of a later version is stored already."""
        await self._write(STATEMENTS["save_snapshot"], (snapshot.stream, snapshot.version,
                                                        snapshot.state, snapshot.taken_at))

    async def load_snapshot(self, stream: str) -> Snapshot | None:
        rows = await self._query(STATEMENTS["load_snapshot"], (stream,))
        if not rows:
            return None
        name, version, state, taken_at = rows[0]
        return Snapshot(str(name), int(version), str(state), float(taken_at))

    # --------------------------------------------------------------- checkpoints, parking
    async def checkpoint(self, name: str) -> tuple[int, str | None]:
        """The position handler ``name`` has handled up to (0: none) and its saved state."""
        rows = await self._query(STATEMENTS["checkpoint"], (name,))
        return (int(rows[0][0]), rows[0][1]) if rows else (0, None)

    async def checkpoints(self) -> dict[str, int]:
        return {str(n): int(p) for n, p in await self._query(STATEMENTS["checkpoints"], ())}

    async def save_checkpoint(self, name: str, position: int, state: str | None = None) -> None:
        await self._write(STATEMENTS["save_checkpoint"], (name, position, state, time.time()))

    async def project(self, name: str, position: int, state: str | None,
                      apply: Callable[[ProjectionTx], None]) -> None:
        """One transaction: ``apply(tx)`` (a projection's writes for a batch of events) and the
        checkpoint of ``name`` moved to ``position``. Either both are durable or neither."""
        convert = self._convert_sql

        def work(cursor: Any) -> None:
            apply(ProjectionTx(cursor, convert))
            cursor.execute(convert(STATEMENTS["save_checkpoint"]),
                           (name, position, state, time.time()))

        await self._run_projection(work)

    @staticmethod
    def _convert_sql(sql: str) -> str:
        return sql

    async def park(self, parked: Parked) -> None:
        await self._write(STATEMENTS["park"], (parked.handler, parked.position, parked.error,
                                               parked.attempts, parked.parked_at))

    async def parked(self) -> list[Parked]:
        rows = await self._query(STATEMENTS["parked"], ())
        return [Parked(str(r[0]), int(r[1]), str(r[2]), int(r[3]), float(r[4])) for r in rows]

    async def unpark(self, name: str) -> None:
        await self._write(STATEMENTS["unpark"], (name,))


def _event(row: Sequence[Any]) -> RecordedEvent:
    position, stream, version, event_type, schema_version, data, metadata, recorded_at = row
    return RecordedEvent(int(position), str(stream), int(version), str(event_type),
                         int(schema_version), str(data), str(metadata), float(recorded_at))
