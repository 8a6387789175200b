"""``herd cluster up | status | down``: local clusters of real ``ray start`` nodes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from herd.cli.common import (
    cluster_session,
    connect_timeout_option,
    echo,
    echo_table,
    log_path_for,
    one_line_errors,
    ray_output_to,
    run_dir_option,
)
from herd.platform import gcs
from herd.platform.cluster import LocalCluster
from herd.platform.config import ClusterConfig
from herd.platform.errors import ConfigError, HerdError
from herd.platform.local.cluster import STATE_FILE


@click.group()
def cluster() -> None:
    """Local multi-node clusters of real `ray start` nodes on 127.0.0.1."""


@cluster.command("up")
@click.option("--nodes", type=click.IntRange(min=1), default=3, show_default=True,
              help="nodes, head included")
@click.option("--regions", default="", help="comma-separated regions, assigned round-robin "
                                            "(head first); at most one per node")
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
              help="a ClusterConfig YAML (mode: local) instead of --nodes/--regions")
@click.option("--dashboard/--no-dashboard", default=False,
              help="start the dashboard (needed by the Ray Jobs API)")
@click.option("--gcs-fault-tolerance/--no-gcs-fault-tolerance", "fault_tolerance", default=True,
              show_default=True, help="keep the GCS state in RocksDB so that the head can be "
                                      "restarted with it (--no-... overrides the config)")
@run_dir_option
@click.pass_context
@one_line_errors
def cluster_up(ctx: click.Context, nodes: int, regions: str, config_path: Path | None,
               dashboard: bool, fault_tolerance: bool, run_dir: Path) -> None:
    """Start a detached local cluster; it runs until `herd cluster down`."""
    config = _local_config(ctx, config_path)
    if config is not None and not fault_tolerance:
        config = config.model_copy(update={"gcs_fault_tolerance": False})
    if (run_dir / STATE_FILE).exists() and LocalCluster.attach(run_dir).pids:
        raise HerdError(f"a cluster is already running from {run_dir}; `herd cluster down` first")
    (run_dir / "logs").mkdir(parents=True, exist_ok=True)
    with ray_output_to(log_path_for(run_dir)):
        if config is not None:
            started = LocalCluster.from_config(config, run_dir=run_dir,
                                               include_dashboard=dashboard, owned=False)
        else:
            region_list = [r.strip() for r in regions.split(",") if r.strip()]
            started = LocalCluster(nodes=nodes, regions=region_list, run_dir=run_dir,
                                   include_dashboard=dashboard, owned=False,
                                   gcs_fault_tolerance=fault_tolerance)
    echo(f"cluster up: {len(started.nodes)} nodes, address {started.address}")
    if started.dashboard_url:
        echo(f"dashboard / jobs API: {started.dashboard_url}")
    echo(f"connect with: RAY_ADDRESS={started.address} RAY_AUTH_MODE={started.auth}"
         + (f" RAY_AUTH_TOKEN_PATH={started.token_path}" if started.auth == "token" else ""))
    if started.head_process.fault_tolerant:
        echo(f"GCS fault tolerance: on (storage {started.head_process.storage_path})")
    echo(f"logs: {run_dir / 'logs'}")


def _local_config(ctx: click.Context, config_path: Path | None) -> ClusterConfig | None:
    """The ``--config`` file, if given, as a topology ``cluster up`` can start."""
    if config_path is None:
        return None
    given = [f"--{name}" for name in ("nodes", "regions")
             if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE]
    if given:
        raise ConfigError(f"give either --config or {'/'.join(given)}, not both",
                          field="--config", value=str(config_path))
    config = ClusterConfig.from_yaml(config_path)
    if config.mode != "local":
        what = (f"connects to the existing cluster at {config.address} (pass it to other "
                f"commands with --address)" if config.mode == "address"
                else "runs Ray inside the driver process")
        raise ConfigError(f"`herd cluster up` starts mode 'local' clusters; mode "
                          f"{config.mode!r} {what}", source=str(config_path), field="mode",
                          value=config.mode)
    return config


@cluster.command("status")
@run_dir_option
@connect_timeout_option
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@one_line_errors
def cluster_status(run_dir: Path, connect_timeout: float, as_json: bool) -> None:
    """Node table of the cluster: id, name, region, alive, resources."""
    rows = node_rows(run_dir, connect_timeout)
    if as_json:
        echo(json.dumps(rows, indent=2))
    else:
        echo_table(rows, ["node_id", "name", "region", "zone", "alive", "cpu", "pids"])


def node_rows(run_dir: Path, connect_timeout: float) -> list[dict[str, Any]]:
    """Node table from the GCS, joined with the processes the run dir says we started."""
    local = LocalCluster.attach(run_dir)
    known: dict[str, gcs.NodeInfo] = {}
    if local.head.alive:
        with cluster_session(None, run_dir, connect_timeout):
            known = {info.node_id: info for info in gcs.nodes()}
    rows = []
    for node in local.nodes:
        info = known.get(node.node_id or "")
        rows.append({"node_id": (node.node_id or "")[:12], "name": node.name,
                     "region": node.region or "-", "zone": node.zone or "-",
                     "alive": bool(info and info.alive) and node.alive,
                     "cpu": info.resources.get("CPU", node.num_cpus) if info else node.num_cpus,
                     "pids": len(node.pids)})
    return rows


@cluster.command("down")
@run_dir_option
@one_line_errors
def cluster_down(run_dir: Path) -> None:
    """Stop exactly the processes of that cluster (never `ray stop`)."""
    local = LocalCluster.attach(run_dir)
    count = len(local.pids)
    local.shutdown()
    echo(f"cluster down: stopped {count} processes")
