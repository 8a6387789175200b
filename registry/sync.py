"""Keeping each process's lookup caches fresh from the registries' event streams.

One daemon thread per process serves every registry client of the process. It keeps one long
poll (``events_since``) outstanding per registry shard and waits on all of them with
``ray.wait``, so an event reaches the cache one round trip after the registry commits it. On a
failure of a shard's stream the cache forgets that shard (lookups go remote) until the stream is
back. Streams of a client whose process left the cluster (``ray.shutdown``, or a connection to
another cluster) are dropped; the thread ends when none is left.

The thread enters Ray only while holding Ray's connect/shutdown lock and only for short waits
(``WAIT_SLICE_S``): ``ray.shutdown`` holds that lock while it tears the core worker down, and a
thread blocked inside the core worker at that moment makes the process exit.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import ray
from ray._private.worker import _connect_or_shutdown_lock
from ray.exceptions import ActorDiedError, GetTimeoutError, RayActorError

from herd.platform.logging import get_logger
from herd.registry.cache import LookupCache

POLL_WAIT_S = 10.0
GRACE_S = 5.0
BACKOFF_S = 0.1
WAIT_SLICE_S = 0.05
YIELD_S = 0.001
STOP_TIMEOUT_S = 1.0

log = get_logger("herd.registry.sync")


class CacheSync:
    """The event streams (one per shard) feeding one registry client's cache."""

    def __init__(self, name: str, shards: int, cache: LookupCache,
                 actor: Callable[[int, bool], Any], alive: Callable[[], bool]) -> None:
        """``actor(shard, refresh)`` returns the shard's handle (a fresh one when ``refresh``);
        ``alive()`` tells whether this process is still connected to the same cluster."""
        self.name = name
        self._cache = cache
        self._actor = actor
        self.alive = alive
        self._since = self._position(shards)
        self._pending: dict[ray.ObjectRef, tuple[int, float]] = {}
        self._retry_at = [0.0] * shards
        _HUB.add(self)

    def _position(self, shards: int) -> list[int]:
        """Learn each shard's event position now (in the caller's thread), so that the lookup
        that starts the sync can already be cached; -1 (a reset: the thread learns it) where
        the registry does not answer."""
        refs = [self._actor(shard, False).events_since.remote(-1, "", 0.0)
                for shard in range(shards)]
        since = [-1] * shards
        for shard, ref in enumerate(refs):
            try:
                batch = ray.get(ref, timeout=GRACE_S)
            except (RayActorError, GetTimeoutError) as exc:
                log.info("position_unknown", registry=self.name, shard=shard,
                         error=type(exc).__name__)
                continue
            self._cache.apply(shard, batch)
            since[shard] = batch.seq
        return since

    def outstanding(self) -> list[ray.ObjectRef]:
        """Issue the long polls missing (and forget those past their deadline)."""
        now = time.monotonic()
        for ref, (shard, expires) in list(self._pending.items()):
            if now > expires:
                del self._pending[ref]
                self._cache.suspend(shard)
        waiting = {shard for shard, _ in self._pending.values()}
        for shard, since in enumerate(self._since):
            if shard not in waiting and now >= self._retry_at[shard]:
                ref = self._actor(shard, False).events_since.remote(since, "", POLL_WAIT_S)
                self._pending[ref] = (shard, now + POLL_WAIT_S + GRACE_S)
        return list(self._pending)

    def receive(self, ref: ray.ObjectRef) -> None:
        entry = self._pending.pop(ref, None)
        if entry is None:
            return
        shard = entry[0]
        try:
            batch = ray.get(ref, timeout=GRACE_S)
        except (RayActorError, GetTimeoutError) as exc:
            self._cache.suspend(shard)
            self._retry_at[shard] = time.monotonic() + BACKOFF_S
            log.info("stream_lost", registry=self.name, shard=shard, error=type(exc).__name__)
            if isinstance(exc, ActorDiedError):
                self._actor(shard, True)
            return
        self._cache.apply(shard, batch)
        self._since[shard] = batch.seq

    def suspend_all(self) -> None:
        for shard in range(len(self._since)):
            self._cache.suspend(shard)
            self._retry_at[shard] = time.monotonic() + BACKOFF_S
        self._pending.clear()


class _Hub:
    """The process's one sync thread, multiplexing the streams of every registry client."""

    def __init__(self) -> None:
        self._syncs: list[CacheSync] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, sync: CacheSync) -> None:
        with self._lock:
            self._syncs.append(sync)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="herd-registry-sync",
                                                daemon=True)
                self._thread.start()

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """End the sync thread and stop caching in this process (lookups go remote from now
        on). A supervised child calls this when it is about to exit: a thread inside Ray's
        core worker while the worker exits makes the process abort and spin instead of end."""
        with self._lock:
            syncs, self._syncs = self._syncs, []
            thread = self._thread
        with _connect_or_shutdown_lock:
            for sync in syncs:
                sync.suspend_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._syncs:
                    self._thread = None
                    return
                syncs = list(self._syncs)
            with _connect_or_shutdown_lock:
                gone = [s for s in syncs if not s.alive()]
                self._step([s for s in syncs if s not in gone])
            if gone:
                with self._lock:
                    self._syncs = [s for s in self._syncs if s not in gone]
            time.sleep(YIELD_S)  # let ray.init / ray.shutdown take the lock

    def _step(self, syncs: list[CacheSync]) -> None:
        try:
            owners = {ref: sync for sync in syncs for ref in sync.outstanding()}
            if not owners:
                return
            ready, _ = ray.wait(list(owners), num_returns=1, timeout=WAIT_SLICE_S)
            for ref in ready:
                owners[ref].receive(ref)
        except Exception as exc:  # never let one bad stream end the thread; never spin
            log.warning("sync_error", error=repr(exc))
            for sync in syncs:
                sync.suspend_all()


_HUB = _Hub()


def stop_cache_sync(timeout_s: float = STOP_TIMEOUT_S) -> None:
    """Stop this process's registry cache-sync thread (see ``_Hub.stop``)."""
    _HUB.stop(timeout_s)
