"""``herd federation status``: this cluster's federation gateway, its peers, their lag and the
last error, and what the gateway refused."""

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
from herd.replication.federation.gateway import gateway_status
from herd.replication.store import ReplicatedStore


@click.group()
def federation() -> None:
    """Federation of separate Ray clusters (one per region) through gateways."""


@federation.command("status")
@address_option
@run_dir_option
@connect_timeout_option
@click.option("--store", "stores", multiple=True,
              help="also show this store's replication lag per peer (repeatable)")
@click.option("--json", "as_json", is_flag=True, help="print the raw status as JSON")
@one_line_errors
def status(address: str | None, run_dir: Path, connect_timeout: float, stores: tuple[str, ...],
           as_json: bool) -> None:
    """Peers (URL, messages sent and failed, last round trip, time since the last answer, last
    error) and refused requests by reason."""
    with cluster_session(address, run_dir, connect_timeout):
        report = gateway_status()
        for name in stores:
            report.setdefault("stores", {})[name] = ReplicatedStore.get(name).status()
    if as_json:
        echo(json.dumps(report, indent=2, default=str))
        return
    echo(f"region {report['region']}  listening on {':'.join(map(str, report['listen']))}"
               f"  tls={'on' if report['tls'] else 'off'}")
    echo_table(peer_rows(report), ["peer", "url", "sent", "failed", "rtt_ms", "lag_ms",
                                   "last_error"])
    inbound = report["inbound"]
    refused = ", ".join(f"{k}={v}" for k, v in sorted(inbound["refused"].items())) or "none"
    echo(f"inbound: accepted {sum(inbound['accepted'].values())}, refused {refused}")
    if inbound.get("last_refusal"):
        last = inbound["last_refusal"]
        echo(f"last refusal: {last['reason']} from {last['peer']} ({last['detail']})")
    for name, store_status in report.get("stores", {}).items():
        echo(f"store {name}:")
        echo_table(store_rows(store_status), ["replica", "peer", "pending", "ms_since_ack",
                                              "delta_bytes", "state_bytes"])


def peer_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for region, peer in sorted(report["peers"].items()):
        rows.append({"peer": region, "url": peer["url"], "sent": peer["sent"],
                     "failed": peer["failed"], "rtt_ms": peer["last_rtt_ms"] or "-",
                     "lag_ms": "-" if peer["ms_since_ok"] is None else peer["ms_since_ok"],
                     "last_error": (peer["last_error"] or "-")[:60]})
    return rows


def store_rows(store_status: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (local replica, peer) of ``ReplicatedStore.status()``."""
    rows = []
    for region, replica in sorted(store_status.items()):
        for peer, lag in sorted((replica or {}).get("peers", {}).items()):
            rows.append({"replica": region, "peer": peer, "pending": lag.get("pending"),
                         "ms_since_ack": lag.get("ms_since_ack"),
                         "delta_bytes": lag.get("delta_bytes"),
                         "state_bytes": lag.get("state_bytes")})
    return rows
