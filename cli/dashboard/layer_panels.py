"""The data layers' panels: consensus groups (one row per member), presence trackers and cache
nodes (one row per node and name). Each finds what runs by itself (the groups' records in the
GCS KV store, the per-node actors by their name prefix), so a group or cache started after the
dashboard shows up on the next poll."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ray

from herd.cli.dashboard.panels import STATUS_TIMEOUT_S, Panel, Section
from herd.consensus.group import Group
from herd.consensus.spec import KEY_PREFIX as GROUP_PREFIX
from herd.platform import kv
from herd.platform.rpc import get as rpc_get
from herd.replication.cache_node import ACTOR_PREFIX as CACHE_PREFIX
from herd.replication.presence_tracker import ACTOR_PREFIX as PRESENCE_PREFIX

__all__ = ["layer_panels"]

GROUP_COLUMNS = ["group", "member", "node", "role", "term", "commit", "applied", "last_index",
                 "voters", "learners", "error"]
PRESENCE_COLUMNS = ["presence", "node", "entries", "peers", "down", "diffs_sent", "error"]
CACHE_COLUMNS = ["cache", "node", "size", "hits", "misses", "evictions", "loads", "rehomes",
                 "error"]


def consensus_section() -> Callable[[], Section]:
    """A row per member of every group whose record is in the GCS KV store."""
    groups: dict[str, Group] = {}  # kept across polls: each keeps its members' handles

    def section() -> Section:
        rows: list[dict[str, Any]] = []
        names = sorted(key[len(GROUP_PREFIX):]
                       for key in kv.keys(GROUP_PREFIX, timeout=STATUS_TIMEOUT_S))
        for name in set(groups) - set(names):
            del groups[name]
        for name in names:
            try:
                group = groups.get(name) or groups.setdefault(name, Group.connect(name))
                members = group.status(timeout=STATUS_TIMEOUT_S)
            except Exception as exc:  # stopped between the listing and the call
                groups.pop(name, None)
                rows.append({"group": name, "error": str(exc)[:80]})
                continue
            for member in members:
                rows.append({"group": name, "member": member["member"],
                             "node": (member.get("node_id") or "")[:12],
                             "role": member["role"],
                             **{k: member.get(k) for k in ("term", "commit", "applied",
                                                           "last_index")},
                             "voters": len(member.get("voters") or ()),
                             "learners": len(member.get("learners") or ()),
                             "error": member.get("error")})
        return {"columns": GROUP_COLUMNS, "rows": rows}

    return section


def per_node_section(prefix: str, label: str, columns: list[str],
                     row: Callable[[dict[str, Any]], dict[str, Any]]) -> Callable[[], Section]:
    """Rows from ``stats()`` of every named actor ``<prefix><name>/<node_id>``."""
    handles: dict[tuple[str, str], Any] = {}  # kept across polls: one GCS lookup per actor

    def section() -> Section:
        rows: list[dict[str, Any]] = []
        actors = sorted((a["name"], a["namespace"])
                        for a in ray.util.list_named_actors(all_namespaces=True)
                        if a["name"].startswith(prefix))
        for gone in set(handles) - set(actors):
            del handles[gone]
        for actor in actors:
            name, _, node_id = actor[0][len(prefix):].rpartition("/")
            base = {label: name, "node": node_id[:12]}
            try:
                if actor not in handles:
                    handles[actor] = ray.get_actor(actor[0], namespace=actor[1])
                stats = rpc_get(handles[actor].stats.remote(), timeout=STATUS_TIMEOUT_S)
            except Exception as exc:  # its node is dying, or it is being restarted
                handles.pop(actor, None)
                rows.append({**base, "error": str(exc)[:80]})
                continue
            rows.append({**base, **row(stats)})
        return {"columns": columns, "rows": rows}

    return section


def _presence_row(stats: dict[str, Any]) -> dict[str, Any]:
    return {"entries": stats["entries"], "peers": len(stats["peers"]),
            "down": len(stats["down"]), "diffs_sent": stats["diffs_sent"]}


def _cache_row(stats: dict[str, Any]) -> dict[str, Any]:
    return {k: stats.get(k) for k in ("size", "hits", "misses", "evictions", "loads",
                                      "rehomes")}


def layer_panels() -> list[Panel]:
    return [Panel("consensus", "Consensus groups", consensus_section()),
            Panel("presence", "Presence trackers",
                  per_node_section(PRESENCE_PREFIX, "presence", PRESENCE_COLUMNS,
                                   _presence_row)),
            Panel("caches", "Caches",
                  per_node_section(CACHE_PREFIX, "cache", CACHE_COLUMNS, _cache_row))]
