"""What the event store takes and gives back: plain frozen records (no I/O, no Ray).

Event payloads and metadata travel as JSON text: the codec (``herd.eventsourcing.codec``)
encodes a pydantic event once, the store writes that text as it is and readers decode it, so
nothing is serialised twice on the hot path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

__all__ = ["ANY", "NO_STREAM", "AppendRequest", "AppendResult", "NewEvent", "Parked",
           "RecordedEvent", "Snapshot", "StreamInfo", "StreamState"]

#: ``expected_version`` meaning "whatever the stream's version is".
ANY: int | None = None
#: ``expected_version`` meaning "the stream has no event yet".
NO_STREAM = 0


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to append: its type name, schema version, payload and metadata as JSON text."""

    type: str
    data: str
    schema_version: int = 1
    metadata: str = "{}"


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """An event as stored: ``version`` counts from 1 within its stream, ``position`` is its
    place in the store's global order (gap-free for readers: every reader sees the events in
    this order and never one of a lower position after one of a higher)."""

    position: int
    stream: str
    version: int
    type: str
    schema_version: int
    data: str
    metadata: str
    recorded_at: float

    def meta(self) -> dict[str, Any]:
        value = json.loads(self.metadata)
        return value if isinstance(value, dict) else {}


@dataclass(frozen=True, slots=True)
class AppendRequest:
    """Append ``events`` to ``stream`` if it is at ``expected_version`` (None: any version) and
    no writer with a higher epoch than ``fence`` has claimed it (None: unfenced). An empty
    ``events`` with a ``fence`` is a claim: later appends with a lower epoch are refused."""

    stream: str
    events: tuple[NewEvent, ...]
    expected_version: int | None = ANY
    fence: int | None = None


@dataclass(frozen=True, slots=True)
class AppendResult:
    """Where an append landed: the stream's versions and global positions it took (for an
    empty append, ``first_* > last_*`` and ``last_version`` is the stream's version)."""

    stream: str
    first_version: int
    last_version: int
    first_position: int
    last_position: int


@dataclass(frozen=True, slots=True)
class StreamState:
    """A stream's version (0: no event) and the highest writer epoch that claimed it."""

    version: int
    fence: int = 0


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """One stream as ``EventStore.streams`` lists it."""

    stream: str
    version: int
    fence: int
    updated_at: float


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The state of a stream's aggregate at ``version`` (JSON text), to rehydrate faster."""

    stream: str
    version: int
    state: str
    taken_at: float


@dataclass(frozen=True, slots=True)
class Parked:
    """A handler stopped at ``position`` after its retries: the event there keeps failing."""

    handler: str
    position: int
    error: str
    attempts: int
    parked_at: float
