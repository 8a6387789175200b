"""One live aggregate: a lightweight child of the app's dynamic supervisor, registered as
``<app>/<Aggregate>:<id>``, running in the host actor of its node.

Its first command rehydrates it: it learns its registry epoch (``fencing.acheck``: only the
registry's current holder gets one), claims its stream in the store with that epoch, then loads
the latest snapshot and the events after it. Every append carries the version it read (the
expected version) and its epoch (the fence), so an instance that was replaced -- a zombie on a
node cut off from the cluster, whose successor has claimed the stream with a higher epoch -- is
refused even when its expected version happens to match. A command is answered only after its
events are durable; a keyed command that was answered before is answered again from the record
(``rehydration.IdempotencyWindow``), not appended twice. With no command for
``idle_timeout_s`` the instance exits normally (a transient child: it is not restarted) and the
next command starts it again.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from herd.eventsourcing.appspec import AppSpec, load_spec
from herd.eventsourcing.codec import EventCodec, event_type_of
from herd.eventsourcing.epochs import epoch_of
from herd.eventsourcing.errors import CommandRejected, Fenced, WrongExpectedVersion
from herd.eventsourcing.model import Aggregate, Command, CommandResult
from herd.eventsourcing.rehydration import AggregateState, snapshot_due
from herd.eventsourcing.store.base import EventStore
from herd.eventsourcing.store.open import shared_store
from herd.eventsourcing.store.records import Snapshot
from herd.platform.logging import get_logger
from herd.supervisors import NORMAL, exit

__all__ = ["AggregateInstance", "child_id", "rehydrate", "stream_of"]

log = get_logger("herd.eventsourcing.instance")


def child_id(aggregate_type: str, aggregate_id: str) -> str:
    return f"{aggregate_type}:{aggregate_id}"


def stream_of(aggregate_type: str, aggregate_id: str) -> str:
    return f"{aggregate_type}-{aggregate_id}"


async def rehydrate(store: EventStore, codec: EventCodec, aggregate: Aggregate, stream: str,
                    page: int = 5000) -> tuple[AggregateState, int]:
    """``aggregate`` brought up to date from ``stream``: the latest snapshot, then every later
    event; also the snapshot's version (0: none)."""
    state = AggregateState(aggregate)
    snapshot = await store.load_snapshot(stream)
    if snapshot is not None:
        state.restore(snapshot.version, snapshot.state)
    while True:
        batch = await store.read_stream(stream, from_version=state.version + 1, limit=page)
        for event in batch:
            state.replay(event.version, codec.decode(event), event.meta(), event.position)
        if len(batch) < page:
            return state, snapshot.version if snapshot else 0


class AggregateInstance:
    """The lightweight child that runs one aggregate (its methods are called through its host)."""

    def __init__(self, app: str, generation: str, aggregate_type: str, aggregate_id: str) -> None:
        self.app, self.generation = app, generation
        self.aggregate_type, self.aggregate_id = aggregate_type, aggregate_id
        self.name = f"{app}/{child_id(aggregate_type, aggregate_id)}"
        self.stream = stream_of(aggregate_type, aggregate_id)
        self._state: AggregateState | None = None
        self._epoch: int | None = None
        self._last_used = time.monotonic()
        self._snapshotting: asyncio.Task[None] | None = None

    async def run(self) -> None:
        """Passivation: exit normally after ``idle_timeout_s`` without a command."""
        spec = await load_spec(self.app, self.generation)
        idle = spec.options.idle_timeout_s
        while True:
            await asyncio.sleep(max(0.05, idle - (time.monotonic() - self._last_used)))
            if time.monotonic() - self._last_used >= idle:
                exit(NORMAL)
                return

    async def handle(self, command: Command) -> CommandResult:
        """Execute ``command`` and append its events; the acknowledgement once durable."""
        self._last_used = time.monotonic()
        spec = await load_spec(self.app, self.generation)
        store = await shared_store(spec.options.store)
        state = await self._hydrated(spec, store)
        known = state.window.get(command.idempotency_key)
        if known is not None:
            return known.model_copy(update={"duplicate": True})
        try:
            events = state.aggregate.execute(command)
        except Exception as exc:
            raise CommandRejected(type(command).__name__, type(exc).__name__, str(exc)) from None
        if not isinstance(events, list):
            raise CommandRejected(type(command).__name__, "TypeError",
                                  f"execute returned {type(events).__name__}, not a list")
        if not events:
            return CommandResult(aggregate_id=self.aggregate_id, version=state.version)
        types = tuple(event_type_of(type(e)) for e in events)
        records = [spec.codec.encode(e, self._metadata(command, types, i == len(events) - 1))
                   for i, e in enumerate(events)]
        try:
            appended = await store.append(self.stream, records, state.version, fence=self._epoch)
        except (WrongExpectedVersion, Fenced):
            self._state = None  # another writer moved the stream: re-read before the next one
            raise
        state.accepted(events, appended.first_version)
        result = CommandResult(aggregate_id=self.aggregate_id, version=state.version,
                               events=types, position=appended.last_position)
        state.window.remember(command.idempotency_key, result)
        every = spec.aggregates[self.aggregate_type].snapshot_every
        if snapshot_due(state.version, state.snapshot_version, every):
            self._snapshot_soon(store, state)
        return result

    async def query(self) -> dict[str, Any]:
        """The aggregate's state (``Aggregate.query``) and version."""
        self._last_used = time.monotonic()
        spec = await load_spec(self.app, self.generation)
        state = await self._hydrated(spec, await shared_store(spec.options.store))
        return {"version": state.version, "state": state.aggregate.query()}

    async def status(self) -> dict[str, Any]:
        state = self._state
        return {"hydrated": state is not None, "epoch": self._epoch,
                "version": state.version if state else None}

    def _metadata(self, command: Command, types: tuple[str, ...], last: bool) -> dict[str, Any]:
        meta: dict[str, Any] = {"command": type(command).__name__, "issued_at": time.time(),
                                "idempotency_key": command.idempotency_key,
                                "correlation_id": command.correlation_id or
                                command.idempotency_key,
                                "causation_id": command.causation_id or
                                command.idempotency_key}
        if last:
            meta["command_events"] = list(types)
        else:
            meta["last_of_command"] = False
        return meta

    async def _hydrated(self, spec: AppSpec, store: EventStore) -> AggregateState:
        if self._state is not None:
            return self._state
        started = time.perf_counter()
        epoch = await epoch_of(self.name)  # Superseded if this one was replaced
        await store.claim(self.stream, epoch)    # Fenced if a newer instance claimed it already
        aggregate = spec.aggregates[self.aggregate_type](self.aggregate_id)
        state, snapshot = await rehydrate(store, spec.codec, aggregate, self.stream)
        self._state, self._epoch = state, epoch
        log.debug("aggregate_hydrated", aggregate=self.name, epoch=epoch, version=state.version,
                  from_snapshot=snapshot,
                  ms=round((time.perf_counter() - started) * 1000, 2))
        return state

    def _snapshot_soon(self, store: EventStore, state: AggregateState) -> None:
        if self._snapshotting is not None and not self._snapshotting.done():
            return
        snapshot = Snapshot(self.stream, state.version, state.snapshot_json(), time.time())
        state.snapshot_version = state.version

        async def save() -> None:
            try:
                await store.save_snapshot(snapshot)
            except Exception as exc:  # a snapshot is an optimisation: the events are the truth
                log.warning("snapshot_failed", aggregate=self.name, error=str(exc))

        self._snapshotting = asyncio.get_running_loop().create_task(save())
