"""A process's connection to one registry: its shard actors' handles, its lookup cache and the
cache's event streams. Shared by both faces of the client (``Registry``, ``AsyncRegistry``):
one connection per registry per process and Ray session.
"""

from __future__ import annotations

import threading
from typing import Any

import ray
from ray.actor import ActorHandle

from herd.platform import kv
from herd.platform.control_plane import require_ray
from herd.platform.logging import get_logger
from herd.registry import models
from herd.registry import operations as ops
from herd.registry.actor import start_actor
from herd.registry.cache import LookupCache
from herd.registry.errors import UnknownRegistry
from herd.registry.layout import config_key
from herd.registry.models import RegistryOptions
from herd.registry.records import KeyMode
from herd.registry.sync import CacheSync

log = get_logger("herd.registry")

_connections: dict[tuple[str | None, str], Connection] = {}
_connections_lock = threading.Lock()


def session() -> str | None:
    """The Ray session and job this process is connected as (None when not connected). The job
    counts: a driver that reconnects (after a head restart, which keeps the session name) has a
    new job, and its handles of the old one are useless."""
    if not ray.is_initialized():
        return None
    worker = ray._private.worker.global_worker
    if worker.node is None:
        return None
    return f"{worker.node.session_name}/{worker.current_job_id.hex()}"


class Connection:
    """Handles of the registry's shard actors, the process's lookup cache of it, and the
    cache-sync streams (started on the first cached lookup)."""

    def __init__(self, name: str, keys: KeyMode, shards: int, session_name: str | None) -> None:
        self.name = name
        self.keys: KeyMode = keys
        self.shards = shards
        self.session = session_name
        self.cache = LookupCache(keys, shards)
        self.faces: dict[str, Any] = {}  # the client objects of this connection, by face
        self._actors: list[Any] = [None] * shards
        self._actors_lock = threading.Lock()
        self._sync: CacheSync | None = None
        self._sync_lock = threading.Lock()

    def known_actor(self, shard: int) -> Any | None:
        """The shard's handle if this process already has it (no remote call)."""
        return self._actors[shard]

    def actor(self, shard: int, refresh: bool = False) -> Any:
        """The shard's handle; gets or (re)creates the actor when unknown or ``refresh``
        (blocking: a named-actor lookup in the GCS)."""
        handle = self._actors[shard]
        if handle is None or refresh:
            with self._actors_lock:
                if self._actors[shard] is handle:
                    self._actors[shard] = start_actor(self.name, shard, self.shards, self.keys)
                handle = self._actors[shard]
        return handle

    def replace(self, shard: int, stale: Any) -> Any:
        """A new handle of the shard's actor after ``stale`` was found dead (once, however many
        callers saw it die; blocking like ``actor``)."""
        with self._actors_lock:
            if self._actors[shard] is stale:
                self._actors[shard] = start_actor(self.name, shard, self.shards, self.keys)
            return self._actors[shard]

    @property
    def syncing(self) -> bool:
        return self._sync is not None

    def ensure_sync(self) -> None:
        """Start keeping the cache fresh (blocking: learns each shard's event position)."""
        if self._sync is None:
            with self._sync_lock:
                if self._sync is None:
                    self._sync = CacheSync(self.name, self.shards, self.cache, self.actor,
                                           self.connected)

    def connected(self) -> bool:
        return session() == self.session

    def invalidate(self, key: str, handle: ActorHandle) -> None:
        """Forget the cached records of ``key`` if they name ``handle`` (seen dead)."""
        self.cache.invalidate(key, models.actor_id(handle))


def connection(name: str, keys: KeyMode, shards: int) -> Connection:
    """This process's connection to registry ``name`` (created on first use)."""
    current = session()
    if current is None:
        require_ray()
    with _connections_lock:
        for stale in [k for k in _connections if k[0] != current]:
            del _connections[stale]
        found = _connections.get((current, name))
        if found is None:
            found = _connections[(current, name)] = Connection(name, keys, shards, current)
        return found


def known(name: Any) -> Connection | None:
    """The connection to ``name`` if this process has one (no remote call)."""
    return _connections.get((session(), name)) if isinstance(name, str) else None


def configure(opts: RegistryOptions) -> Connection:
    """Store the registry's config unless it exists (``KeyModeError`` if it exists with other
    options) and connect to it."""
    require_ray()
    key = config_key(opts.name)
    if not kv.put(key, ops.config_bytes(opts.keys, opts.shards), overwrite=False):
        ops.check_config(opts.name, opts.keys, opts.shards, ops.parse_config(kv.get(key)))
    return connection(opts.name, opts.keys, opts.shards)


async def aconfigure(opts: RegistryOptions) -> Connection:
    """``configure`` without blocking the event loop."""
    require_ray()
    key = config_key(opts.name)
    if not await kv.aput(key, ops.config_bytes(opts.keys, opts.shards), overwrite=False):
        ops.check_config(opts.name, opts.keys, opts.shards, ops.parse_config(await kv.aget(key)))
    return connection(opts.name, opts.keys, opts.shards)


def named(name: Any) -> Connection:
    """The connection to the existing registry ``name``; ``UnknownRegistry`` if it was never
    started."""
    found = known(name)
    if found is not None:
        return found
    name = models.check_name(name)
    require_ray()
    return _connect_to(name, ops.parse_config(kv.get(config_key(name))))


async def anamed(name: Any) -> Connection:
    """``named`` without blocking the event loop."""
    found = known(name)
    if found is not None:
        return found
    name = models.check_name(name)
    require_ray()
    return _connect_to(name, ops.parse_config(await kv.aget(config_key(name))))


def _connect_to(name: str, config: dict[str, Any] | None) -> Connection:
    if config is None:
        raise UnknownRegistry(f"no registry named {name!r}: start it with Registry.start()")
    return connection(name, config["keys"], config["shards"])
