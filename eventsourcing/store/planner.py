"""How a batch of appends is decided (pure, shared by every backend).

A backend locks the store for writing, reads the state of the batch's streams and the head of
the global order, calls :func:`plan_batch`, writes the rows and stream states it returns and
commits: the whole batch is one transaction. Each request is checked against the state left by
the requests before it in the batch, so two appends to one stream in one batch behave as if
committed one after the other; a refused request (wrong expected version, fenced) writes
nothing and does not affect the others.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from herd.eventsourcing.errors import Fenced, WrongExpectedVersion
from herd.eventsourcing.store.records import AppendRequest, AppendResult, StreamState

__all__ = ["BatchPlan", "Row", "plan_batch"]

#: (position, stream, version, type, schema_version, data, metadata, recorded_at)
Row = tuple[int, str, int, str, int, str, str, float]
Outcome = AppendResult | WrongExpectedVersion | Fenced


@dataclass
class BatchPlan:
    """The rows to insert, the new state of each touched stream, one outcome per request (in
    order) and the new head position."""

    rows: list[Row] = field(default_factory=list)
    streams: dict[str, StreamState] = field(default_factory=dict)
    outcomes: list[Outcome] = field(default_factory=list)
    head: int = 0


def plan_batch(requests: Sequence[AppendRequest], streams: Mapping[str, StreamState],
               head: int, now: float) -> BatchPlan:
    """Decide ``requests`` in order against ``streams`` (the stored state of the streams they
    name; a missing one has no event) with the global order at ``head``."""
    plan = BatchPlan(head=head)
    for request in requests:
        state = plan.streams.get(request.stream) or streams.get(request.stream) or StreamState(0)
        outcome = _decide(request, state)
        if outcome is not None:
            plan.outcomes.append(outcome)
            continue
        first_position = plan.head + 1
        for offset, event in enumerate(request.events, start=1):
            plan.rows.append((plan.head + offset, request.stream, state.version + offset,
                              event.type, event.schema_version, event.data, event.metadata, now))
        count = len(request.events)
        plan.head += count
        fence = max(state.fence, request.fence or 0)
        plan.streams[request.stream] = StreamState(state.version + count, fence)
        plan.outcomes.append(AppendResult(request.stream, state.version + 1,
                                          state.version + count, first_position, plan.head))
    return plan


def _decide(request: AppendRequest, state: StreamState) -> WrongExpectedVersion | Fenced | None:
    if request.fence is not None and request.fence < state.fence:
        return Fenced(request.stream, request.fence, state.fence)
    expected = request.expected_version
    if expected is not None and expected != state.version:
        return WrongExpectedVersion(request.stream, expected, state.version)
    return None
