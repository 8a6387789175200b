"""The tables and statements both SQL backends share (``?`` placeholders; the PostgreSQL
backend turns them into ``%s``)."""

from __future__ import annotations

__all__ = ["EVENT_COLUMNS", "SCHEMA", "STATEMENTS", "placeholders"]

EVENT_COLUMNS = "position, stream, version, type, schema_version, data, metadata, recorded_at"

#: ``{position}``: the column type of the global position (SQLite's rowid alias or BIGINT).
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS es_events (position {position} PRIMARY KEY, "
    "stream TEXT NOT NULL, version BIGINT NOT NULL, type TEXT NOT NULL, "
    "schema_version INTEGER NOT NULL, data TEXT NOT NULL, metadata TEXT NOT NULL, "
    "recorded_at DOUBLE PRECISION NOT NULL, UNIQUE (stream, version))",
    "CREATE TABLE IF NOT EXISTS es_streams (stream TEXT PRIMARY KEY, version BIGINT NOT NULL, "
    "fence BIGINT NOT NULL, updated_at DOUBLE PRECISION NOT NULL)",
    "CREATE TABLE IF NOT EXISTS es_snapshots (stream TEXT PRIMARY KEY, version BIGINT NOT NULL, "
    "state TEXT NOT NULL, taken_at DOUBLE PRECISION NOT NULL)",
    "CREATE TABLE IF NOT EXISTS es_checkpoints (name TEXT PRIMARY KEY, position BIGINT NOT NULL, "
    "state TEXT, updated_at DOUBLE PRECISION NOT NULL)",
    "CREATE TABLE IF NOT EXISTS es_parked (name TEXT PRIMARY KEY, position BIGINT NOT NULL, "
    "error TEXT NOT NULL, attempts INTEGER NOT NULL, parked_at DOUBLE PRECISION NOT NULL)",
)

STATEMENTS = {
    "head": "SELECT COALESCE(MAX(position), 0) FROM es_events",
    "insert_event": f"INSERT INTO es_events ({EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    "upsert_stream": "INSERT INTO es_streams (stream, version, fence, updated_at) "
                     "VALUES (?, ?, ?, ?) ON CONFLICT (stream) DO UPDATE SET "
                     "version = excluded.version, fence = excluded.fence, "
                     "updated_at = excluded.updated_at",
    "stream_state": "SELECT version, fence FROM es_streams WHERE stream = ?",
    "streams": "SELECT stream, version, fence, updated_at FROM es_streams WHERE stream > ? "
               "ORDER BY stream LIMIT ?",
    "read_forward": f"SELECT {EVENT_COLUMNS} FROM es_events WHERE stream = ? AND version >= ? "
                    "ORDER BY version LIMIT ?",
    "read_backward": f"SELECT {EVENT_COLUMNS} FROM es_events WHERE stream = ? AND version <= ? "
                     "ORDER BY version DESC LIMIT ?",
    "read_all": f"SELECT {EVENT_COLUMNS} FROM es_events WHERE position > ? ORDER BY position "
                "LIMIT ?",
    "save_snapshot": "INSERT INTO es_snapshots (stream, version, state, taken_at) "
                     "VALUES (?, ?, ?, ?) ON CONFLICT (stream) DO UPDATE SET "
                     "version = excluded.version, state = excluded.state, "
                     "taken_at = excluded.taken_at WHERE excluded.version >= es_snapshots.version",
    "load_snapshot": "SELECT stream, version, state, taken_at FROM es_snapshots WHERE stream = ?",
    "checkpoint": "SELECT position, state FROM es_checkpoints WHERE name = ?",
    "checkpoints": "SELECT name, position FROM es_checkpoints ORDER BY name",
    "save_checkpoint": "INSERT INTO es_checkpoints (name, position, state, updated_at) "
                       "VALUES (?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
                       "position = excluded.position, state = excluded.state, "
                       "updated_at = excluded.updated_at",
    "park": "INSERT INTO es_parked (name, position, error, attempts, parked_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
            "position = excluded.position, error = excluded.error, "
            "attempts = excluded.attempts, parked_at = excluded.parked_at",
    "parked": "SELECT name, position, error, attempts, parked_at FROM es_parked ORDER BY name",
    "unpark": "DELETE FROM es_parked WHERE name = ?",
}


def placeholders(count: int) -> str:
    """``?, ?, ...`` for an ``IN (...)`` list of ``count`` values."""
    return ", ".join("?" * count)
