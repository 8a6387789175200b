"""``Registry.watch(prefix)``: the registry's events as an iterator, for drivers.

The watch keeps one long poll outstanding per shard and the set of records it has seen under
its prefix. If the registry can no longer supply the events after the watch's position (its
actor restarted and lost its in-memory log, or the watch fell more than the log's capacity
behind), the watch reads a snapshot and emits the difference as synthetic events (reason
``"resync"``), so a watcher's view always converges to the registry's. Events of one shard
arrive in order (``seq`` grows); shards are independent.

    with registry.watch("jobs/") as watch:
        event = watch.next(timeout=5)        # or: for event in watch: ...  (until close())
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import ray
from ray.exceptions import ActorDiedError, RayActorError

from herd.platform.errors import HerdTimeoutError
from herd.registry.connection import Connection
from herd.registry.records import (
    Event,
    EventBatch,
    Registered,
    Registration,
    Snapshot,
    Unregistered,
    Updated,
)

POLL_WAIT_S = 10.0
GRACE_S = 5.0
BACKOFF_S = 0.1
ITER_POLL_S = 1.0


class Watch:
    """Built by ``Registry.watch`` from a snapshot of every shard (its starting position);
    ``resnapshot(shard, deadline)`` reads a shard's snapshot again after a reset."""

    def __init__(self, conn: Connection, prefix: str, snapshots: list[Snapshot], initial: bool,
                 resnapshot: Callable[[int, float], Snapshot]) -> None:
        self._conn = conn
        self._prefix = prefix
        self._resnapshot = resnapshot
        self._buffer: deque[Event] = deque()
        self._pending: dict[ray.ObjectRef, tuple[int, float]] = {}
        self._known: list[dict[int, Registration]] = []
        self._since: list[int] = []
        self._closed = False
        for shard, snap in enumerate(snapshots):
            self._known.append({r.entry_id: r for r in snap.registrations})
            self._since.append(snap.seq)
            if initial:
                self._buffer.extend(Registered(r.epoch, shard, r) for r in snap.registrations)

    def poll(self, timeout: float) -> list[Event]:
        """The events that arrived, waiting up to ``timeout`` seconds for at least one."""
        deadline = time.monotonic() + timeout
        while not self._buffer and not self._closed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._issue()
            ready, _ = ray.wait(list(self._pending), num_returns=1, timeout=remaining)
            for ref in ready:
                self._receive(ref, deadline)
            self._expire()
        events = list(self._buffer)
        self._buffer.clear()
        return events

    def next(self, timeout: float) -> Event:
        """The next event; ``HerdTimeoutError`` if none arrives within ``timeout`` seconds."""
        if not self._buffer:
            self._buffer.extend(self.poll(timeout))
        if not self._buffer:
            raise HerdTimeoutError(f"no registry event under {self._prefix!r} within {timeout} s")
        return self._buffer.popleft()

    def __iter__(self) -> Iterator[Event]:
        """Every event until ``close()`` (an endless stream: break out or close)."""
        while not self._closed:
            yield from self.poll(ITER_POLL_S)

    def close(self) -> None:
        self._closed = True
        self._pending.clear()

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------------------- internals
    def _issue(self) -> None:
        waiting = {shard for shard, _ in self._pending.values()}
        for shard in range(self._conn.shards):
            if shard not in waiting:
                actor = self._conn.actor(shard)
                ref = actor.events_since.remote(self._since[shard], self._prefix, POLL_WAIT_S)
                self._pending[ref] = (shard, time.monotonic() + POLL_WAIT_S + GRACE_S)

    def _expire(self) -> None:
        """Forget long polls that outlived their deadline (they are re-issued)."""
        now = time.monotonic()
        for ref, (_, expires) in list(self._pending.items()):
            if now > expires:
                del self._pending[ref]

    def _receive(self, ref: ray.ObjectRef, deadline: float) -> None:
        shard, _ = self._pending.pop(ref)
        try:
            batch: EventBatch = ray.get(ref, timeout=GRACE_S)
        except RayActorError as exc:  # the registry is restarting: ask again shortly
            time.sleep(BACKOFF_S)
            if isinstance(exc, ActorDiedError):
                self._conn.actor(shard, refresh=True)
            return
        if batch.reset:
            self._resync(shard, deadline)
            return
        known = self._known[shard]
        for event in batch.events:
            if isinstance(event, Unregistered):
                known.pop(event.registration.entry_id, None)
            else:
                known[event.registration.entry_id] = event.registration
            self._buffer.append(event)
        self._since[shard] = batch.seq

    def _resync(self, shard: int, deadline: float) -> None:
        snap = self._resnapshot(shard, max(deadline, time.monotonic() + GRACE_S))
        old, new = self._known[shard], {r.entry_id: r for r in snap.registrations}
        for entry_id, reg in old.items():
            if entry_id not in new:
                self._buffer.append(Unregistered(snap.seq, shard, reg, "resync"))
        for entry_id, reg in new.items():
            before: Any = old.get(entry_id)
            if before is None:
                self._buffer.append(Registered(snap.seq, shard, reg))
            elif before.epoch != reg.epoch:
                self._buffer.append(Updated(snap.seq, shard, reg, before, "resync"))
        self._known[shard] = new
        self._since[shard] = snap.seq
