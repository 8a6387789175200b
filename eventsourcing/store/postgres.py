"""The event store on PostgreSQL (psycopg 3, asyncio, a connection pool).

Positions are gap-free for readers: every append transaction takes one transaction-scoped
advisory lock before it reads the head and numbers its events, and holds it until its commit,
so transactions that append commit in position order and a reader that has seen position ``p``
has seen every position below it (the approach of the ``eventsourcing`` package's PostgreSQL
recorder, which locks its table for the same reason). Group commit keeps the lock's cost per
event small: one lock per batch, not per command.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from herd.eventsourcing.errors import StoreError
from herd.eventsourcing.store.base import EventStore
from herd.eventsourcing.store.planner import Outcome
from herd.eventsourcing.store.records import AppendRequest
from herd.eventsourcing.store.sql import EVENT_COLUMNS, SCHEMA

__all__ = ["PostgresStore"]

#: The advisory lock key of appends (any constant; "herd" in ASCII).
APPEND_LOCK = 0x68657264
OPEN_TIMEOUT_S = 15.0
#: The batch's streams and the head in one round trip (a row of NULLs when no stream exists).
STATE_SQL = ("SELECT s.stream, s.version, s.fence, h.head FROM "
             "(SELECT COALESCE(MAX(position), 0) AS head FROM es_events) h "
             "LEFT JOIN es_streams s ON s.stream = ANY(%s)")
#: Every row of a batch in one statement (columns as arrays), not one statement per row.
INSERT_SQL = (f"INSERT INTO es_events ({EVENT_COLUMNS}) SELECT * FROM unnest("
              "%s::bigint[], %s::text[], %s::bigint[], %s::text[], %s::int[], %s::text[], "
              "%s::text[], %s::float8[])")
UPSERT_SQL = ("INSERT INTO es_streams (stream, version, fence, updated_at) SELECT * FROM "
              "unnest(%s::text[], %s::bigint[], %s::bigint[], %s::float8[]) "
              "ON CONFLICT (stream) DO UPDATE SET version = excluded.version, "
              "fence = excluded.fence, updated_at = excluded.updated_at")


class PostgresStore(EventStore):
    """``postgresql://user@host:port/dbname`` (a libpq URL)."""

    def __init__(self, url: str, max_batch: int = 1024, pool_size: int = 8,
                 open_timeout_s: float = OPEN_TIMEOUT_S) -> None:
        super().__init__(url, max_batch=max_batch)
        self.pool_size = pool_size
        self.open_timeout_s = open_timeout_s
        self._pool: AsyncConnectionPool | None = None
        self._projector: ThreadPoolExecutor | None = None
        self._projection_connection: psycopg.Connection[Any] | None = None

    async def open(self) -> None:
        pool = AsyncConnectionPool(self.url, min_size=1, max_size=self.pool_size, open=False,
                                   kwargs={"autocommit": True})
        try:
            await pool.open(wait=True, timeout=self.open_timeout_s)
        except Exception as exc:
            await pool.close()
            raise StoreError(f"cannot connect to PostgreSQL at {_safe(self.url)}: {exc}") from None
        self._pool = pool
        async with self._connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (APPEND_LOCK,))
            for statement in SCHEMA:
                await conn.execute(statement.format(position="BIGINT"))

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        if self._projector is not None:
            connection = self._projection_connection
            if connection is not None:
                await asyncio.get_running_loop().run_in_executor(self._projector,
                                                                 connection.close)
            self._projector.shutdown(wait=True)
            self._projector = None
            self._projection_connection = None

    def _connection(self) -> Any:
        if self._pool is None:
            raise StoreError(f"the store {_safe(self.url)} is not open")
        return self._pool.connection()

    @staticmethod
    def _convert_sql(sql: str) -> str:
        return sql.replace("?", "%s")

    async def _query(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        try:
            async with self._connection() as conn:
                cursor = await conn.execute(self._convert_sql(sql), tuple(params))
                return list(await cursor.fetchall())
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL store: {exc}") from exc

    async def _write(self, sql: str, params: Sequence[Any]) -> None:
        try:
            async with self._connection() as conn:
                await conn.execute(self._convert_sql(sql), tuple(params))
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL store: {exc}") from exc

    async def append_batch(self, requests: Sequence[AppendRequest]) -> list[Outcome]:
        names = sorted({r.stream for r in requests})
        try:
            async with self._connection() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (APPEND_LOCK,))
                # after the lock, in a statement of its own: its snapshot sees every commit
                # that released the lock before us
                found = await (await conn.execute(STATE_SQL, (names,))).fetchall()
                head = int(found[0][3]) if found else 0
                rows, updates, outcomes = self._plan(
                    requests, [r[:3] for r in found if r[0] is not None], head)
                if rows:
                    await conn.execute(INSERT_SQL, [list(column) for column in zip(*rows,
                                                                                 strict=True)])
                if updates:
                    await conn.execute(UPSERT_SQL, [list(column) for column in zip(*updates,
                                                                                  strict=True)])
            return outcomes
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL store: {exc}") from exc

    async def _run_projection(self, work: Callable[[Any], None]) -> None:
        if self._projector is None:
            self._projector = ThreadPoolExecutor(1, thread_name_prefix="herd-pg-project")

        def run() -> None:
            if self._projection_connection is None or self._projection_connection.closed:
                self._projection_connection = psycopg.connect(self.url, autocommit=True)
            connection = self._projection_connection
            with connection.transaction(), connection.cursor() as cursor:
                work(cursor)

        try:
            await asyncio.get_running_loop().run_in_executor(self._projector, run)
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL store: {exc}") from exc


def _safe(url: str) -> str:
    """``url`` without its password."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    return f"{scheme}://{credentials.split(':', 1)[0]}@{host}"
