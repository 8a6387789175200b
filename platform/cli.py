"""The ``herd`` command line. Errors print one line and exit non-zero, without a traceback."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from herd.platform.errors import HerdError

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_RUN_DIR = Path(os.environ.get("HERD_RUN_DIR", "/tmp/herd/cli"))


def one_line_errors(func: F) -> F:
    """Turn herd's (and Ray's connection) errors into one line on stderr and exit code 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (HerdError, ConnectionError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            click.echo(f"herd: error: {first}", err=True)
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


def echo_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    cells = [[str(row.get(col, "")) for col in columns] for row in rows]
    widths = [max(len(col), *(len(r[i]) for r in cells)) if cells else len(col)
              for i, col in enumerate(columns)]
    click.echo("  ".join(col.upper().ljust(w) for col, w in zip(columns, widths)))
    for r in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)))


class HerdGroup(click.Group):
    """The ``herd`` group; commands of the layers above the platform (``EXTENSIONS``) are
    loaded by import path on first use, so the platform does not import them."""

    EXTENSIONS = ("herd.supervisors.app_cli",)
    _loaded: dict[str, click.Command] | None = None

    def _extensions(self) -> dict[str, click.Command]:
        if self._loaded is None:
            import importlib

            self._loaded = {command.name: command for module in self.EXTENSIONS
                            for command in importlib.import_module(module).COMMANDS
                            if command.name}
        return self._loaded

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self._extensions()})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, cmd_name) or self._extensions().get(cmd_name)


@click.group(cls=HerdGroup)
@click.option("--log-level", default=None, help="structlog level (default INFO, or HERD_LOG_LEVEL)")
def main(log_level: str | None) -> None:
    """herd: OTP- and Horde-style supervision for Python on Ray."""
    from herd.platform.logging import configure

    configure(level=log_level or os.environ.get("HERD_LOG_LEVEL", "WARNING"))


# ---------------------------------------------------------------------------------- cluster
@main.group()
def cluster() -> None:
    """Local multi-node clusters of real `ray start` nodes on 127.0.0.1."""


run_dir_option = click.option("--run-dir", type=click.Path(path_type=Path), default=DEFAULT_RUN_DIR,
                              show_default=True, help="where the cluster keeps its state and logs")


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
    from herd.platform.cluster import LocalCluster
    from herd.platform.config import ClusterConfig
    from herd.platform.local_cluster import STATE_FILE

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
    import ray

    from herd.platform.cluster import LocalCluster

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
    from herd.platform.cluster import LocalCluster

    local = LocalCluster.attach(run_dir)
    count = len(local.pids())
    local.shutdown()
    click.echo(f"cluster down: stopped {count} processes")


# ------------------------------------------------------------------------------------ bench
@main.command("bench")
@click.argument("name", required=False)
@click.option("--children", type=int, default=None, help="K children (failover/spawn)")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="write JSON here")
@one_line_errors
def bench(name: str | None, children: int | None, out: Path | None) -> None:
    """Run benchmark NAME (or `all`); without NAME, list them."""
    import inspect

    from herd.platform.bench import BENCHMARKS, load

    if name is None:
        for bench_name, (_, description) in BENCHMARKS.items():
            click.echo(f"{bench_name:<12} {description}")
        return
    names = list(BENCHMARKS) if name == "all" else [name]
    reports = []
    for bench_name in names:
        run = load(bench_name)
        kwargs = {}
        if children is not None and "children" in inspect.signature(run).parameters:
            kwargs["children"] = children
        click.echo(f"running {bench_name} ...", err=True)
        report = run(**kwargs)
        click.echo(report.render_table())
        click.echo(json.dumps(report.to_json()))
        reports.append(report.to_json())
    if out is not None:
        out.write_text(json.dumps({"reports": reports}, indent=2))
        click.echo(f"wrote {out}", err=True)


# ------------------------------------------------------------------------------- extensions
def cli_connect(address: str | None, run_dir: Path) -> None:
    """Connect for a CLI command: ``--address``, else ``RAY_ADDRESS``, else the cluster that
    ``herd cluster up`` started from ``run_dir``."""
    from herd.platform.cluster import LocalCluster, connect
    from herd.platform.local_cluster import STATE_FILE

    if address or os.environ.get("RAY_ADDRESS"):
        connect(address=address, log_to_driver=False)
    elif (run_dir / STATE_FILE).exists():
        LocalCluster.attach(run_dir).connect(log_to_driver=False)
    else:
        raise HerdError("no cluster to talk to: pass --address, set RAY_ADDRESS, or start one "
                        "with `herd cluster up`")


if __name__ == "__main__":
    main()
