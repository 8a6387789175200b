"""``herd events``: look into an event store (no cluster needed: it reads the store itself).

    herd events streams --store sqlite:///var/herd/bank.db
    herd events show Account-a-1 --store ...      # a stream's events, oldest first
    herd events tail --store ...                   # follow every new event (Ctrl-C stops)
    herd events projections --store ...            # each handler's position, lag, parking
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import click

from herd.cli.common import echo, echo_table
from herd.eventsourcing.errors import StoreError
from herd.eventsourcing.report import handler_report
from herd.eventsourcing.store.open import open_store
from herd.eventsourcing.store.records import RecordedEvent

STORE_HELP = "store URL: sqlite://PATH or postgresql://... (default: $HERD_EVENT_STORE)"
TIMEOUT_S = 30.0


def _url(store: str | None) -> str:
    url = store or os.environ.get("HERD_EVENT_STORE")
    if not url:
        raise click.UsageError("give --store URL (or set HERD_EVENT_STORE)")
    return url


def _run(coroutine: Any) -> Any:
    try:
        return asyncio.run(asyncio.wait_for(coroutine, TIMEOUT_S))
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None


def _line(event: RecordedEvent) -> str:
    return (f"{event.position:>8}  {event.stream}@{event.version}  {event.type}"
            f"(v{event.schema_version})  {event.data}  {event.metadata}")


@click.group()
def events() -> None:
    """Inspect an event store: streams, events, live tail, handler positions."""


@events.command()
@click.option("--store", default=None, help=STORE_HELP)
@click.option("--limit", default=1000, show_default=True, type=click.IntRange(min=1))
def streams(store: str | None, limit: int) -> None:
    """The streams, with their version and writer epoch."""
    async def body() -> list[dict[str, Any]]:
        es = await open_store(_url(store))
        try:
            return [{"stream": s.stream, "version": s.version, "epoch": s.fence}
                    for s in await es.streams(limit=limit)]
        finally:
            await es.close()
    echo_table(_run(body()), ["stream", "version", "epoch"])


@events.command()
@click.argument("stream")
@click.option("--store", default=None, help=STORE_HELP)
@click.option("--from-version", default=None, type=click.IntRange(min=1))
@click.option("--backward", is_flag=True, help="newest first")
@click.option("--limit", default=None, type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True, help="one JSON object per event")
def show(stream: str, store: str | None, from_version: int | None, backward: bool,
         limit: int | None, as_json: bool) -> None:
    """The events of STREAM."""
    async def body() -> list[RecordedEvent]:
        es = await open_store(_url(store))
        try:
            return await es.read_stream(stream, from_version, backward, limit)
        finally:
            await es.close()
    found = _run(body())
    if not found:
        raise click.ClickException(f"stream {stream!r} has no events")
    for event in found:
        echo(json.dumps({"position": event.position, "stream": event.stream,
                         "version": event.version, "type": event.type,
                         "data": json.loads(event.data), "metadata": event.meta()})
             if as_json else _line(event))


@events.command()
@click.option("--store", default=None, help=STORE_HELP)
@click.option("--from-position", default=None, type=click.IntRange(min=0),
              help="start after this position (default: the current head: only new events)")
@click.option("--count", default=None, type=click.IntRange(min=1),
              help="stop after this many events")
def tail(store: str | None, from_position: int | None, count: int | None) -> None:
    """Follow the store: print every event as it commits."""
    async def body() -> None:
        es = await open_store(_url(store))
        try:
            start = await es.head() if from_position is None else from_position
            seen = 0
            async for batch in es.subscribe(start):
                for event in batch:
                    echo(_line(event))
                    seen += 1
                    if count is not None and seen >= count:
                        return
        finally:
            await es.close()
    try:
        asyncio.run(body())
    except KeyboardInterrupt:
        pass
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None


@events.command()
@click.option("--store", default=None, help=STORE_HELP)
def projections(store: str | None) -> None:
    """Each handler's position, lag behind the head, and where it is parked."""
    rows = _run(handler_report(_url(store)))
    for row in rows:
        park = row.pop("parked")
        row["parked"] = "" if park is None else (f"at {park['position']} after "
                                                 f"{park['attempts']} attempts: {park['error']}")
    echo_table(rows, ["handler", "position", "lag", "parked"])
