"""What the runner looks at: which children answer by name, which incarnations still run (by
their processes, not by what herd says), the final state for the checker, and what is left of
the run's processes after the cluster was shut down."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import ray

from herd.chaos.ledger import LedgerLog, process_start_ticks
from herd.chaos.workload import NAME_PREFIX
from herd.platform.local import processes
from herd.platform.local.cluster import LocalCluster
from herd.platform.logging import get_logger
from herd.platform.waiting import time_left
from herd.registry import Registry, via

__all__ = ["REGISTRY_PROBE", "alive_pids", "answering", "final_state", "gcs_alive_children",
           "leftover_processes", "run_pids", "wait_answering"]

log = get_logger("herd.chaos.observe")

CHILD_CLASS = "ChaosChild"
PROBE_CALL_S = 2.0


def alive_pids(ledger: LedgerLog, tag: str) -> list[int]:
    """Processes of ``tag``'s incarnations that still run (the pid and its start time match)."""
    return sorted({pid for pid, ticks in ledger.pids_of(tag)
                   if process_start_ticks(pid) == ticks})


REGISTRY_PROBE = "<registry>"


def answering(supervisor: str, tags: Iterable[str], deadline: float) -> set[str]:
    """The children among ``tags`` that answer ``ping`` by name before the deadline (each call
    bounded by ``PROBE_CALL_S``); ``REGISTRY_PROBE`` among them stands for the registry
    itself answering a query (the control plane is back)."""
    answered: set[str] = set()
    for tag in tags:
        if time.monotonic() >= deadline:
            break
        timeout = min(PROBE_CALL_S, time_left(deadline))
        try:
            if tag == REGISTRY_PROBE:
                Registry.get("default").select(prefix=f"{supervisor}/", timeout=timeout)
            else:
                via(f"{supervisor}/{tag}", timeout=timeout).ping.call()
        except Exception:  # not yet: the caller asks again
            continue
        answered.add(tag)
    return answered


def wait_answering(supervisor: str, tags: list[str], deadline: float,
                   still_wanted: Callable[[], Iterable[str]] | None = None,
                   interval_s: float = 0.2) -> set[str]:
    """Ask the children that have not answered yet until all have or the deadline passes;
    returns those still silent. With ``still_wanted``, a tag it no longer lists (a child the
    client terminated meanwhile) is not waited for."""
    pending = set(tags)
    while pending and time.monotonic() < deadline:
        pending -= answering(supervisor, sorted(pending), deadline)
        if still_wanted is not None:
            pending &= set(still_wanted()) | {REGISTRY_PROBE}
        if pending:
            time.sleep(interval_s)
    return pending


def gcs_alive_children() -> int | None:
    """Live chaos children in the GCS actor table (None if the table cannot be read)."""
    try:
        table = ray._private.state.actors(actor_state_name="ALIVE")
    except Exception:
        return None
    return sum(CHILD_CLASS in info["ActorClassName"] for info in table.values())


def final_state(supervisor: str, tags: list[str], ledger: LedgerLog,
                timeout_s: float) -> dict[str, Any]:
    """What the checker compares the history with: per child, its live processes, whether the
    registry names a holder and whether it answers; the chaos names present; the GCS count.
    If the registry cannot be read within ``timeout_s``, ``error`` says so."""
    deadline = time.monotonic() + timeout_s
    try:
        records = {r.key: r for r in _select(f"{supervisor}/", deadline)}
        names = {r.key: True for r in _select(NAME_PREFIX, deadline)}
    except Exception as exc:
        return {"error": f"the registry could not be read: {type(exc).__name__}: {exc}"}
    children: dict[str, dict[str, Any]] = {}
    for tag in sorted(set(tags) | set(ledger.tags)):
        record = records.get(f"{supervisor}/{tag}")
        entry: dict[str, Any] = {"alive_pids": alive_pids(ledger, tag),
                                 "registered": record is not None and record.handle is not None,
                                 "answers": False}
        if record is not None:
            try:
                answer = via(f"{supervisor}/{tag}", timeout=min(5.0, time_left(deadline))
                             ).ping.call()
                entry["answers"] = answer.get("tag") == tag
                entry["pid"] = answer.get("pid")
            except Exception as exc:
                entry["error"] = f"{type(exc).__name__}: {str(exc)[:160]}"
        children[tag] = entry
    return {"children": children, "names": names, "gcs_alive": gcs_alive_children()}


def _select(prefix: str, deadline: float) -> list[Any]:
    """The registry's records under ``prefix``, asking again until the deadline."""
    while True:
        try:
            return Registry.get("default").select(prefix=prefix,
                                                  timeout=min(5.0, time_left(deadline)))
        except Exception:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.5)


def run_pids(cluster: LocalCluster, ledger: LedgerLog) -> list[tuple[int, int]]:
    """(pid, start ticks) of every live process of the run: the nodes' sessions and every
    child incarnation that still runs."""
    found: list[tuple[int, int]] = []
    for node in cluster.nodes:
        for pid in node.pids:
            ticks = process_start_ticks(pid)
            if ticks is not None:
                found.append((pid, ticks))
    for start in ledger.starts:
        if process_start_ticks(start.pid) == start.ticks:
            found.append((start.pid, start.ticks))
    return sorted(set(found))


def leftover_processes(before: list[tuple[int, int]], cluster: LocalCluster) -> list[int]:
    """Processes of the run still alive after its shutdown: any of ``before`` (same pid and
    start time) and anything left in a node's session."""
    left = {pid for pid, ticks in before if process_start_ticks(pid) == ticks}
    for node in cluster.nodes:
        if node.leader_pid:
            left.update(processes.session_pids(node.leader_pid))
    return sorted(left)


