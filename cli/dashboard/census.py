"""The dashboard's picture of the cluster, without Ray: children of every supervisor, nodes, and
what changed. The feed applies records and node events; the server reads summaries (counts per
supervisor, node and status: small whatever the census size), one page of children at a time,
and the timeline events :meth:`Census.upsert` and friends return.

A transition of a child's record is an event: a new record (``started``), a higher
``failovers`` (``failed_over``), another owner node (``moved``), a higher ``incarnation`` on the
same node (``restarted``), a record removed (``removed``). :func:`coalesce` folds many events of
one kind, supervisor and node pair (a failover of 10 000 children) into one line.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import asdict, dataclass, field, replace
from typing import Any

HISTORY_PER_CHILD = 20
COALESCE_ABOVE = 3
SAMPLE_IDS = 5
PAGE_LIMIT_MAX = 200


@dataclass(frozen=True)
class ChildRow:
    supervisor: str
    id: str
    kind: str
    status: str
    node_id: str | None
    region: str | None
    epoch: int | None = None
    incarnation: int | None = None
    restarts: int | None = None
    failovers: int | None = None
    restart: str | None = None
    started_at: float | None = None
    static: bool = False


@dataclass
class Event:
    kind: str
    at: float
    supervisor: str | None = None
    child_id: str | None = None
    node_id: str | None = None
    from_node: str | None = None
    region: str | None = None
    count: int = 1
    children: list[str] = field(default_factory=list)
    detail: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in (None, [])}


@dataclass
class NodeRow:
    node_id: str
    region: str | None
    alive: bool
    head: bool = False


def transition(old: ChildRow | None, new: ChildRow, now: float) -> Event | None:
    """The event a record's change is, or None (epoch bumps, status flips)."""
    def event(kind: str, detail: str | None = None) -> Event:
        return Event(kind, now, new.supervisor, new.id, new.node_id,
                     None if old is None else old.node_id, new.region, detail=detail)

    if old is None:
        return replace(event("started"), from_node=None)
    if (new.failovers or 0) > (old.failovers or 0):
        return event("failed_over")
    if new.node_id != old.node_id:
        return event("moved")
    if (new.incarnation or 0) > (old.incarnation or 0):
        return replace(event("restarted", f"incarnation {new.incarnation}"), from_node=None)
    return None


def coalesce(events: list[Event]) -> list[Event]:
    """Events of one kind, supervisor and (from, to) node pair folded into one when there are
    more than ``COALESCE_ABOVE`` of them; order of first appearance kept."""
    groups: dict[tuple[Any, ...], list[Event]] = {}
    for event in events:
        key = (event.kind, event.supervisor, event.from_node, event.node_id)
        groups.setdefault(key, []).append(event)
    folded = []
    for group in groups.values():
        if len(group) <= COALESCE_ABOVE or group[0].child_id is None:
            folded += group
            continue
        first = group[0]
        folded.append(Event(first.kind, first.at, first.supervisor, None, first.node_id,
                            first.from_node, first.region, count=len(group),
                            children=[e.child_id for e in group[:SAMPLE_IDS] if e.child_id]))
    return folded


