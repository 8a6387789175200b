"""A distributed cache in the manner of Nebulex (topologies) and Cachex (TTL, loaders).

    cache = Cache.start("users", topology="replicated", ttl=60, max_entries=10_000)
    cache.put("u1", {"name": "Ada"}); cache.get("u1")
    cache.get_or_load("u2", lambda: load_user("u2"))      # one loader call cluster-wide

* ``local``: this process only (an LRU/TTL dict behind a lock).
* ``replicated``: a replica per node (``cache_node``) holds every entry; this client keeps an
  in-process mirror of its node's replica, fed by a long poll of its change feed, so ``get`` is
  a local dict read; writes go through the node's replica, which spreads them (LWW by HLC) to
  every node before acknowledging, and are in the writer's mirror when ``put`` returns.
* ``partitioned``: keys live on their ring owner and ``backups`` more; ``get`` asks the owner
  (then the backups); replicas re-home keys when nodes join and leave.

``get_or_load(key, loader)`` is single-flight: the ring owner of the key lets one caller in the
cluster run the loader at a time; the others wait for its value. Deletes are pushed to every node.
"""

from __future__ import annotations

import pickle
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

import ray
from pydantic import ValidationError
from ray import cloudpickle
from ray.exceptions import RayError

from herd.platform import rpc
from herd.platform.clocks import HybridLogicalClock
from herd.platform.control_plane import require_ray
from herd.platform.errors import ConfigError, HerdError, HerdTimeoutError
from herd.platform.gcs import nodes
from herd.platform.logging import get_logger
from herd.platform.validation import format_validation_error
from herd.platform.waiting import deadline_in, time_left
from herd.replication.cache_node import (
    CacheNode,
    CacheSettings,
    expiry,
    node_actor_options,
    now_ms,
)
from herd.replication.cache_ring import CacheRing
from herd.replication.cache_store import CacheStore, Entry, Version
from herd.replication.errors import InvalidValue

NODES_TTL_S = 1.0
FEED_POLL_S = 1.0
MIRROR_RETRY_S = 0.2

log = get_logger("herd.cache")

__all__ = ["Cache", "CacheSettings"]


def _check_ttl(ttl: Any) -> float | None:
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or ttl <= 0:
        raise ConfigError("must be a positive number of seconds or None", source="cache",
                          field="ttl", value=ttl)
    return float(ttl)


def _check_picklable(value: Any, field: str) -> None:
    try:
        cloudpickle.dumps(value)
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        raise InvalidValue(f"cache {field} cannot be pickled: {exc}") from None


def _check_key(key: Any, shipped: bool = True) -> Hashable:
    """``key`` if it can be a cache key; ``shipped=False`` for a read served in this process
    (a hit is a dict read: pickling the key would cost more than the read)."""
    try:
        hash(key)
    except TypeError:
        raise InvalidValue(f"cache keys must be hashable, got {type(key).__name__}") from None
    if shipped:
        _check_picklable(key, "key")
    return key  # type: ignore[no-any-return]


