"""Panels: how a layer adds its section to the dashboard without touching the page.

A panel is a name, a title and ``section()``, called by the feed every few seconds in a thread
of the CLI process (it may call the cluster, with timeouts), returning a table
``{"columns": [...], "rows": [{column: value}, ...]}`` the page renders as it is; optionally
``events(emit)``, started once in a thread of its own, which calls ``emit(kind, detail)`` for
each timeline event the layer has (it returns when the feed stops it by raising in ``emit``).

Layers register theirs with :func:`register_panel`; herd's replication peers are the first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from herd.platform.rpc import get as rpc_get
from herd.replication.models import supervisor_name
from herd.supervisors import DynamicSupervisor

Section = dict[str, Any]
Emit = Callable[[str, str], None]
STATUS_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class Panel:
    name: str
    title: str
    section: Callable[[], Section]
    events: Callable[[Emit], None] | None = None


_PANELS: dict[str, Panel] = {}


def register_panel(panel: Panel) -> None:
    """Add (or replace) the panel named ``panel.name``."""
    _PANELS[panel.name] = panel


def registered_panels() -> list[Panel]:
    return list(_PANELS.values())


def replication_section(supervisors: Callable[[], list[str]]) -> Callable[[], Section]:
    """Peers of every replica of the replication supervisors (``herd-replication-<region>``,
    among ``supervisors()``) with pending deltas, lag (ms since the last ack while deltas are
    pending), reachability and
    bytes sent."""
    prefix = supervisor_name("")

    def section() -> Section:
        rows = []
        for sup_name in supervisors():
            if not sup_name.startswith(prefix):
                continue
            sup = DynamicSupervisor.get(sup_name)
            for child in sup.which_children(timeout=STATUS_TIMEOUT_S):
                if child.handle is None:
                    continue
                try:
                    status = rpc_get(child.handle.status.remote(), timeout=STATUS_TIMEOUT_S)
                except Exception as exc:  # a replica being restarted: say so, go on
                    rows.append({"replica": child.id, "peer": "-", "error": str(exc)[:80]})
                    continue
                for peer, view in status.get("peers", {}).items():
                    rows.append({"replica": child.id, "region": status.get("region"),
                                 "peer": peer, "pending": view.get("pending"),
                                 "lag_ms": view.get("lag_ms"),
                                 "reachable": view.get("reachable"),
                                 "bytes_sent": (view.get("delta_bytes") or 0)
                                 + (view.get("state_bytes") or 0)})
        return {"columns": ["replica", "region", "peer", "pending", "lag_ms", "reachable",
                            "bytes_sent", "error"], "rows": rows}

    return section
