"""``AsyncRegistry``: the asyncio face of the registry client, for async actors.

    registry = await AsyncRegistry.start("default")      # or Registry.start(...).aio
    claim = await registry.compare_and_set("child-1", 0, meta={"owner": node})
    await registry.unregister("child-1", handle)

The same operations as ``Registry`` -- same names, arguments, results and errors, built by the
same code (``herd.registry.operations``) -- as coroutines. Each awaits the registry actor's
answer with ``asyncio.wait_for`` on the object ref, so the event loop keeps serving while it
waits, any number of operations can be outstanding at once (no thread per call), and Ray's
"blocking ray.get inside async actor" never applies. The only blocking Ray calls left (getting or
creating a shard's named actor the first time, or after it died; learning the event positions
when the lookup cache starts) run on herd's bounded thread pool (``herd.platform.rpc.blocking``).

Cached lookups share the process's cache with the blocking face. A cache miss is answered by
the registry, batched with the other misses of the moment (``herd.registry.lookups``); the
first one starts the cache's event streams in the background (later lookups of the key are then
dict reads), without the caller waiting for them.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Iterable
from typing import Any

import ray
from ray.actor import ActorHandle
from ray.exceptions import ActorDiedError, RayActorError

from herd.platform import rpc
from herd.platform.errors import HerdTimeoutError
from herd.registry import batches, models
from herd.registry import operations as ops
from herd.registry.connection import Connection, aconfigure, anamed, named
from herd.registry.lookups import LookupBatcher
from herd.registry.records import AbsentOr, KeyMode, MetaMatch, Registration, Written

log = ops.log


class AsyncRegistry:
    """The asyncio client of a registry; see ``Registry`` for what each operation does."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self.name = conn.name
        self.keys: KeyMode = conn.keys
        self.shards = conn.shards
        self._sync_task: asyncio.Task[None] | None = None
        self._batchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LookupBatcher] = \
            weakref.WeakKeyDictionary()

    @classmethod
    def of(cls, conn: Connection) -> AsyncRegistry:
        """The one asyncio face of a connection."""
        face = conn.faces.get("async")
        if face is None:
            face = conn.faces.setdefault("async", cls(conn))
        return face

    # ---------------------------------------------------------------------------- lifecycle
    @classmethod
    async def start(cls, name: str = "default", keys: KeyMode = "unique", shards: int = 1,
                    timeout: float | None = None) -> AsyncRegistry:
        """``Registry.start`` without blocking the event loop."""
        opts = models.options(name=name, keys=keys, shards=shards)
        deadline = ops.deadline_of(timeout)
        registry = cls.of(await aconfigure(opts))
        await registry._run(ops.ping(registry, deadline))
        log.info("registry_ready", registry=opts.name, keys=opts.keys, shards=opts.shards)
        return registry

    @classmethod
    async def get(cls, name: str = "default") -> AsyncRegistry:
        """``Registry.get`` without blocking the event loop."""
        return cls.of(await anamed(name))

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (_async_registry_named, (self.name,))

    def __repr__(self) -> str:
        return f"AsyncRegistry({self.name!r}, keys={self.keys!r}, shards={self.shards})"

    # ------------------------------------------------------------------------------- writes
    async def register(self, key: str, handle: ActorHandle, meta: dict[str, Any] | None = None,
                       *, on_holder_death: str = "remove",
                       timeout: float | None = None) -> Registration:
        return await self._run(ops.register(self, key, handle, meta, on_holder_death, timeout))

    async def unregister(self, key: str, handle: ActorHandle | None = None, *,
                         epoch: int | None = None, timeout: float | None = None) -> int:
        return await self._run(ops.unregister(self, key, handle, epoch, timeout))

    async def remove(self, key: str, *, epoch: int | None = None,
                     timeout: float | None = None) -> int:
        return await self._run(ops.remove(self, key, epoch, timeout))

    async def compare_and_set(self, key: str, expected_epoch: int | MetaMatch | AbsentOr | None,
                              *, timeout: float | None = None, holder_node: str | None = None,
                              **changes: Any) -> Registration:
        return await self._run(ops.compare_and_set(self, key, expected_epoch, changes, timeout,
                                                   holder_node))

    async def update_meta(self, key: str, meta: dict[str, Any],
                          handle: ActorHandle | None = None, *,
                          timeout: float | None = None) -> Registration | list[Registration]:
        return await self._run(ops.update_meta(self, key, meta, handle, timeout))

    # ------------------------------------------------------------------------------ batches
    async def register_many(self, entries: Iterable[tuple[Any, ...]], *,
                            on_holder_death: str = "remove",
                            timeout: float | None = None) -> list[Registration | Exception]:
        return await self._run(batches.register_many(self, entries, on_holder_death, timeout))

    async def compare_and_set_many(self, items: Iterable[tuple[Any, ...]], *,
                                   timeout: float | None = None, full: bool = True
                                   ) -> list[Registration | Written | Exception]:
        return await self._run(batches.compare_and_set_many(self, items, timeout, full))

    async def remove_many(self, items: Iterable[Any], *,
                          timeout: float | None = None) -> list[int | Exception]:
        return await self._run(batches.remove_many(self, items, timeout))

    # ------------------------------------------------------------------------------ queries
    async def lookup(self, key: str, *, fresh: bool = False, timeout: float | None = None) -> Any:
        if not fresh:
            hit = ops.cached(self._conn.cache, key)
            if hit is not ops.MISS:
                return hit
        return ops.lookup_result(self.keys, await self._fetch(key, timeout, cache=not fresh))

    async def entry(self, key: str, *, fresh: bool = False, timeout: float | None = None
                    ) -> Registration | list[Registration] | None:
        if not fresh:
            hit = ops.cached_entry(self._conn.cache, key)
            if hit is not ops.MISS:
                return hit
        return ops.entry_result(self.keys, await self._fetch(key, timeout, cache=not fresh))

    def cached(self, key: str) -> bool:
        return ops.cached(self._conn.cache, key) is not ops.MISS

    async def select(self, prefix: str | None = None, meta: dict[str, Any] | None = None, *,
                     timeout: float | None = None, handles: bool = True) -> list[Registration]:
        return await self._run(ops.select(self, prefix, meta, timeout, handles))

    async def entries(self, keys: Iterable[str], *, timeout: float | None = None
                      ) -> list[list[Registration]]:
        return await self._run(batches.entries(self, keys, timeout))

    async def keys_of(self, handle: ActorHandle, *, timeout: float | None = None) -> list[str]:
        return await self._run(ops.keys_of(self, handle, timeout))

    async def count(self, *, timeout: float | None = None) -> int:
        return await self._run(ops.count(self, timeout))

    async def wait_for(self, key: str, *, exclude: ActorHandle | None = None,
                       timeout: float | None = None) -> Registration:
        waiting = ops.WaitFor(self, key, exclude, timeout)
        while True:
            try:
                found = await self._run(waiting.next_poll())
            except HerdTimeoutError as exc:
                raise waiting.timed_out(exc) from exc
            if found is not None:
                return found

    async def info(self, *, timeout: float | None = None) -> list[dict[str, Any]]:
        return await self._run(ops.info(self, timeout))

    # ----------------------------------------------------------------------- subscriptions
    async def subscribe(self, handle: ActorHandle, method: str, prefix: str = "", *,
                        timeout: float | None = None) -> None:
        await self._run(ops.subscribe(self, handle, method, prefix, timeout))

    async def unsubscribe(self, handle: ActorHandle, method: str | None = None, *,
                          timeout: float | None = None) -> int:
        return await self._run(ops.unsubscribe(self, handle, method, timeout))

    async def dispatch(self, key: str, method: str, *args: Any,
                       **kwargs: Any) -> list[ray.ObjectRef]:
        method = ops.dispatch_method(self, method)
        return ops.dispatch(key, await self.lookup(key), method, args, kwargs)

    # ---------------------------------------------------------------------------- internals
    async def _fetch(self, key: str, timeout: float | None, cache: bool) -> list[Registration]:
        """A fresh read goes alone; a cached lookup's miss goes with the others of this
        moment (``LookupBatcher``) and fills the cache."""
        if not cache:
            return await self._run(ops.fetch(self, key, timeout, None))
        key = models.check_key(key)  # a bad key starts nothing
        self._start_sync()
        loop = asyncio.get_running_loop()
        batcher = self._batchers.get(loop)
        if batcher is None:
            batcher = self._batchers[loop] = LookupBatcher(self)
        return await batcher.fetch(key, timeout)

    async def fetch_many(self, keys: list[str], timeout: float) -> list[list[Registration]]:
        """The records of each key, one call per shard, offered to the lookup cache."""
        return await self._run(batches.entries(self, keys, timeout, self._conn.cache))

    def _start_sync(self) -> None:
        """Start the cache's event streams in the background (once)."""
        if self._conn.syncing or (self._sync_task is not None and not self._sync_task.done()):
            return
        self._sync_task = asyncio.get_running_loop().create_task(self._sync())

    async def _sync(self) -> None:
        try:
            await rpc.blocking(self._conn.ensure_sync)
        except Exception as exc:  # lookups keep working uncached; the next miss tries again
            log.warning("cache_sync_start_failed", registry=self.name, error=repr(exc))

    async def _run(self, operation: ops.Operation) -> Any:
        answers = await asyncio.gather(*(self._call(call, operation.deadline)
                                         for call in operation.calls))
        return operation.combine(list(answers))

    async def _call(self, call: ops.ShardCall, deadline: float) -> Any:
        attempts = ops.Attempts(self.name, call, deadline)
        while True:
            remaining = attempts.remaining()
            handle = self._conn.known_actor(call.shard)
            if handle is None:
                handle = await rpc.blocking(self._conn.actor, call.shard)
            try:
                answer = await rpc.aget(getattr(handle, call.method).remote(*call.args),
                                        timeout=remaining, what=attempts.what)
            except RayActorError as exc:
                await asyncio.sleep(attempts.pause_after(exc))
                if isinstance(exc, ActorDiedError):
                    await rpc.blocking(self._conn.replace, call.shard, handle)
                continue
            return attempts.result(answer)


def _async_registry_named(name: str) -> AsyncRegistry:
    """Unpickling (in another process, outside any coroutine): that process's client."""
    return AsyncRegistry.of(named(name))
