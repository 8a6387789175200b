"""The background thread that keeps a process's lookup cache fresh from the registry's events.

One daemon thread per registry per process, started by the first cached lookup. It keeps one
long poll (``events_since``) outstanding per shard and waits on all of them with ``ray.wait``,
so an event reaches the cache one round trip after the registry commits it. On any failure of a
shard's stream the cache forgets that shard (lookups go remote) until the stream is back. The
thread ends when Ray is shut down or the process joins another cluster.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import ray
from ray.exceptions import ActorDiedError, GetTimeoutError, RayActorError

from herd.platform.logging import get_logger
from herd.registry.cache import LookupCache

POLL_WAIT_S = 10.0
GRACE_S = 5.0
BACKOFF_S = 0.1


class CacheSync:
    def __init__(self, name: str, shards: int, cache: LookupCache,
                 actor: Callable[[int, bool], Any], alive: Callable[[], bool]) -> None:
        """``actor(shard, refresh)`` returns the shard's handle (a fresh one when ``refresh``);
        ``alive()`` tells whether this process is still connected to the same cluster."""
        self._shards = shards
        self._cache = cache
        self._actor = actor
        self._alive = alive
        self._log = get_logger("herd.registry.sync", registry=name)
        since = self._position()
        self._thread = threading.Thread(target=self._run, args=(since,), daemon=True,
                                        name=f"herd-registry-sync-{name}")
        self._thread.start()

    def is_running(self) -> bool:
        return self._thread.is_alive()

    def _position(self) -> list[int]:
        """Learn each shard's event position now, so that the lookup that starts the sync can
        already be cached; -1 (the thread learns it) where the registry does not answer."""
        refs = [self._actor(shard, False).events_since.remote(-1, "", 0.0)
                for shard in range(self._shards)]
        since = [-1] * self._shards
        for shard, ref in enumerate(refs):
            try:
                batch = ray.get(ref, timeout=GRACE_S)
            except (RayActorError, GetTimeoutError) as exc:
                self._log.info("position_unknown", shard=shard, error=type(exc).__name__)
                continue
            self._cache.apply(shard, batch)
            since[shard] = batch.seq
        return since

    def _run(self, since: list[int]) -> None:
        pending: dict[ray.ObjectRef, int] = {}
        while self._alive():
            try:
                for shard in set(range(self._shards)) - set(pending.values()):
                    ref = self._actor(shard, False).events_since.remote(since[shard], "", POLL_WAIT_S)
                    pending[ref] = shard
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_WAIT_S + GRACE_S)
                if not ready:  # no shard answered within its deadline: the streams are broken
                    for shard in pending.values():
                        self._cache.suspend(shard)
                    pending.clear()
                    continue
                for ref in ready:
                    shard = pending.pop(ref)
                    since[shard] = self._receive(shard, ref, since[shard])
            except (Exception, SystemExit) as exc:  # Ray shutting down under us (it raises
                # SystemExit in waiting threads), or a bug: never spin
                if not self._alive():
                    break
                self._log.warning("sync_error", error=repr(exc))
                for shard in range(self._shards):
                    self._cache.suspend(shard)
                pending.clear()
                time.sleep(BACKOFF_S)
        self._log.debug("sync_stopped")

    def _receive(self, shard: int, ref: ray.ObjectRef, since: int) -> int:
        try:
            batch = ray.get(ref, timeout=GRACE_S)
        except (RayActorError, GetTimeoutError) as exc:
            self._cache.suspend(shard)
            self._log.info("stream_lost", shard=shard, error=type(exc).__name__)
            time.sleep(BACKOFF_S)
            if isinstance(exc, ActorDiedError):
                self._actor(shard, True)
            return since
        self._cache.apply(shard, batch)
        return batch.seq
