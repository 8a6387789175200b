"""``Registry``: the client of a registry, used in drivers and inside actors.

One client per registry per process (``Registry.start`` / ``Registry.get`` return the same
object). Every operation has a timeout (default ``HERD_CALL_TIMEOUT_S``, 30 s) and retries
transparently, within it, while the registry actor is restarting or being re-created;
operations that write carry an operation id, so a retry of a write that was committed before
the actor died returns the committed result instead of applying it twice.

Lookups are served from the process's cache (``herd.registry.cache``) once a key has been
looked up; ``fresh=True`` asks the registry itself (a linearizable read).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

import ray
from ray.actor import ActorHandle
from ray.exceptions import ActorDiedError, RayActorError

from herd.platform import kv, rpc
from herd.platform.control_plane import require_ray
from herd.platform.errors import HerdTimeoutError
from herd.platform.logging import get_logger
from herd.registry import models
from herd.registry.actor import start_actor
from herd.registry.cache import LookupCache
from herd.registry.errors import (
    AlreadyRegistered,
    EpochConflict,
    HolderDead,
    KeyModeError,
    NotRegistered,
    RegistryInputError,
    UnknownRegistry,
)
from herd.registry.layout import config_key, shard_of
from herd.registry.records import KeyMode, Registration, Rejection
from herd.registry.sync import CacheSync

RETRY_PAUSE_S = 0.05
READY_MARGIN_S = 0.25
LONG_POLL_S = 10.0
WAIT_GRACE_S = 0.2

log = get_logger("herd.registry")

_clients: dict[tuple[str, str], Registry] = {}
_clients_lock = threading.Lock()


def session() -> str | None:
    """The Ray session this process is connected to (None when not connected)."""
    if not ray.is_initialized():
        return None
    node = ray._private.worker.global_worker.node
    return node.session_name if node is not None else None


class Registry:
    """A cluster-wide registry of actor handles by key (see the package docstring)."""

    def __init__(self, name: str, keys: KeyMode, shards: int, session_name: str) -> None:
        self.name = name
        self.keys: KeyMode = keys
        self.shards = shards
        self._session = session_name
        self._actors: list[Any] = [None] * shards
        self._cache = LookupCache(keys, shards)
        self._sync: CacheSync | None = None
        self._sync_lock = threading.Lock()
        self._actors_lock = threading.Lock()

    # ---------------------------------------------------------------------------- lifecycle
    @classmethod
    def start(cls, name: str = "default", keys: KeyMode = "unique", shards: int = 1,
              timeout: float | None = None) -> Registry:
        """Get or create the registry ``name`` (its actors: detached, restartable, pinned to
        the head node) and wait until it answers. Starting an existing registry is a no-op;
        with another ``keys`` mode or shard count it raises ``KeyModeError``."""
        opts = models.options(name=name, keys=keys, shards=shards)
        deadline = _deadline(timeout)
        require_ray()
        wanted = {"keys": opts.keys, "shards": opts.shards}
        if not kv.put(config_key(opts.name), json.dumps(wanted).encode(), overwrite=False):
            existing = _read_config(opts.name)
            if existing != wanted:
                raise KeyModeError(f"registry {opts.name!r} exists with keys={existing['keys']!r}, "
                                   f"shards={existing['shards']}; asked for keys={opts.keys!r}, "
                                   f"shards={opts.shards}")
        registry = _client(opts.name, opts.keys, opts.shards)
        for shard in range(registry.shards):
            registry._call(shard, "count", deadline=deadline)
        log.info("registry_ready", registry=opts.name, keys=opts.keys, shards=opts.shards)
        return registry

    @classmethod
    def get(cls, name: str = "default") -> Registry:
        """The registry ``name``; ``UnknownRegistry`` if it was never started."""
        found = _clients.get((session(), name)) if isinstance(name, str) else None  # type: ignore[arg-type]
        if found is not None:
            return found
        name = models.check_name(name)
        require_ray()
        config = _read_config(name)
        if config is None:
            raise UnknownRegistry(f"no registry named {name!r}: start it with Registry.start()")
        return _client(name, config["keys"], config["shards"])

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
        key = models.check_key(key)
        models.check_handle(handle)
        meta = models.check_meta(meta)
        on_death = models.check_on_holder_death(on_holder_death)
        if on_death == "clear":
            self._require("unique", 'on_holder_death="clear"')
        deadline = _deadline(timeout)
        return self._call(shard_of(key, self.shards), "register", key, handle, meta, on_death,
                          _own_node(handle), uuid.uuid4().hex, _ready_s(deadline),
                          deadline=deadline)

    def unregister(self, key: str, handle: ActorHandle | None = None, *,
                   epoch: int | None = None, timeout: float | None = None) -> None:
        """Remove the key's records (only ``handle``'s, when given). With ``epoch`` (unique
        registries) only if the record still has that epoch, else ``EpochConflict``.
        Idempotent: removing an absent key is not an error."""
        key = models.check_key(key)
        holder_id = models.actor_id(models.check_handle(handle)) if handle is not None else None
        if epoch is not None:
            self._require("unique", "unregister(epoch=...)")
            epoch = models.check_epoch(epoch)
        self._call(shard_of(key, self.shards), "unregister", key, holder_id, epoch,
                   deadline=_deadline(timeout))

    def compare_and_set(self, key: str, expected_epoch: int | None, *,
                        timeout: float | None = None, **changes: Any) -> Registration:
        """Linearizable compare-and-set on a record's epoch (unique registries).

        ``expected_epoch`` 0 or None: create the record, which must not exist. Otherwise the
        record must exist with exactly that epoch. ``changes``: ``handle`` (an actor handle,
        or None for a record without holder, e.g. a claim before the actor exists), ``meta``
        (replaces the meta) and ``on_holder_death``; fields not given are kept. Returns the
        new record, whose epoch is higher than any before; ``EpochConflict`` (with the actual
        epoch, None if absent) when the expectation fails -- exactly one of several racing
        callers with the same expectation wins."""
        key = models.check_key(key)
        expected = models.check_epoch(expected_epoch)
        checked = models.check_changes(changes)
        self._require("unique", "compare_and_set")
        handle = checked.get("handle")
        deadline = _deadline(timeout)
        return self._call(shard_of(key, self.shards), "compare_and_set", key, expected, checked,
                          _own_node(handle) if handle is not None else None, uuid.uuid4().hex,
                          _ready_s(deadline), deadline=deadline)

    def update_meta(self, key: str, meta: dict[str, Any], handle: ActorHandle | None = None, *,
                    timeout: float | None = None) -> Registration | list[Registration]:
        """Replace the meta of the key's record (unique; ``handle``, if given, must be the
        holder) or of ``handle``'s memberships of the key (duplicate: ``handle`` required).
        ``NotRegistered`` if there is no such record."""
        key = models.check_key(key)
        meta = models.check_meta(meta)
        if handle is None and self.keys == "duplicate":
            raise RegistryInputError("is required for a duplicate registry", field="handle",
                                     value=None)
        holder_id = models.actor_id(models.check_handle(handle)) if handle is not None else None
        updated = self._call(shard_of(key, self.shards), "update_meta", key, meta, holder_id,
                             uuid.uuid4().hex, deadline=_deadline(timeout))
        return updated[0] if self.keys == "unique" else updated

    # ------------------------------------------------------------------------------ queries
    def lookup(self, key: str, *, fresh: bool = False, timeout: float | None = None) -> Any:
        """The holder's handle (unique; None if absent or without holder) or the list of the
        members' handles (duplicate). Served from this process's cache after the first lookup
        of the key (a dict read); ``fresh=True`` asks the registry."""
        if not fresh:
            slot = self._cache.slots.get(key) if isinstance(key, str) else None
            if slot is not None:
                return list(slot.value) if self.keys == "duplicate" else slot.value
        regs = self._fetch(key, timeout, cache=not fresh)
        if self.keys == "unique":
            return regs[0].handle if regs else None
        return [r.handle for r in regs if r.handle is not None]

    def entry(self, key: str, *, fresh: bool = False,
              timeout: float | None = None) -> Registration | list[Registration] | None:
        """The key's record (unique; None if absent) or its members' records (duplicate);
        cached like ``lookup``."""
        slot = None if fresh or not isinstance(key, str) else self._cache.slots.get(key)
        if slot is not None:
            regs = list(slot.regs.values())
        else:
            regs = self._fetch(key, timeout, cache=not fresh)
        if self.keys == "unique":
            return regs[0] if regs else None
        return regs

    def select(self, prefix: str | None = None, meta: dict[str, Any] | None = None, *,
               timeout: float | None = None) -> list[Registration]:
        """Records whose key starts with ``prefix`` and whose meta contains every item of
        ``meta``, sorted by key."""
        prefix = models.check_prefix(prefix)
        wanted = models.check_meta(meta, field="meta filter")
        deadline = _deadline(timeout)
        found = [r for shard in range(self.shards)
                 for r in self._call(shard, "select", prefix, wanted, deadline=deadline)]
        return sorted(found, key=lambda r: (r.key, r.entry_id))

    def keys_of(self, handle: ActorHandle, *, timeout: float | None = None) -> list[str]:
        holder_id = models.actor_id(models.check_handle(handle))
        deadline = _deadline(timeout)
        return sorted(k for shard in range(self.shards)
                      for k in self._call(shard, "keys_of", holder_id, deadline=deadline))

    def count(self, *, timeout: float | None = None) -> int:
        """Number of records (keys of a unique registry, memberships of a duplicate one)."""
        deadline = _deadline(timeout)
        return sum(self._call(shard, "count", deadline=deadline) for shard in range(self.shards))

    def wait_for(self, key: str, *, exclude: ActorHandle | None = None,
                 timeout: float | None = None) -> Registration:
        """The key's record once it has a holder (other than ``exclude``); ``NotRegistered``
        after the timeout."""
        key = models.check_key(key)
        excluded = models.actor_id(models.check_handle(exclude, "exclude")) if exclude else None
        deadline = _deadline(timeout)
        shard = shard_of(key, self.shards)
        while True:
            wait_s = min(deadline - time.monotonic() - WAIT_GRACE_S, LONG_POLL_S)
            if wait_s <= 0:
                raise NotRegistered(key, "no holder registered in time")
            try:
                found = self._call(shard, "wait_for", key, excluded, wait_s, deadline=deadline)
            except HerdTimeoutError as exc:
                raise NotRegistered(key, f"no holder registered in time ({exc})") from exc
            if found is not None:
                return found

    def info(self, *, timeout: float | None = None) -> list[dict[str, Any]]:
        """Per shard: pid, node, counter, record count, monitored/polled holders."""
        deadline = _deadline(timeout)
        return [self._call(shard, "info", deadline=deadline) for shard in range(self.shards)]

    # ----------------------------------------------------------------------- watch/dispatch
    def watch(self, prefix: str = "", *, initial: bool = False,
              timeout: float | None = None) -> Any:
        """A ``Watch`` (iterator) of the events for keys under ``prefix``; see
        ``herd.registry.watch``."""
        from herd.registry.watch import Watch

        return Watch(self, models.check_prefix(prefix), initial, _deadline(timeout))

    def subscribe(self, handle: ActorHandle, method: str, prefix: str = "", *,
                  timeout: float | None = None) -> None:
        """Push every event for keys under ``prefix`` to ``handle.<method>.remote(event)``, in
        order, until the actor dies or unsubscribes (see ``herd.registry.subscribers``)."""
        models.check_handle(handle)
        method = models.check_method(method)
        prefix = models.check_prefix(prefix)
        deadline = _deadline(timeout)
        for shard in range(self.shards):
            self._call(shard, "subscribe", handle, method, prefix, deadline=deadline)

    def unsubscribe(self, handle: ActorHandle, method: str | None = None, *,
                    timeout: float | None = None) -> int:
        holder_id = models.actor_id(models.check_handle(handle))
        if method is not None:
            method = models.check_method(method)
        deadline = _deadline(timeout)
        return sum(self._call(shard, "unsubscribe", holder_id, method, deadline=deadline)
                   for shard in range(self.shards))

    def dispatch(self, key: str, method: str, *args: Any, **kwargs: Any) -> list[ray.ObjectRef]:
        """Call ``method`` on every member of a duplicate key (like Horde's
        ``Registry.dispatch``); returns one ObjectRef per member, fire and forget."""
        self._require("duplicate", "dispatch")
        method = models.check_method(method)
        refs = []
        for handle in self.lookup(key):
            try:
                bound = getattr(handle, method)
            except AttributeError:
                raise RegistryInputError(f"a member of {key!r} has no such actor method",
                                         field="method", value=method) from None
            refs.append(bound.remote(*args, **kwargs))
        return refs

    # ---------------------------------------------------------------------------- internals
    def _require(self, mode: KeyMode, what: str) -> None:
        if self.keys != mode:
            raise KeyModeError(f"{what} needs a {mode} registry; {self.name!r} has "
                               f"keys={self.keys!r}")

    def _fetch(self, key: str, timeout: float | None, cache: bool) -> list[Registration]:
        """Ask the registry. Fresh reads neither use nor start the cache-sync thread: a child
        that only reads fresh must not get a thread that sits in a Ray call when it is stopped
        (its process then aborts and spins instead of exiting)."""
        key = models.check_key(key)
        shard = shard_of(key, self.shards)
        if cache:
            self._ensure_sync()
        seq, regs = self._call(shard, "entry", key, deadline=_deadline(timeout))
        if cache:
            self._cache.offer(key, shard, seq, regs)
        return regs

    def _invalidate(self, key: str, handle: ActorHandle) -> None:
        self._cache.invalidate(key, models.actor_id(handle))

    def _ensure_sync(self) -> None:
        if self._sync is None:
            with self._sync_lock:
                if self._sync is None:
                    self._sync = CacheSync(self.name, self.shards, self._cache, self._actor,
                                           self._connected)

    def _connected(self) -> bool:
        return session() == self._session

    def _actor(self, shard: int, refresh: bool = False) -> Any:
        handle = self._actors[shard]
        if handle is None or refresh:
            with self._actors_lock:
                if self._actors[shard] is handle:
                    self._actors[shard] = start_actor(self.name, shard, self.shards, self.keys)
                handle = self._actors[shard]
        return handle

    def _call(self, shard: int, method: str, *args: Any, deadline: float) -> Any:
        """Call the shard's actor, retrying while it restarts, until ``deadline``; raise the
        typed error of a rejection."""
        what = f"registry {self.name!r} {method}"
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise HerdTimeoutError(f"{what} did not complete in time")
            handle = self._actor(shard)
            try:
                result = rpc.get(getattr(handle, method).remote(*args), timeout=remaining, what=what)
            except RayActorError as exc:
                if deadline - time.monotonic() <= RETRY_PAUSE_S:
                    raise HerdTimeoutError(f"{what}: registry actor unavailable: {exc}") from exc
                log.debug("registry_retry", registry=self.name, shard=shard, method=method,
                          error=type(exc).__name__)
                time.sleep(RETRY_PAUSE_S)
                if isinstance(exc, ActorDiedError):
                    self._actor(shard, refresh=True)
                continue
            if isinstance(result, Rejection):
                raise _rejection_error(result)
            return result


def _registry_named(name: str) -> Registry:
    return Registry.get(name)


def _client(name: str, keys: KeyMode, shards: int) -> Registry:
    current = session()
    if current is None:
        require_ray()
    with _clients_lock:
        for stale in [k for k in _clients if k[0] != current]:
            del _clients[stale]
        client = _clients.get((current, name))  # type: ignore[arg-type]
        if client is None:
            client = _clients[(current, name)] = Registry(name, keys, shards, current)  # type: ignore[arg-type]
        return client


def _read_config(name: str) -> dict[str, Any] | None:
    raw = kv.get(config_key(name))
    return None if raw is None else json.loads(raw)


def _deadline(timeout: float | None) -> float:
    return time.monotonic() + models.check_timeout(timeout, rpc.DEFAULT_TIMEOUT_S)


def _ready_s(deadline: float) -> float:
    """How long the registry may wait for a new holder to be placed."""
    return max(0.0, deadline - time.monotonic() - READY_MARGIN_S)


def _own_node(handle: ActorHandle) -> str | None:
    """This process's node when ``handle`` is this very actor (no GCS query needed)."""
    context = ray.get_runtime_context()
    return context.get_node_id() if context.get_actor_id() == models.actor_id(handle) else None


def _rejection_error(rejection: Rejection) -> Exception:
    if rejection.kind == "already_registered":
        return AlreadyRegistered(rejection.key, rejection.holder)
    if rejection.kind == "epoch_conflict":
        return EpochConflict(rejection.key, rejection.expected or 0, rejection.actual)
    if rejection.kind == "not_registered":
        return NotRegistered(rejection.key, rejection.detail)
    if rejection.kind == "holder_dead":
        return HolderDead(rejection.key, rejection.holder)
    return HerdTimeoutError(f"holder of {rejection.key!r} was not alive in time "
                            f"(state {rejection.detail})")
