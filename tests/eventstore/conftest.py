"""Fixtures of the event store suite: every test that takes ``store_url`` (or ``store``) runs
once per backend, SQLite (a file in a temp dir) and PostgreSQL (one real server started for the
session by ``tests/pg_server.py``, a fresh database per test)."""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pg_server import PostgresServer  # noqa: E402

_databases = itertools.count(1)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


def fresh_database(server: PostgresServer) -> str:
    name = f"t{next(_databases)}"
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return server.url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'events.db'}"
    return fresh_database(request.getfixturevalue("pg_server"))

