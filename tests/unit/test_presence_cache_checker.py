"""The services checker rules on hand-written histories: each rule passes a history that keeps
its promise and names the violation in one that breaks it."""

from __future__ import annotations

from typing import Any

from herd.chaos.history import Event, History
from herd.chaos.services_checker import check_cache_stale, check_presence_dead, check_services


def history_of(*ops: tuple[str, dict[str, Any], float, float, dict[str, Any] | None]) -> History:
    """Operations as (f, value, invoked at, completed at, ok value or None for info)."""
    events: list[Event] = []
    for n, (f, value, start, end, ok) in enumerate(ops, start=1):
        events.append(Event(len(events), n, "client", "invoke", f, value, start))
        events.append(Event(len(events), n, "client", "ok" if ok is not None else "info", f,
                            ok if ok is not None else value, end))
    events.sort(key=lambda e: e.time)
    return History([Event(i, e.op, e.process, e.type, e.f, e.value, e.time)
                    for i, e in enumerate(events)])


def observe(at: float, views: dict[str, Any], f: str = "observe_presence") -> tuple[Any, ...]:
    return (f, {}, at, at + 0.01, {"views": views})


def test_dead_process_seen_after_the_bound_is_a_violation() -> None:
    kill = ("kill", {"key": "m1"}, 1.0, 1.0, {"key": "m1"})
    fine = history_of(kill, observe(1.5, {"n1": ["m1", "m2"]}), observe(2.2, {"n1": ["m2"]}))
    assert check_presence_dead(fine, bound_s=1.0) == []
    stale = history_of(kill, observe(2.5, {"n1": ["m2"], "n2": ["m1"]}))
    [violation] = check_presence_dead(stale, bound_s=1.0)
    assert violation.rule == "presence_dead" and violation.subject == "m1"
    assert "n2" in violation.detail


def test_unacknowledged_kill_does_not_count() -> None:
    history = history_of(("kill", {"key": "m1"}, 1.0, 1.0, None), observe(5.0, {"n1": ["m1"]}))
    assert check_presence_dead(history, bound_s=1.0) == []


def put(seq: int, start: float, end: float, ok: bool = True) -> tuple[Any, ...]:
    value = {"key": "k", "seq": seq}
    return ("cache_put", value, start, end, value if ok else None)


def delete(seq: int, start: float, end: float) -> tuple[Any, ...]:
    value = {"key": "k", "seq": seq}
    return ("cache_delete", value, start, end, value)


def cache_view(at: float, value: Any) -> tuple[Any, ...]:
    return observe(at, {"n1": {"k": value}}, "observe_cache")


def test_value_older_than_the_settled_write_is_stale() -> None:
    writes = (put(1, 0.0, 0.1), put(2, 1.0, 1.1))
    fine = history_of(*writes, cache_view(1.2, {"seq": 1}), cache_view(2.0, {"seq": 2}))
    assert check_cache_stale(fine, settle_s=0.5) == []  # 1.2 s: write 2 not settled yet
    stale = history_of(*writes, cache_view(2.0, {"seq": 1}))
    [violation] = check_cache_stale(stale, settle_s=0.5)
    assert violation.rule == "cache_stale" and "write 2" in violation.detail


def test_later_or_concurrent_writes_and_deletes_are_allowed() -> None:
    history = history_of(put(1, 0.0, 0.1), put(2, 1.0, 3.0, ok=False), delete(3, 3.5, 3.6),
                         cache_view(2.0, {"seq": 2}), cache_view(5.0, None))
    assert check_cache_stale(history, settle_s=0.5) == []
    resurrected = history_of(put(1, 0.0, 0.1), delete(2, 1.0, 1.1), cache_view(3.0, {"seq": 1}))
    assert [v.rule for v in check_services(resurrected, 1.0, 0.5)] == ["cache_stale"]
    deleted_too_early = history_of(put(1, 0.0, 0.1), cache_view(3.0, None))
    assert [v.subject for v in check_cache_stale(deleted_too_early, 0.5)] == ["k"]
