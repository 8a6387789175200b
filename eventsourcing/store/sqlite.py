"""The embedded event store: one SQLite file in WAL mode with ``synchronous=FULL`` (an append is
on disk when acknowledged), no server. SQLite runs one writer at a time per file (``BEGIN
IMMEDIATE`` takes the write lock, other processes wait up to ``busy_timeout``), so positions are
assigned in commit order by construction.

Each store object runs its writes on one thread with its own connection and its reads on
another (WAL readers never block the writer); projections get a third.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from herd.eventsourcing.errors import StoreError
from herd.eventsourcing.store.base import EventStore
from herd.eventsourcing.store.planner import Outcome
from herd.eventsourcing.store.records import AppendRequest
from herd.eventsourcing.store.sql import SCHEMA, STATEMENTS

__all__ = ["SQLiteStore"]

T = TypeVar("T")
BUSY_TIMEOUT_MS = 30_000


class SQLiteStore(EventStore):
    """``sqlite:///path/to/file.db`` (``sqlite:///:memory:`` is refused: the store is shared by
    processes through the file)."""

    def __init__(self, url: str, path: str | Path, max_batch: int = 1024) -> None:
        super().__init__(url, max_batch=max_batch)
        self.path = Path(path)
        self._lanes: dict[str, _Lane] = {}

    async def open(self) -> None:
        if str(self.path) == ":memory:":
            raise StoreError("an in-memory SQLite store cannot be shared; give a file path")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the directory of {self.path}: {exc}") from None
        await self._on("write", _create_schema)

    async def close(self) -> None:
        lanes, self._lanes = self._lanes, {}
        for lane in lanes.values():
            await asyncio.get_running_loop().run_in_executor(lane.executor, lane.close)
            lane.executor.shutdown(wait=True)

    async def _on(self, name: str, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work(connection)`` on the thread of lane ``name`` (write, read, project)."""
        lane = self._lanes.get(name)
        if lane is None:
            lane = self._lanes[name] = _Lane(name, self.path)
        return await asyncio.get_running_loop().run_in_executor(lane.executor, lane.run, work)

    async def _query(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return await self._on("read", lambda c: c.execute(sql, tuple(params)).fetchall())

    async def _write(self, sql: str, params: Sequence[Any]) -> None:
        await self._on("write", lambda c: c.execute(sql, tuple(params)) and None)

    async def append_batch(self, requests: Sequence[AppendRequest]) -> list[Outcome]:
        streams_sql, names = self._streams_query(requests)

        def work(c: sqlite3.Connection) -> list[Outcome]:
            c.execute("BEGIN IMMEDIATE")
            try:
                found = c.execute(streams_sql, names).fetchall()
                head = int(c.execute(STATEMENTS["head"]).fetchone()[0])
                rows, updates, outcomes = self._plan(requests, found, head)
                if rows:
                    c.executemany(STATEMENTS["insert_event"], rows)
                if updates:
                    c.executemany(STATEMENTS["upsert_stream"], updates)
                c.execute("COMMIT")
            except BaseException:
                c.rollback()
                raise
            return outcomes

        return await self._on("write", work)

    async def _run_projection(self, work: Callable[[Any], None]) -> None:
        def run(c: sqlite3.Connection) -> None:
            c.execute("BEGIN IMMEDIATE")
            try:
                work(c.cursor())
                c.execute("COMMIT")
            except BaseException:
                c.rollback()
                raise
        await self._on("project", run)


class _Lane:
    """One thread and the connection only it uses."""

    def __init__(self, name: str, path: Path) -> None:
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=f"herd-sqlite-{name}")
        self.path = path
        self.connection: sqlite3.Connection | None = None

    def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self.connection is None:
            self.connection = _connect(self.path)
        try:
            return work(self.connection)
        except sqlite3.Error as exc:
            if self.connection.in_transaction:
                self.connection.rollback()
            raise StoreError(f"SQLite store {self.path}: {exc}") from exc

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


def _connect(path: Path) -> sqlite3.Connection:
    # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE), nothing implicit
    connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                 check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    return connection


def _create_schema(connection: sqlite3.Connection) -> None:
    connection.execute("BEGIN IMMEDIATE")
    for statement in SCHEMA:
        connection.execute(statement.format(position="INTEGER"))
    connection.execute("COMMIT")
