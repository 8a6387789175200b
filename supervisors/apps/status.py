"""The live view of running apps for ``herd status``: supervision trees and the node table.

:func:`status` gathers it (JSON-ready: unknown values are ``None``); :func:`render` turns it into
lines a person reads (unknown values shown as ``-``, durations as ``12.3 s`` / ``4 min 5 s``).
A stopped supervisor shows as ``stopped`` with its reason (which child, which intensity); one whose
actor Ray is restarting (its node or process died) as ``restarting`` until its children are back.
"""

from __future__ import annotations

import time
from typing import Any

from herd.platform import gcs
from herd.platform.errors import HerdError
from herd.registry import Registration, Registry
from herd.supervisors.apps.app import app_record, running_apps
from herd.supervisors.dynamic.supervisor import DynamicSupervisor
from herd.supervisors.errors import SupervisorError, SupervisorRestarting, SupervisorStopped
from herd.supervisors.otp.info import ChildInfo
from herd.supervisors.otp.supervisor import Supervisor

Row = dict[str, Any]


def node_table() -> list[Row]:
    rows = []
    for node in sorted(gcs.nodes(), key=lambda n: (not n.alive, n.node_id)):
        rows.append({"node_id": node.node_id, "region": node.region, "zone": node.zone,
                     "alive": node.alive, "head": node.is_head,
                     "cpu": node.resources.get("CPU", 0)})
    return rows


def status(app: str | None = None) -> dict[str, Any]:
    """``{"apps": [...], "nodes": [...]}`` for one app or all running apps."""
    names = [app] if app else running_apps()
    if app and app_record(app) is None:
        raise HerdError(f"no app named {app!r} is running")
    nodes = node_table()
    regions = {n["node_id"]: n["region"] for n in nodes}
    return {"apps": [_app(name, regions) for name in names], "nodes": nodes}


def _app(name: str, regions: dict[str, str | None]) -> Row:
    record = app_record(name) or {}
    sups = []
    for sup in record.get("supervisors", []):
        try:
            reason, children = (_dynamic(sup["name"]) if sup["kind"] == "dynamic"
                                else _static(sup["name"], regions))
            state = "running" if reason is None else "stopped"
        except SupervisorRestarting:  # Ray restarted its actor; its children come back shortly
            state, reason, children = "restarting", None, []
        except (SupervisorStopped, SupervisorError) as exc:
            state, reason, children = "stopped", str(exc), []
        sups.append({"name": sup["name"], "kind": sup["kind"], "status": state,
                     "reason": reason, "children": children})
    started = record.get("started_at")
    return {"app": name, "source": record.get("source"), "started_at": started,
            "uptime_s": _since(started), "supervisors": sups}


def _since(at: float | None) -> float | None:
    return round(time.time() - at, 1) if at else None


def _dynamic(name: str) -> tuple[str | None, list[Row]]:
    """(why it stopped, or None; its children)."""
    sup = DynamicSupervisor.get(name, include_stopped=True)
    reason = sup.stopped_reason()
    if reason is not None:
        return reason, []
    return None, [{"id": c.id, "status": c.status, "node_id": c.node_id, "region": c.region,
                   "epoch": c.epoch, "incarnation": c.incarnation, "restarts": c.restarts,
                   "failovers": c.failovers, "uptime_s": _since(c.started_at)}
                  for c in sup.which_children()]


def _static(name: str, regions: dict[str, str | None]) -> tuple[str | None, list[Row]]:
    """(why it stopped, or None; its tree). A child's epoch and uptime come from its registry
    record ``<supervisor path>/<id>`` (none for a supervisor without a registry)."""
    sup = Supervisor.get(name)
    reason = sup.stopped_reason()
    if reason is not None:
        return reason, []
    records = {r.key: r for r in Registry.start("default").select(prefix=f"{name}/")}

    def row(path: str, child: ChildInfo) -> Row:
        record: Registration | None = records.get(f"{path}/{child.id}")
        entry: Row = {
            "id": child.id, "status": child.status, "type": child.type,
            "restart": child.restart, "node_id": child.node_id,
            "region": regions.get(child.node_id or ""), "pid": child.pid,
            "epoch": record.epoch if record else None,
            "uptime_s": _since(record.registered_at) if record else None}
        if child.children is not None:
            entry["children"] = [row(f"{path}/{child.id}", grandchild)
                                 for grandchild in child.children]
        return entry

    return None, [row(name, child) for child in sup.which_children(recursive=True)]


def duration(seconds: float | None) -> str:
    """``-``, ``8.2 s``, ``4 min 5 s`` or ``2 h 3 min``."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def _shown(value: Any) -> str:
    return "-" if value is None else str(value)


def render(view: dict[str, Any]) -> list[str]:
    """Human-readable lines: each app's tree, then the node table."""
    lines = []
    for app in view["apps"]:
        lines.append(f"app {app['app']}  (up {duration(app['uptime_s'])}, "
                     f"from {_shown(app['source'])})")
        for sup in app["supervisors"]:
            state = sup["status"] if sup["reason"] is None else f"stopped: {sup['reason']}"
            lines.append(f"  {sup['kind']} supervisor {sup['name']}: {state}")
            lines += _render_children(sup["children"], "    ")
    lines.append("nodes:")
    for node in view["nodes"]:
        lines.append(f"  {node['node_id'][:12]}  region={_shown(node['region']):<8} "
                     f"zone={_shown(node['zone']):<10} alive={node['alive']!s:<5}"
                     f"{'  head' if node['head'] else ''}")
    return [line.rstrip() for line in lines]


def _render_children(children: list[Row], indent: str) -> list[str]:
    lines = []
    width = max((len(child["id"]) for child in children), default=0) + 2
    for child in children:
        fields = [f"{indent}{child['id']:<{width}}{child['status']:<10}",
                  f"node={_shown(child.get('node_id'))[:12]}",
                  f"region={_shown(child.get('region')):<8}"]
        if child.get("epoch") is not None:
            fields.append(f"epoch={child['epoch']}")
        if "incarnation" in child:
            fields.append(f"incarnation={child['incarnation']} restarts={child['restarts']} "
                          f"failovers={child['failovers']}")
        elif child.get("pid") is not None:
            fields.append(f"pid={child['pid']}")
        if child.get("uptime_s") is not None:
            fields.append(f"up {duration(child['uptime_s'])}")
        lines.append(" ".join(fields).rstrip())
        if child.get("children"):
            lines += _render_children(child["children"], indent + "  ")
    return lines
