"""``Registry``: the blocking client of a registry, used in drivers and threaded actors.

One client per registry per process (``Registry.start`` / ``Registry.get`` return the same
object). Every operation has a timeout (default ``HERD_CALL_TIMEOUT_S``, 30 s) and retries
transparently, within it, while the registry actor is restarting or being re-created;
operations that write carry an operation id, so a retry of a write that was committed before
the actor died returns the committed result instead of applying it twice.

Lookups are served from the process's cache (``herd.registry.cache``) once a key has been
looked up; ``fresh=True`` asks the registry itself (a linearizable read).

Inside an asyncio actor use ``registry.aio`` (``herd.registry.aio``): the same operations as
coroutines that await the registry's answers instead of blocking the event loop.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import ray
from ray.actor import ActorHandle
from ray.exceptions import ActorDiedError, RayActorError

from herd.platform import rpc
from herd.platform.errors import HerdTimeoutError
from herd.registry import batches, models
from herd.registry import operations as ops
from herd.registry.aio import AsyncRegistry
from herd.registry.connection import Connection, configure, named
from herd.registry.records import AbsentOr, KeyMode, MetaMatch, Registration, Written
from herd.registry.watch import Watch

log = ops.log


class Registry:
    """A cluster-wide registry of actor handles by key (see the package docstring)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self.name = conn.name
        self.keys: KeyMode = conn.keys
        self.shards = conn.shards

    # ---------------------------------------------------------------------------- lifecycle
    @classmethod
    def start(cls, name: str = "default", keys: KeyMode = "unique", shards: int = 1,
              timeout: float | None = None) -> Registry:
        """Get or create the registry ``name`` (its actors: detached, restartable, pinned to
        the head node) and wait until it answers. Starting an existing registry is a no-op;
        with another ``keys`` mode or shard count it raises ``KeyModeError``."""
        opts = models.options(name=name, keys=keys, shards=shards)
        deadline = ops.deadline_of(timeout)
        registry = _face(configure(opts))
        registry._run(ops.ping(registry, deadline))
        log.info("registry_ready", registry=opts.name, keys=opts.keys, shards=opts.shards)
        return registry

    @classmethod
    def get(cls, name: str = "default") -> Registry:
        """The registry ``name``; ``UnknownRegistry`` if it was never started."""
        return _face(named(name))

    @property
    def aio(self) -> AsyncRegistry:
        """The asyncio face of this client (same cache, same actors)."""
        return AsyncRegistry.of(self._conn)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        """Sent to another process, a client becomes that process's client of the registry."""
        return (_registry_named, (self.name,))

    def __repr__(self) -> str:
        return f"Registry({self.name!r}, keys={self.keys!r}, shards={self.shards})"

    # ------------------------------------------------------------------------------- writes
    def register(self, key: str, handle: ActorHandle, meta: dict[str, Any] | None = None, *,
                 on_holder_death: str = "remove", timeout: float | None = None) -> Registration:
        """Register ``handle`` under ``key``. Unique registries raise ``AlreadyRegistered``
        naming the current holder; duplicate registries add a member (a holder may join a key
        many times). ``on_holder_death="clear"`` (unique registries) keeps the record, without
        holder, when the holder dies. The record's ``node_id`` is the holder's node: from the
        runtime context when an actor registers itself, else from the GCS actor table (the
        registry waits, within the timeout, for a just-created actor to be placed);
        ``HolderDead`` if the actor is dead."""
        return self._run(ops.register(self, key, handle, meta, on_holder_death, timeout))

    def unregister(self, key: str, handle: ActorHandle | None = None, *,
                   epoch: int | None = None, timeout: float | None = None) -> int:
        """Remove the caller's own registration of ``key``, like Elixir's
        ``Registry.unregister/2``: the records held by ``handle``, by default by the calling
        actor (outside an actor ``handle`` is required). Records of other holders are kept:
        ``remove`` removes a key whoever holds it. With ``epoch`` (unique registries) only if
        the record still has that epoch, else ``EpochConflict``. Returns the number of records
        removed (0: the caller held none; also when a retry across a registry restart finds its
        own earlier removal already done)."""
        return self._run(ops.unregister(self, key, handle, epoch, timeout))

    def remove(self, key: str, *, epoch: int | None = None, timeout: float | None = None) -> int:
        """Administrative: remove the key's records whoever holds them (also records without
        holder, e.g. a supervisor's claim). With ``epoch`` (unique registries) only if the
        record still has that epoch, else ``EpochConflict``. Returns the number removed."""
        return self._run(ops.remove(self, key, epoch, timeout))

    def compare_and_set(self, key: str, expected_epoch: int | MetaMatch | AbsentOr | None, *,
                        timeout: float | None = None, holder_node: str | None = None,
                        **changes: Any) -> Registration:
        """Linearizable compare-and-set on a record's epoch (unique registries).

        ``expected_epoch`` 0 or None: create the record, which must not exist. Otherwise the
        record must exist with exactly that epoch; a :class:`MetaMatch`: the record must exist
        with those meta values, whatever its epoch; an :class:`AbsentOr`: the record is absent
        or has that epoch. ``changes``: ``handle`` (an actor handle,
        or None for a record without holder, e.g. a claim before the actor exists), ``meta``
        (replaces the meta) and ``on_holder_death``; fields not given are kept. Returns the
        new record, whose epoch is higher than any before; ``EpochConflict`` (with the actual
        epoch, None if absent) when the expectation fails -- exactly one of several racing
        callers with the same expectation wins. ``holder_node``: the new holder's node, when
        the caller knows it (e.g. the holder answered it): the registry then takes it as is
        instead of asking the GCS where the holder runs and whether it is alive (it still
        watches the holder and drops the record when it dies)."""
        return self._run(ops.compare_and_set(self, key, expected_epoch, changes, timeout,
                                             holder_node))

    def update_meta(self, key: str, meta: dict[str, Any], handle: ActorHandle | None = None, *,
                    timeout: float | None = None) -> Registration | list[Registration]:
        """Replace the meta of the key's record (unique; ``handle``, if given, must be the
        holder) or of ``handle``'s memberships of the key (duplicate: ``handle`` required).
        ``NotRegistered`` if there is no such record."""
        return self._run(ops.update_meta(self, key, meta, handle, timeout))

    # ------------------------------------------------------------------------------ batches
    def register_many(self, entries: Iterable[tuple[Any, ...]], *, on_holder_death: str = "remove",
                      timeout: float | None = None) -> list[Registration | Exception]:
        """``register`` of many keys at once: ``entries`` are ``(key, handle)`` or ``(key,
        handle, meta)`` tuples. One call and one durable write per registry shard, one holder
        monitor per distinct holder. Returns, in order, each entry's record or its error
        (``AlreadyRegistered``, ``HolderDead``, ...), not raised: see ``herd.registry.batches``.
        Bad input raises ``RegistryInputError`` naming ``entries[i]`` and registers nothing."""
        return self._run(batches.register_many(self, entries, on_holder_death, timeout))

    def compare_and_set_many(self, items: Iterable[tuple[Any, ...]], *,
                             timeout: float | None = None, full: bool = True
                             ) -> list[Registration | Written | Exception]:
        """``compare_and_set`` of many keys at once (unique registries): ``items`` are ``(key,
        expected)`` or ``(key, expected, changes)`` tuples (``expected``: an epoch or a
        :class:`MetaMatch`), ``changes`` a dict with
        ``handle``/``meta``/``on_holder_death``. Returns, in order, each new record or its
        ``EpochConflict``; items of one key see each other in order. ``full=False``: each
        written item answers only a :class:`Written` (key, new epoch, entry id), which saves
        sending thousands of records back to a caller that knows what it wrote."""
        return self._run(batches.compare_and_set_many(self, items, timeout, full))

    def remove_many(self, items: Iterable[Any], *,
                    timeout: float | None = None) -> list[int | Exception]:
        """``remove`` of many keys at once: keys, or ``(key, epoch)`` tuples. Returns, in
        order, the number of records removed or the ``EpochConflict``."""
        return self._run(batches.remove_many(self, items, timeout))

    # ------------------------------------------------------------------------------ queries
    def lookup(self, key: str, *, fresh: bool = False, timeout: float | None = None) -> Any:
        """The holder's handle (unique; None if absent or without holder) or the list of the
        members' handles (duplicate). Served from this process's cache after the first lookup
        of the key (a dict read); ``fresh=True`` asks the registry."""
        if not fresh:
            hit = ops.cached(self._conn.cache, key)
            if hit is not ops.MISS:
                return hit
        return ops.lookup_result(self.keys, self._fetch(key, timeout, cache=not fresh))

    def entry(self, key: str, *, fresh: bool = False,
              timeout: float | None = None) -> Registration | list[Registration] | None:
        """The key's record (unique; None if absent) or its members' records (duplicate);
        cached like ``lookup``."""
        if not fresh:
            hit = ops.cached_entry(self._conn.cache, key)
            if hit is not ops.MISS:
                return hit
        return ops.entry_result(self.keys, self._fetch(key, timeout, cache=not fresh))

    def cached(self, key: str) -> bool:
        """True when ``lookup(key)`` is answered from this process's cache (no remote call)."""
        return ops.cached(self._conn.cache, key) is not ops.MISS

    def select(self, prefix: str | None = None, meta: dict[str, Any] | None = None, *,
               timeout: float | None = None, handles: bool = True) -> list[Registration]:
        """Records whose key starts with ``prefix`` and whose meta contains every item of
        ``meta``, sorted by key; with ``handles=False`` every ``handle`` is None (cheaper for
        thousands of records read for their meta)."""
        return self._run(ops.select(self, prefix, meta, timeout, handles))

    def entries(self, keys: Iterable[str], *, timeout: float | None = None
                ) -> list[list[Registration]]:
        """The records of each key (a list per key, empty when absent), in order: one call
        per shard for many keys, read fresh (the lookup cache is neither used nor filled)."""
        return self._run(batches.entries(self, keys, timeout))

    def keys_of(self, handle: ActorHandle, *, timeout: float | None = None) -> list[str]:
        """The keys ``handle`` holds, sorted."""
        return self._run(ops.keys_of(self, handle, timeout))

    def count(self, *, timeout: float | None = None) -> int:
        """Number of records (keys of a unique registry, memberships of a duplicate one)."""
        return self._run(ops.count(self, timeout))

    def wait_for(self, key: str, *, exclude: ActorHandle | None = None,
                 timeout: float | None = None) -> Registration:
        """The key's record once it has a holder (other than ``exclude``); ``NotRegistered``
        after the timeout."""
        waiting = ops.WaitFor(self, key, exclude, timeout)
        while True:
            try:
                found = self._run(waiting.next_poll())
            except HerdTimeoutError as exc:
                raise waiting.timed_out(exc) from exc
            if found is not None:
                return found

    def info(self, *, timeout: float | None = None) -> list[dict[str, Any]]:
        """Per shard: pid, node, counter, record count, monitored/polled holders."""
        return self._run(ops.info(self, timeout))

    # ----------------------------------------------------------------------- watch/dispatch
    def watch(self, prefix: str = "", *, initial: bool = False,
              timeout: float | None = None) -> Watch:
        """A ``Watch`` (iterator) of the events for keys under ``prefix``, positioned now; see
        ``herd.registry.watch``."""
        prefix = models.check_prefix(prefix)
        deadline = ops.deadline_of(timeout)
        snapshots = [self._run(ops.snapshot(shard, prefix, deadline))
                     for shard in range(self.shards)]
        return Watch(self._conn, prefix, snapshots, initial,
                     lambda shard, deadline: self._run(ops.snapshot(shard, prefix, deadline)))

    def subscribe(self, handle: ActorHandle, method: str, prefix: str = "", *,
                  timeout: float | None = None) -> None:
        """Push every event for keys under ``prefix`` to ``handle.<method>.remote(event)``, in
        order, until the actor dies or unsubscribes (see ``herd.registry.subscribers``)."""
        self._run(ops.subscribe(self, handle, method, prefix, timeout))

    def unsubscribe(self, handle: ActorHandle, method: str | None = None, *,
                    timeout: float | None = None) -> int:
        """Stop pushing to ``handle`` (only ``method``, if given); the number of
        subscriptions ended."""
        return self._run(ops.unsubscribe(self, handle, method, timeout))

    def dispatch(self, key: str, method: str, *args: Any, **kwargs: Any) -> list[ray.ObjectRef]:
        """Call ``method`` on every member of a duplicate key (like Horde's
        ``Registry.dispatch``); returns one ObjectRef per member, fire and forget."""
        method = ops.dispatch_method(self, method)
        return ops.dispatch(key, self.lookup(key), method, args, kwargs)

    # ---------------------------------------------------------------------------- internals
    def _fetch(self, key: str, timeout: float | None, cache: bool) -> list[Registration]:
        """Ask the registry. Fresh reads neither use nor start the cache-sync thread: a child
        that only reads fresh must not get a thread that sits in a Ray call when it is stopped
        (its process then aborts and spins instead of exiting)."""
        operation = ops.fetch(self, key, timeout, self._conn.cache if cache else None)
        if cache:
            self._conn.ensure_sync()
        return self._run(operation)

    def _run(self, operation: ops.Operation) -> Any:
        return operation.combine([self._call(call, operation.deadline)
                                  for call in operation.calls])

    def _call(self, call: ops.ShardCall, deadline: float) -> Any:
        """Call the shard's actor, retrying while it restarts, until ``deadline``; raise the
        typed error of a rejection."""
        attempts = ops.Attempts(self.name, call, deadline)
        while True:
            remaining = attempts.remaining()
            handle = self._conn.actor(call.shard)
            try:
                answer = rpc.get(getattr(handle, call.method).remote(*call.args),
                                 timeout=remaining, what=attempts.what)
            except RayActorError as exc:
                time.sleep(attempts.pause_after(exc))
                if isinstance(exc, ActorDiedError):
                    self._conn.replace(call.shard, handle)
                continue
            return attempts.result(answer)


def _registry_named(name: str) -> Registry:
    return Registry.get(name)


def _face(conn: Connection) -> Registry:
    face = conn.faces.get("sync")
    if face is None:
        face = conn.faces.setdefault("sync", Registry(conn))
    return face