class _Mirror:
    """This process's copy of its node's replica (replicated topology)."""

    def __init__(self, node: Any, max_entries: int | None, timeout: float) -> None:
        self.node, self.timeout = node, timeout
        self.store = CacheStore(max_entries)
        self.lock = threading.Lock()
        self.seq = -1
        self.closed = threading.Event()
        self.synced = threading.Event()
        self.thread = threading.Thread(target=self._follow, daemon=True, name="herd-cache-feed")
        self.thread.start()

    def _follow(self) -> None:
        while not self.closed.is_set():
            try:
                got = rpc.get(self.node.changes.remote(self.seq, FEED_POLL_S),
                              timeout=FEED_POLL_S + self.timeout, what="cache feed")
            except (HerdError, RayError) as exc:
                log.warning("cache_feed_failed", error=repr(exc))
                self.closed.wait(MIRROR_RETRY_S)
                continue
            except SystemExit:  # Ray raises it in threads when the process disconnects
                return
            self.merge(got.get("snapshot") or got.get("items") or [])
            self.seq = got["seq"]
            self.synced.set()

    def merge(self, items: list[Any]) -> None:
        at = now_ms()
        with self.lock:
            for key, entry, version in items:
                self.store.merge(key, entry, version, at)

    def get(self, key: Hashable) -> tuple[bool, Any]:
        with self.lock:
            return self.store.get(key, time.time_ns() // 1_000_000)


class Cache:
    """Client of cache ``settings.name`` (use ``Cache.start``)."""

    def __init__(self, settings: CacheSettings, timeout: float) -> None:
        self.settings, self.timeout = settings, timeout
        self.ring = CacheRing(settings.backups if settings.topology == "partitioned" else 0)
        self._local = CacheStore(settings.max_entries) if settings.topology == "local" else None
        self._lock = threading.Lock()
        self._flights: dict[Hashable, threading.Event] = {}
        self._nodes: tuple[float, list[str]] = (0.0, [])
        self._handles: dict[str, Any] = {}
        self._mirror: _Mirror | None = None
        self._clock = HybridLogicalClock("local")

    @classmethod
    def start(cls, name: str, topology: str = "replicated", ttl: float | None = None,
              max_entries: int | None = None, backups: int = 1, load_timeout_s: float = 30.0,
              timeout: float | None = None) -> Cache:
        """Start (or join: the replicas of a running cache keep their settings) a cache; for
        ``ttl`` (default per entry, seconds), ``max_entries`` (LRU, per replica) and
        ``backups`` (partitioned) see the module docstring."""
        _check_ttl(ttl)
        try:
            settings = CacheSettings(name=name, topology=topology, ttl=ttl,  # type: ignore[arg-type]
                                     max_entries=max_entries, backups=backups,
                                     load_timeout_s=load_timeout_s)
        except ValidationError as exc:
            raise format_validation_error(exc, "cache") from None
        cache = cls(settings, rpc.DEFAULT_TIMEOUT_S if timeout is None else timeout)
        if settings.topology != "local":
            require_ray()
            deadline = deadline_in(cache.timeout)
            rpc.get([cache._node(n).ready.remote() for n in cache._live_nodes()],
                    timeout=time_left(deadline), what=f"cache {name} start")
            if settings.topology == "replicated":
                here = ray.get_runtime_context().get_node_id()
                cache._mirror = _Mirror(cache._node(here), settings.max_entries, cache.timeout)
                if not cache._mirror.synced.wait(time_left(deadline)):
                    raise HerdTimeoutError(f"cache {name}: no snapshot of the local replica")
        return cache

    # ------------------------------------------------------------------ internals
    def _node(self, node_id: str) -> Any:
        handle = self._handles.get(node_id)
        if handle is None:
            handle = self._handles[node_id] = CacheNode.options(
                **node_actor_options(self.settings.name, node_id)).remote(
                    self.settings.model_dump(), node_id)
        return handle

    def _live_nodes(self, fresh: bool = False) -> list[str]:
        read_at, known = self._nodes
        if fresh or time.monotonic() - read_at > NODES_TTL_S:
            known = [n.node_id for n in nodes() if n.alive]
            self._nodes = (time.monotonic(), known)
        return known

    def _holders(self, key: Hashable) -> list[str]:
        return self.ring.holders(key, self._live_nodes())

    def _call(self, node_id: str, method: str, *args: Any) -> Any:
        return rpc.get(getattr(self._node(node_id), method).remote(*args),
                       timeout=self.timeout, what=f"cache {method}")

    # ------------------------------------------------------------------ operations
    def get(self, key: Hashable, default: Any = None) -> Any:
        _check_key(key, shipped=self._local is None and self._mirror is None)
        found, value = self._get(key)
        return value if found else default

    def _get(self, key: Hashable) -> tuple[bool, Any]:
        if self._local is not None:
            with self._lock:
                return self._local.get(key, now_ms())
        if self._mirror is not None:
            return self._mirror.get(key)
        for node_id in self._holders(key):
            try:
                found, value = self._call(node_id, "get", key)
            except (HerdError, RayError):
                continue
            if found:
                return True, value
        return False, None

    def put(self, key: Hashable, value: Any, ttl: float | None = None) -> None:
        """Store ``value`` (for ``ttl`` seconds, or the cache's default); acknowledged once the
        replicas that should hold it have it (or did not answer in time: logged)."""
        _check_key(key)
        _check_ttl(ttl)
        _check_picklable(value, "value")
        if self._local is not None:
            version = self._stamp()
            with self._lock:
                self._local.merge(key, Entry(value, version, expiry(ttl, self.settings.ttl)),
                                  version, now_ms())
            return
        target = self._holders(key)[0] if self._mirror is None else self._here()
        answer = self._call(target, "put", key, value, ttl)
        if self._mirror is not None:
            self._mirror.merge([(key, Entry(value, answer["version"],
                                            expiry(ttl, self.settings.ttl)), answer["version"])])

    def delete(self, key: Hashable) -> None:
        """Remove ``key`` on every node (a tombstone keeps older writes from returning)."""
        _check_key(key)
        if self._local is not None:
            version = self._stamp()
            with self._lock:
                self._local.merge(key, None, version, now_ms())
            return
        answer = self._call(self._holders(key)[0], "delete", key)
        if self._mirror is not None:
            self._mirror.merge([(key, None, answer["version"])])

    def _stamp(self) -> Version:
        stamp = self._clock.now()
        return (stamp.wall_ms, stamp.logical, stamp.replica)

    def _here(self) -> str:
        return str(ray.get_runtime_context().get_node_id())

    def get_or_load(self, key: Hashable, loader: Callable[[], Any], ttl: float | None = None,
                    timeout: float | None = None) -> Any:
        """The cached value of ``key``, or ``loader()``'s, stored with ``ttl``: while one
        caller in the cluster runs the loader for ``key``, the others wait for its value."""
        _check_key(key)
        _check_ttl(ttl)
        if not callable(loader):
            raise ConfigError("must be callable", source="cache", field="loader", value=loader)
        found, value = self._get(key)
        if found:
            return value
        deadline = deadline_in(self.timeout if timeout is None else timeout)
        if self._local is not None:
            return self._load_locally(key, loader, ttl, deadline)
        coordinator = self._holders(key)[0]
        state, got = self._call(coordinator, "begin_load", key, time_left(deadline))
        if state == "hit":
            return got
        if state == "timeout":
            raise HerdTimeoutError(f"cache {self.settings.name}: the loader of {key!r} still "
                                   "runs elsewhere")
        try:
            value = loader()
            _check_picklable(value, "value")
        except BaseException:
            self._call(coordinator, "end_load", key, got, False, None, ttl)
            raise
        self._call(coordinator, "end_load", key, got, True, value, ttl)
        return value

    def _load_locally(self, key: Hashable, loader: Callable[[], Any], ttl: float | None,
                      deadline: float) -> Any:
        while True:
            with self._lock:
                assert self._local is not None
                entry = self._local.peek(key, now_ms())
                if entry is not None:
                    return entry.value
                flight = self._flights.get(key)
                if flight is None:
                    self._flights[key] = threading.Event()
                    self._local.stats.loads += 1
            if flight is None:
                break
            if not flight.wait(time_left(deadline)):
                raise HerdTimeoutError(f"the loader of {key!r} still runs")
        try:
            value = loader()
            self.put(key, value, ttl)
            return value
        finally:
            with self._lock:
                self._flights.pop(key).set()

    def stats(self) -> dict[str, Any]:
        """hits, misses, evictions, expired and loads: this client's (local, or its mirror's
        reads) plus, for replicas, what they counted (the loads they admitted, their reads)."""
        if self._local is not None:
            return self._local.stats.as_dict()
        total = self._mirror.store.stats.as_dict() if self._mirror else {}
        live = self._live_nodes(fresh=True)
        for node_stats in rpc.get([self._node(n).stats.remote() for n in live],
                                  timeout=self.timeout, what="cache stats"):
            for name in ("hits", "misses", "evictions", "expired", "loads"):
                total[name] = total.get(name, 0) + node_stats[name]
        return total

    def replica_get(self, node_id: str, key: Hashable) -> tuple[bool, Any]:
        """``(found, value)`` of ``key`` in the replica of ``node_id`` (for checks)."""
        found, value = self._call(node_id, "get", _check_key(key))
        return bool(found), value

    def replica_stats(self) -> dict[str, dict[str, Any]]:
        live = self._live_nodes(fresh=True)
        got = rpc.get([self._node(n).stats.remote() for n in live], timeout=self.timeout,
                      what="cache stats")
        return dict(zip(live, got, strict=True))

    def close(self) -> None:
        if self._mirror is not None:
            self._mirror.closed.set()
