"""``herd run | status | stop | submit | demo``: apps as a user meets them (added to the
``herd`` command group of ``herd.cli.main``)."""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import click

from herd.cli.common import (
    DEFAULT_LOG_DIR,
    address_option,
    cluster_session,
    connect_timeout_option,
    echo,
    echo_table,
    one_line_errors,
    ray_output_to,
    run_dir_option,
)
from herd.cli.demo_regions import regions
from herd.platform import jobs
from herd.platform.errors import ConfigError
from herd.platform.membership import Membership
from herd.registry import Registry
from herd.supervisors.apps.app import AppSpec, run_app, stop_app
from herd.supervisors.apps.demo import run_demo
from herd.supervisors.apps.status import render
from herd.supervisors.apps.status import status as app_status


@click.command("run")
@click.argument("app_path", type=click.Path(path_type=Path))
@address_option
@run_dir_option
@connect_timeout_option
@click.option("--block", is_flag=True, help="follow the app's events until Ctrl-C")
@one_line_errors
def run(app_path: Path, address: str | None, run_dir: Path, connect_timeout: float,
        block: bool) -> None:
    """Start the app described by APP_PATH (detached: it outlives this command)."""
    spec = AppSpec.from_yaml(app_path)
    with cluster_session(address, run_dir, connect_timeout):
        run_app(spec, source=str(app_path))
        children = sum(len(s.children) for s in spec.supervisors)
        echo(f"app {spec.name} running: {len(spec.supervisors)} supervisors, "
             f"{children} children")
        if block:
            _follow(spec.name)


def _follow(app: str) -> None:
    echo(f"following {app} (Ctrl-C to stop following; the app keeps running)")
    names = Registry.start("default").watch("")
    try:
        with Membership.get().watch() as nodes:
            while True:
                for node_event in nodes.poll(timeout=0.5):
                    echo(f"{type(node_event).__name__} node={node_event.node_id[:12]} "
                         f"region={node_event.region}")
                for name_event in names.poll(timeout=0.5):
                    echo(f"{type(name_event).__name__} {name_event.key}")
    except KeyboardInterrupt:
        echo("stopped following")


@click.command("status")
@click.argument("app", required=False)
@address_option
@run_dir_option
@connect_timeout_option
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@one_line_errors
def status(app: str | None, address: str | None, run_dir: Path, connect_timeout: float,
           as_json: bool) -> None:
    """The live tree of APP (or of every running app) and the node table."""
    with cluster_session(address, run_dir, connect_timeout):
        view = app_status(app)
    if as_json:
        echo(json.dumps(view, indent=2, default=str))
    else:
        for line in render(view):
            echo(line)


@click.command("stop")
@click.argument("app")
@address_option
@run_dir_option
@connect_timeout_option
@one_line_errors
def stop(app: str, address: str | None, run_dir: Path, connect_timeout: float) -> None:
    """Stop APP's supervisors in reverse start order (shutdown timeouts honoured)."""
    with cluster_session(address, run_dir, connect_timeout):
        stopped = stop_app(app)
    echo(f"app {app} stopped: {', '.join(stopped)}")


@click.command("submit")
@click.argument("app_path", required=False, type=click.Path(path_type=Path))
@click.option("--address", required=True, help="Ray Jobs API, e.g. http://127.0.0.1:8265")
@click.option("--list", "list_jobs", is_flag=True, help="list jobs instead of submitting")
@click.option("--logs", "logs_of", default=None, help="print the logs of job JOB")
@click.option("--no-wait", is_flag=True, help="return once submitted")
@click.option("--timeout", type=float, default=600, show_default=True,
              help="seconds to follow the job")
@one_line_errors
def submit(app_path: Path | None, address: str, list_jobs: bool, logs_of: str | None,
           no_wait: bool, timeout: float) -> None:
    """Submit APP_PATH as a Ray job (herd as a wheel + this directory), then follow it."""
    log_path = DEFAULT_LOG_DIR / f"submit-{time.strftime('%Y%m%d-%H%M%S')}.log"
    with ray_output_to(log_path):  # the Jobs SDK's packaging lines and Ray's C++ warnings
        _submit(app_path, address, list_jobs, logs_of, no_wait, timeout)


def _submit(app_path: Path | None, address: str, list_jobs: bool, logs_of: str | None,
            no_wait: bool, timeout: float) -> None:
    if list_jobs:
        echo_table(jobs.list_jobs(address), ["job_id", "status", "entrypoint"])
        return
    if logs_of:
        echo(jobs.job_logs(address, logs_of))
        return
    if app_path is None:
        raise ConfigError("give an app YAML to submit (or --list / --logs JOB)",
                          field="APP_PATH", value=None)
    AppSpec.from_yaml(app_path)  # fail here, not in the job, on a broken file
    working_dir = Path.cwd()
    relative = app_path.resolve().relative_to(working_dir) if app_path.resolve().is_relative_to(
        working_dir) else None
    if relative is None:
        raise ConfigError("the app file must be inside the current directory (it is uploaded "
                          "as the job's working_dir)", field="APP_PATH", value=str(app_path))
    entrypoint = f"{Path(sys.executable).name} -m herd.cli.main run {relative.as_posix()}"
    with tempfile.TemporaryDirectory() as wheel_dir:
        job_id = jobs.submit(address, entrypoint, working_dir, Path(wheel_dir),
                             env=jobs.job_env_from_process())
    echo(f"submitted job {job_id}")
    if no_wait:
        return
    final = jobs.follow(address, job_id, echo, timeout)
    echo(f"job {job_id} {final}")
    if final != "SUCCEEDED":
        sys.exit(1)


@click.group("demo", invoke_without_command=True)
@click.option("--app", "app_path", type=click.Path(path_type=Path),
              default=Path("configs/demo.yaml"), show_default=True)
@click.pass_context
@one_line_errors
def demo(ctx: click.Context, app_path: Path) -> None:
    """A local 3-node, 2-region cluster running APP: kill the worker holding most children and
    watch each come back. `herd demo regions`: two federated clusters through a partition."""
    if ctx.invoked_subcommand is not None:
        return
    started = time.monotonic()
    log_path = DEFAULT_LOG_DIR / f"demo-{time.strftime('%Y%m%d-%H%M%S')}.log"
    with ray_output_to(log_path):
        echo(f"(herd's and Ray's logs of this run: {log_path})")
        run_demo(app_path, echo)
    echo(f"demo finished in {time.monotonic() - started:.0f} s")


demo.add_command(regions)

