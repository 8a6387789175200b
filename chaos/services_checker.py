"""Checker rules of the services workload (pure; no Ray), over a ``History``:

* ``presence_dead``: no entry of a dead process is visible after the bound. A ``kill`` of a
  tracked process acknowledged at time t means no presence observation started after
  ``t + bound_s`` shows its key on any node.
* ``cache_stale``: no cached value older than its key's last acknowledged write once
  invalidation settled. Writes to a key are sequential and numbered (``seq``; a delete has one
  too); an observation of the key started at T must show the write acknowledged last before
  ``T - settle_s`` or one invoked after it (a later, maybe concurrent write).
"""

from __future__ import annotations

from typing import Any

from herd.chaos.checker import Violation
from herd.chaos.history import Event, History

__all__ = ["check_cache_stale", "check_presence_dead", "check_services"]


def check_services(history: History, presence_bound_s: float,
                   cache_settle_s: float) -> list[Violation]:
    return check_presence_dead(history, presence_bound_s) + check_cache_stale(history,
                                                                              cache_settle_s)


def _acknowledged(history: History, f: str) -> list[tuple[Event, Event]]:
    return [(invoke, outcome) for invoke, outcome in history.completions()
            if invoke.f == f and outcome is not None and outcome.type == "ok"]


def check_presence_dead(history: History, bound_s: float) -> list[Violation]:
    out: list[Violation] = []
    killed = {invoke.value["key"]: outcome.time
              for invoke, outcome in _acknowledged(history, "kill")}
    for invoke, outcome in _acknowledged(history, "observe_presence"):
        for node, keys in outcome.value["views"].items():
            for key in keys:
                dead_at = killed.get(key)
                if dead_at is not None and invoke.time > dead_at + bound_s:
                    out.append(Violation(
                        "presence_dead", key,
                        f"seen on {node[:12]} at {invoke.time:.2f} s, killed at {dead_at:.2f} s "
                        f"(bound {bound_s} s)"))
    return out


def _writes(history: History) -> dict[str, list[tuple[float, float | None, int]]]:
    """Per key: (invoked at, acknowledged at or None, seq), in invocation order."""
    writes: dict[str, list[tuple[float, float | None, int]]] = {}
    for invoke, outcome in history.completions():
        if invoke.f in ("cache_put", "cache_delete"):
            acked = outcome.time if outcome is not None and outcome.type == "ok" else None
            writes.setdefault(invoke.value["key"], []).append(
                (invoke.time, acked, invoke.value["seq"]))
    return writes


def _seq_of(value: Any) -> int | None:
    return value["seq"] if isinstance(value, dict) else None


def check_cache_stale(history: History, settle_s: float) -> list[Violation]:
    out: list[Violation] = []
    writes = _writes(history)
    deletes = {(invoke.value["key"], invoke.value["seq"]) for invoke, _ in history.completions()
               if invoke.f == "cache_delete"}
    for invoke, outcome in _acknowledged(history, "observe_cache"):
        for node, seen in outcome.value["views"].items():
            for key, value in seen.items():
                settled = [w for w in writes.get(key, [])
                           if w[1] is not None and w[1] <= invoke.time - settle_s]
                if not settled:
                    continue
                floor_seq = settled[-1][2]
                allowed = {seq for _, _, seq in writes[key] if seq >= floor_seq}
                seq = _seq_of(value)
                fine = (seq in allowed if seq is not None
                        else any((key, s) in deletes for s in allowed))
                if not fine:
                    out.append(Violation(
                        "cache_stale", key,
                        f"{node[:12]} showed {value!r} at {invoke.time:.2f} s; write {floor_seq} "
                        f"was acknowledged by {invoke.time - settle_s:.2f} s"))
    return out