class Census:
    def __init__(self) -> None:
        self.children: dict[tuple[str, str], ChildRow] = {}
        self.history: dict[tuple[str, str], deque[dict[str, Any]]] = {}
        self.nodes: dict[str, NodeRow] = {}
        self.stopped: dict[str, str] = {}  # supervisor -> why it stopped
        self.unavailable: dict[str, str] = {}  # supervisor -> why its last poll failed
        self.last_exit: dict[tuple[str, str], tuple[float, str]] = {}

    # ------------------------------------------------------------------ changes
    def upsert(self, row: ChildRow, now: float | None = None) -> Event | None:
        key = (row.supervisor, row.id)
        event = transition(self.children.get(key), row, time.time() if now is None else now)
        self.children[key] = row
        if event is not None:
            self.history.setdefault(key, deque(maxlen=HISTORY_PER_CHILD)).append(event.to_json())
        return event

    def exited(self, supervisor: str, child_id: str, reason: str,
               now: float | None = None) -> None:
        """The registry's reason for the end of a child's incarnation ("holder exited: ...")."""
        self.last_exit[(supervisor, child_id)] = (time.time() if now is None else now, reason)

    def remove(self, supervisor: str, child_id: str, now: float | None = None) -> Event | None:
        row = self.children.pop((supervisor, child_id), None)
        self.history.pop((supervisor, child_id), None)
        self.last_exit.pop((supervisor, child_id), None)
        if row is None:
            return None
        return Event("removed", time.time() if now is None else now, supervisor, child_id,
                     row.node_id, region=row.region)

    def replace_static(self, supervisor: str, rows: list[ChildRow],
                       now: float | None = None) -> list[Event]:
        """A static supervisor's tree as polled: rows upserted, the missing ones removed."""
        events = [e for e in (self.upsert(r, now) for r in rows) if e is not None]
        current = {r.id for r in rows}
        for sup, child_id in [k for k in self.children if k[0] == supervisor]:
            if child_id not in current:
                removed = self.remove(sup, child_id, now)
                if removed is not None:
                    events.append(removed)
        return events

    def node(self, row: NodeRow, now: float | None = None) -> Event | None:
        old = self.nodes.get(row.node_id)
        self.nodes[row.node_id] = row
        if old is not None and old.alive == row.alive:
            return None
        if old is None and row.alive:
            return None  # first sight of a live node: not news
        return Event("node_up" if row.alive else "node_down",
                     time.time() if now is None else now, node_id=row.node_id,
                     region=row.region)

    # ------------------------------------------------------------------ views
    def summary(self) -> dict[str, Any]:
        """Per supervisor: children by node and by status; per node: children; totals."""
        sups: dict[str, dict[str, Any]] = {}
        per_node: Counter[str] = Counter()
        for row in self.children.values():
            entry = sups.setdefault(row.supervisor, {
                "name": row.supervisor, "kind": "static" if row.static else "dynamic",
                "children": 0, "by_node": Counter(), "by_status": Counter(),
                "by_kind": Counter()})
            entry["children"] += 1
            entry["by_node"][row.node_id or "-"] += 1
            entry["by_status"][row.status] += 1
            entry["by_kind"][row.kind] += 1
            per_node[row.node_id or "-"] += 1
        for key, reasons in (("stopped", self.stopped), ("unavailable", self.unavailable)):
            for name, why in reasons.items():
                sups.setdefault(name, {"name": name, "kind": "static", "children": 0,
                                       "by_node": {}, "by_status": {}, "by_kind": {}})[key] = why
        nodes = [{**asdict(n), "children": per_node.get(n.node_id, 0)}
                 for n in sorted(self.nodes.values(), key=lambda n: (not n.alive, n.node_id))]
        return {"supervisors": [{**s, **{k: dict(s[k]) for k in ("by_node", "by_status",
                                                                  "by_kind")}}
                                for s in sorted(sups.values(), key=lambda s: s["name"])],
                "nodes": nodes, "children": len(self.children)}

    def page(self, supervisor: str | None = None, query: str = "", offset: int = 0,
             limit: int = 50) -> dict[str, Any]:
        """One page of children (sorted by supervisor and id) matching ``query`` (a substring
        of the id, node, region or status) under ``supervisor`` (all when None)."""
        limit = max(1, min(limit, PAGE_LIMIT_MAX))
        needle = query.strip().lower()
        rows = [r for r in self.children.values()
                if (supervisor is None or r.supervisor == supervisor)
                and (not needle or any(needle in (v or "").lower()
                                       for v in (r.id, r.node_id, r.region, r.status)))]
        rows.sort(key=lambda r: (r.supervisor, r.id))
        return {"total": len(rows), "offset": offset, "limit": limit,
                "rows": [asdict(r) for r in rows[offset:offset + limit]]}

    def child(self, supervisor: str, child_id: str) -> dict[str, Any] | None:
        row = self.children.get((supervisor, child_id))
        if row is None:
            return None
        exit_at, reason = self.last_exit.get((supervisor, child_id), (None, None))
        return {**asdict(row), "history": list(self.history.get((supervisor, child_id), [])),
                "last_exit": reason, "last_exit_at": exit_at}
