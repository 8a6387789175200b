"""The live view of running apps for ``herd status``: supervision trees and the node table."""

from __future__ import annotations

import time
from typing import Any

from herd.platform.errors import HerdError
from herd.platform.gcs import nodes
from herd.registry import Registry
from herd.supervisors.apps.app import app_record, running_apps
from herd.supervisors.dynamic.supervisor import DynamicSupervisor
from herd.supervisors.errors import SupervisorError, SupervisorStopped
from herd.supervisors.otp.info import ChildInfo
from herd.supervisors.otp.supervisor import Supervisor


def node_table() -> list[dict[str, Any]]:
    rows = []
    for node in sorted(nodes(), key=lambda n: (not n.alive, n.node_id)):
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


def _app(name: str, regions: dict[str, str | None]) -> dict[str, Any]:
    record = app_record(name) or {}
    sups = []
    for sup in record.get("supervisors", []):
        try:
            children = (_dynamic_children(sup["name"]) if sup["kind"] == "dynamic"
                        else _static_children(sup["name"], regions))
            state = "running"
        except (SupervisorStopped, SupervisorError) as exc:
            children, state = [], f"stopped ({exc})"
        sups.append({"name": sup["name"], "kind": sup["kind"], "status": state,
                     "children": children})
    started = record.get("started_at")
    return {"app": name, "source": record.get("source"), "started_at": started,
            "uptime_s": round(time.time() - started, 1) if started else None,
            "supervisors": sups}


def _dynamic_children(name: str) -> list[dict[str, Any]]:
    now = time.time()
    return [{"id": c.id, "status": c.status, "node_id": c.node_id, "region": c.region,
             "epoch": c.epoch, "incarnation": c.incarnation, "restarts": c.restarts,
             "failovers": c.failovers,
             "uptime_s": round(now - c.started_at, 1) if c.started_at else None}
            for c in DynamicSupervisor.get(name).which_children()]


def _static_children(name: str, regions: dict[str, str | None]) -> list[dict[str, Any]]:
    registry = Registry.start("default")
    records = {r.key: r for r in registry.select(prefix=f"{name}/")}
    now = time.time()

    def row(sup: str, child: ChildInfo) -> dict[str, Any]:
        record = records.get(f"{sup}/{child.id}")
        entry: dict[str, Any] = {
            "id": child.id, "status": child.status, "type": child.type,
            "restart": child.restart, "node_id": child.node_id,
            "region": regions.get(child.node_id or ""), "pid": child.pid,
            "epoch": record.epoch if record else None,
            "uptime_s": round(now - record.registered_at, 1) if record else None}
        if child.children is not None:
            entry["children"] = [row(child.id, grandchild) for grandchild in child.children]
        return entry

    return [row(name, child) for child in Supervisor.get(name).which_children(recursive=True)]


def render(view: dict[str, Any]) -> list[str]:
    """Human-readable lines: each app's tree, then the node table."""
    lines = []
    for app in view["apps"]:
        lines.append(f"app {app['app']}  (up {app['uptime_s']} s, from {app['source']})")
        for sup in app["supervisors"]:
            lines.append(f"  {sup['kind']} supervisor {sup['name']}: {sup['status']}")
            lines += _render_children(sup["children"], "    ")
    lines.append("nodes:")
    for node in view["nodes"]:
        lines.append(f"  {node['node_id'][:12]}  region={node['region'] or '-':<8} "
                     f"zone={node['zone'] or '-':<10} alive={node['alive']!s:<5} "
                     f"{'head' if node['head'] else ''}")
    return lines


def _render_children(children: list[dict[str, Any]], indent: str) -> list[str]:
    lines = []
    for child in children:
        node = (child.get("node_id") or "-")[:12]
        extra = (f" incarnation={child['incarnation']} restarts={child['restarts']} "
                 f"failovers={child['failovers']}" if "incarnation" in child
                 else f" pid={child.get('pid')}")
        lines.append(f"{indent}{child['id']:<14} {child['status']:<10} node={node} "
                     f"region={child.get('region') or '-':<8} epoch={child.get('epoch')}"
                     f"{extra} up={child.get('uptime_s')}s")
        if child.get("children"):
            lines += _render_children(child["children"], indent + "  ")
    return lines
