"""``herd cluster up | status | down``: local clusters of real ``ray start`` nodes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import ray

from herd.cli.common import echo_table, one_line_errors, run_dir_option
from herd.platform.cluster import LocalCluster
from herd.platform.config import ClusterConfig
from herd.platform.errors import HerdError
from herd.platform.local.cluster import STATE_FILE


@click.group()
def cluster() -> None:
    """Local multi-node clusters of real `ray start` nodes on 127.0.0.1."""


@cluster.command("up")
@click.option("--nodes", type=int, default=3, show_default=True, help="nodes, head included")
@click.option("--regions", default="", help="comma-separated regions, assigned round-robin")
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
              help="a ClusterConfig YAML (mode: local) instead of --nodes/--regions")
@click.option("--dashboard/--no-dashboard", default=False,
              help="start the dashboard (needed by the Ray Jobs API)")
@run_dir_option
@one_line_errors
def cluster_up(nodes: int, regions: str, config_path: Path | None, dashboard: bool,
               run_dir: Path) -> None:
    """Start a detached local cluster; it runs until `herd cluster down`."""
    if (run_dir / STATE_FILE).exists() and LocalCluster.attach(run_dir).pids():
        raise HerdError(f"a cluster is already running from {run_dir}; `herd cluster down` first")
    if config_path is not None:
        config = ClusterConfig.from_yaml(config_path)
        started = LocalCluster.from_config(config, run_dir=run_dir, include_dashboard=dashboard,
                                           owned=False)
    else:
        region_list = [r.strip() for r in regions.split(",") if r.strip()]
        started = LocalCluster(nodes=nodes, regions=region_list, run_dir=run_dir,
                               include_dashboard=dashboard, owned=False)
    click.echo(f"cluster up: {len(started.nodes)} nodes, address {started.address}")
    if started.dashboard_url:
        click.echo(f"dashboard / jobs API: {started.dashboard_url}")
    click.echo(f"connect with: RAY_ADDRESS={started.address} "
               f"RAY_AUTH_MODE={started.auth}"
               + (f" RAY_AUTH_TOKEN_PATH={started.token_path}" if started.auth == "token" else ""))


@cluster.command("status")
@run_dir_option
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@one_line_errors
def cluster_status(run_dir: Path, as_json: bool) -> None:
    """Node table of the cluster: id, name, region, alive, resources."""
    rows = node_rows(run_dir)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        echo_table(rows, ["node_id", "name", "region", "zone", "alive", "cpu", "pids"])


def node_rows(run_dir: Path) -> list[dict[str, Any]]:
    """Node table from the GCS, joined with the processes the run dir says we started."""
    local = LocalCluster.attach(run_dir)
    gcs = {}
    if local.head.alive:
        local.connect(log_to_driver=False)
        gcs = {n["NodeID"]: n for n in ray.nodes()}
    rows = []
    for node in local.nodes:
        entry = gcs.get(node.node_id or "", {})
        rows.append({"node_id": (node.node_id or "")[:12], "name": node.name,
                     "region": node.region or "-", "zone": node.zone or "-",
                     "alive": bool(entry.get("Alive")) and node.alive,
                     "cpu": entry.get("Resources", {}).get("CPU", node.num_cpus),
                     "pids": len(node.pids())})
    return rows


@cluster.command("down")
@run_dir_option
@one_line_errors
def cluster_down(run_dir: Path) -> None:
    """Stop exactly the processes of that cluster (never `ray stop`)."""
    local = LocalCluster.attach(run_dir)
    count = len(local.pids())
    local.shutdown()
    click.echo(f"cluster down: stopped {count} processes")
