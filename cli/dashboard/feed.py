"""What keeps the census current, in threads of the CLI process:

* the registry's watch of every record (one long poll per shard): child records of dynamic
  supervisors become rows, their transitions timeline events (pushed by the registry, not
  polled per child);
* the membership's event watch: node up / down as they happen, the GCS node table every
  ``POLL_S`` for the rest (head flag, regions);
* every ``POLL_S``: the static supervision trees (a handful of calls) and the panels. A
  supervisor that does not answer (Ray is restarting its actor) keeps its last rows and shows
  as unavailable; only the cluster itself failing counts as ``reconnecting``.

Each loop survives the cluster going away (a head restart): it reports ``reconnecting`` with
the error, waits, and starts again; the first success after that reports ``connected`` and puts
a ``reconnected`` event on the timeline.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import ray
from ray.exceptions import RayError

from herd.cli.dashboard.census import Census, ChildRow, Event, NodeRow, coalesce
from herd.cli.dashboard.panels import registered_panels
from herd.platform import gcs
from herd.platform.errors import HerdError
from herd.platform.logging import get_logger
from herd.platform.membership import Membership, NodeUp
from herd.registry import Registry
from herd.registry.records import Unregistered, Updated
from herd.supervisors import Supervisor
from herd.supervisors.dynamic.child_record import SUP_META
from herd.supervisors.dynamic.records import info_from
from herd.supervisors.otp.info import ChildInfo

POLL_S = 2.0
WATCH_WAIT_S = 1.0
RETRY_S = 1.0
CALL_TIMEOUT_S = 5.0
STATIC_PREFIX = "herd/sup/"

Publish = Callable[[str, Any], None]
log = get_logger("herd.dashboard")


class Feed:
    def __init__(self, census: Census, publish: Publish, registry: str = "default") -> None:
        self.census = census
        self.publish = publish
        self.registry = registry
        self.lock = threading.Lock()
        self.trees: dict[str, list[dict[str, Any]]] = {}
        self.sections: dict[str, Any] = {}
        self.connected = True
        self.detail = ""
        self._failing: dict[str, str] = {}  # loop -> its last error, while it fails
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for loop in (self._registry_loop, self._membership_loop, self._poll_loop):
            thread = threading.Thread(target=self._forever, args=(loop,), daemon=True,
                                      name=f"dashboard-{loop.__name__}")
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()

    # ------------------------------------------------------------------ loops
    def _forever(self, loop: Callable[[], None]) -> None:
        while not self._stop.is_set():
            try:
                loop()
            except Exception as exc:  # the cluster went away (or a call timed out): again
                self._status(loop.__name__, f"{type(exc).__name__}: {str(exc)[:160]}")
                self._stop.wait(RETRY_S)

    def _registry_loop(self) -> None:
        watch = Registry.start(self.registry, timeout=CALL_TIMEOUT_S).watch(
            "", initial=True, timeout=CALL_TIMEOUT_S)
        try:
            while not self._stop.is_set():
                self._apply_records(watch.poll(WATCH_WAIT_S))
                self._status("_registry_loop", None)
        finally:
            watch.close()

    def _membership_loop(self) -> None:
        with Membership.get(timeout=CALL_TIMEOUT_S).watch(timeout=CALL_TIMEOUT_S) as watch:
            while not self._stop.is_set():
                changes = watch.poll(WATCH_WAIT_S)
                self._status("_membership_loop", None)
                with self.lock:
                    events = [self.census.node(NodeRow(e.node_id, e.region,
                                                       isinstance(e, NodeUp),
                                                       e.node.is_head), e.at)
                              for e in changes]
                self._emit([e for e in events if e is not None])

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            self._poll_nodes()
            self._poll_static()
            self._poll_panels()
            self._status("_poll_loop", None)
            self._stop.wait(POLL_S)

    # ------------------------------------------------------------------ registry
    def _apply_records(self, changes: list[Any]) -> None:
        events: list[Event] = []
        with self.lock:
            live = {n.node_id for n in self.census.nodes.values() if n.alive} or None
            for change in changes:
                reg = change.registration
                sup = (reg.meta or {}).get(SUP_META)
                if sup is None:
                    continue
                child_id = reg.key[len(sup) + 1:]
                if isinstance(change, Unregistered):
                    event = self.census.remove(sup, child_id)
                else:
                    if isinstance(change, Updated) and change.reason.startswith("holder"):
                        self.census.exited(sup, child_id, change.reason)
                    event = self.census.upsert(_dynamic_row(sup, info_from(reg, live)))
                if event is not None:
                    events.append(event)
        self._emit(coalesce(events))

    # ------------------------------------------------------------------ polls
    def _poll_nodes(self) -> None:
        rows = [NodeRow(n.node_id, n.region, n.alive, n.is_head) for n in gcs.nodes()]
        with self.lock:
            events = [self.census.node(row) for row in rows]
        self._emit([e for e in events if e is not None])

    def _poll_static(self) -> None:
        names = sorted(a["name"][len(STATIC_PREFIX):]
                       for a in ray.util.list_named_actors(all_namespaces=True)
                       if a["name"].startswith(STATIC_PREFIX)
                       and "/" not in a["name"][len(STATIC_PREFIX):])
        events: list[Event] = []
        trees_before = dict(self.trees)
        for name in names:
            sup = Supervisor.get(name)
            try:
                reason = sup.stopped_reason(timeout=CALL_TIMEOUT_S)
                tree = [] if reason else sup.which_children(recursive=True,
                                                            timeout=CALL_TIMEOUT_S)
            except (HerdError, RayError) as exc:  # its actor is being restarted: keep its rows
                with self.lock:
                    self.census.unavailable[name] = f"{type(exc).__name__}: {str(exc)[:160]}"
                continue
            with self.lock:
                self.census.unavailable.pop(name, None)
                regions = {n.node_id: n.region for n in self.census.nodes.values()}
                rows = list(_static_rows(name, "", tree, regions))
                if reason:
                    self.census.stopped[name] = reason
                events += self.census.replace_static(name, rows)
                self.trees[name] = [_tree(c) for c in tree]
        if self.trees != trees_before:
            self.publish("trees", dict(self.trees))
        self._emit(coalesce(events))

    def _poll_panels(self) -> None:
        sections = {}
        for panel in registered_panels():
            try:
                sections[panel.name] = {"title": panel.title, **panel.section()}
            except Exception as exc:  # one panel's failure must not hide the others
                sections[panel.name] = {"title": panel.title, "error": str(exc)[:200],
                                        "columns": [], "rows": []}
        with self.lock:
            changed = sections != self.sections
            self.sections = sections
        if changed:
            self.publish("panels", sections)

    # ------------------------------------------------------------------ output
    def _emit(self, events: list[Event]) -> None:
        for event in events:
            self.publish("event", event.to_json())

    def _status(self, loop: str, error: str | None) -> None:
        """Loop ``loop`` succeeded (``error`` None) or failed; the cluster counts as connected
        while no loop fails, and a change of that is published."""
        with self.lock:
            if error is None:
                self._failing.pop(loop, None)
            else:
                self._failing[loop] = error
            connected = not self._failing
            detail = next(iter(self._failing.values()), "")
            if connected == self.connected and (connected or detail == self.detail):
                return
            was = self.connected
            self.connected, self.detail = connected, detail
        self.publish("status", {"connected": connected, "detail": detail})
        if connected and not was:
            log.warning("dashboard_reconnected")
            self._emit([Event("reconnected", time.time(), detail="the cluster answers again")])
        elif not connected:
            log.warning("dashboard_cluster_unreachable", detail=detail)


def _dynamic_row(sup: str, info: Any) -> ChildRow:
    return ChildRow(sup, info.id, info.kind, info.status, info.node_id, info.region,
                    info.epoch, info.incarnation, info.restarts, info.failovers, info.restart,
                    info.started_at)


def _static_rows(sup: str, path: str, children: list[ChildInfo],
                 regions: dict[str, str | None]) -> Any:
    for child in children:
        child_id = f"{path}{child.id}"
        yield ChildRow(sup, child_id, child.type, child.status, child.node_id,
                       regions.get(child.node_id or ""), restart=child.restart, static=True)
        if child.children:
            yield from _static_rows(sup, f"{child_id}/", child.children, regions)


def _tree(child: ChildInfo) -> dict[str, Any]:
    return {"id": child.id, "type": child.type, "status": child.status,
            "node_id": child.node_id, "pid": child.pid,
            "children": [_tree(c) for c in child.children or []]}
