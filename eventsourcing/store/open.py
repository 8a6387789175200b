"""Opening a store from its URL, and one shared store object per URL in a process."""

from __future__ import annotations

import asyncio

from herd.eventsourcing.errors import StoreError
from herd.eventsourcing.store.base import EventStore

__all__ = ["make_store", "open_store", "shared_store"]

_SHARED: dict[tuple[str, int], EventStore] = {}
_OPENING: dict[tuple[str, int], asyncio.Task[EventStore]] = {}


def make_store(url: str) -> EventStore:
    """The store object for ``url`` (not opened): ``sqlite://PATH`` (``sqlite:///tmp/a.db`` is
    ``/tmp/a.db``) or ``postgresql://...``."""
    if not isinstance(url, str):
        raise StoreError(f"a store URL must be a string, not {type(url).__name__}")
    if url.startswith("sqlite://"):
        from herd.eventsourcing.store.sqlite import SQLiteStore
        return SQLiteStore(url, url[len("sqlite://"):] or ":memory:")
    if url.startswith(("postgresql://", "postgres://")):
        from herd.eventsourcing.store.postgres import PostgresStore
        return PostgresStore(url)
    raise StoreError(f"unknown store URL {url!r}: use sqlite://PATH or postgresql://...")


async def open_store(url: str) -> EventStore:
    """A new, open store for ``url`` (close it with ``await store.close()``)."""
    store = make_store(url)
    await store.open()
    return store


async def shared_store(url: str) -> EventStore:
    """The open store of ``url`` shared by everything in this process's running event loop
    (aggregates of one host share its group commit)."""
    key = (url, id(asyncio.get_running_loop()))
    store = _SHARED.get(key)
    if store is not None:
        return store
    task = _OPENING.get(key)
    if task is None:
        task = _OPENING[key] = asyncio.get_running_loop().create_task(open_store(url))
    try:
        store = await asyncio.shield(task)
    finally:
        if task.done():
            _OPENING.pop(key, None)
    _SHARED[key] = store
    return store
