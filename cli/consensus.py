"""``herd consensus status [GROUP]``: the consensus groups of a cluster, or one group's members
with their role, term, commit and applied index, lag behind the leader and the leader's lease."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from herd.cli.common import (
    address_option,
    cluster_session,
    connect_timeout_option,
    echo,
    echo_table,
    one_line_errors,
    run_dir_option,
)
from herd.consensus.group import Group
from herd.consensus.spec import KEY_PREFIX
from herd.platform import kv

COLUMNS = ["member", "role", "term", "leader", "commit", "applied", "lag", "lease_s", "node"]


@click.group()
def consensus() -> None:
    """Raft groups (herd.consensus): members, roles, terms, indexes."""


@consensus.command("status")
@click.argument("group", required=False)
@address_option
@run_dir_option
@connect_timeout_option
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@one_line_errors
def consensus_status(group: str | None, address: str | None, run_dir: Path,
                     connect_timeout: float, as_json: bool) -> None:
    """Without GROUP: the groups. With GROUP: one line per member."""
    with cluster_session(address, run_dir, connect_timeout):
        if group is None:
            names = sorted(key[len(KEY_PREFIX):] for key in kv.keys(KEY_PREFIX))
            rows = [group_row(name) for name in names]
            if as_json:
                echo(json.dumps(rows, indent=2))
            else:
                echo_table(rows, ["group", "machine", "replicas", "leader", "term", "commit"])
            return
        rows = member_rows(Group.connect(group))
        if as_json:
            echo(json.dumps(rows, indent=2))
        else:
            echo_table(rows, COLUMNS)


def group_row(name: str) -> dict[str, Any]:
    client = Group.connect(name)
    leader = client.leader_status() or {}
    return {"group": name, "machine": client.record.machine.__name__,
            "replicas": client.record.options.replicas, "leader": leader.get("member", "-"),
            "term": leader.get("term", "-"), "commit": leader.get("commit", "-")}


def member_rows(client: Group) -> list[dict[str, Any]]:
    statuses = client.status()
    leaders = [s for s in statuses if s["role"] == "leader"]
    leader = max(leaders, key=lambda s: s["term"]) if leaders else None
    rows = []
    for status in statuses:
        row = {"member": status["member"], "role": status["role"],
               "node": status["node_id"][:12]}
        if status["role"] != "unreachable":
            match = leader["matches"].get(status["member"]) if leader else None
            row.update(term=status["term"], leader=status["leader"] or "-",
                       commit=status["commit"], applied=status["applied"],
                       lag="-" if match is None or leader is None
                       else leader["last_index"] - match,
                       lease_s=round(status["lease_s"], 2) if status["role"] == "leader"
                       else "-")
        rows.append(row)
    return rows
