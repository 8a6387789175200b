"""``herd run | status | stop | submit | demo``: apps as a user meets them (added to the
``herd`` command group of ``herd.cli.main``)."""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

import click

from herd.cli.common import DEFAULT_RUN_DIR, cli_connect, echo_table, one_line_errors
from herd.platform.errors import ConfigError

address_option = click.option("--address", default=None,
                              help="Ray address (default: RAY_ADDRESS, else the cluster of "
                                   "`herd cluster up` in --run-dir)")
run_dir_option = click.option("--run-dir", type=click.Path(path_type=Path),
                              default=DEFAULT_RUN_DIR, show_default=True,
                              help="run dir of a `herd cluster up` cluster")


@click.command("run")
@click.argument("app_path", type=click.Path(path_type=Path))
@address_option
@run_dir_option
@click.option("--block", is_flag=True, help="follow the app's events until Ctrl-C")
@one_line_errors
def run(app_path: Path, address: str | None, run_dir: Path, block: bool) -> None:
    """Start the app described by APP_PATH (detached: it outlives this command)."""
    from herd.supervisors.apps.app import AppSpec, run_app

    spec = AppSpec.from_yaml(app_path)
    cli_connect(address, run_dir)
    run_app(spec, source=str(app_path))
    children = sum(len(s.children) for s in spec.supervisors)
    click.echo(f"app {spec.name} running: {len(spec.supervisors)} supervisors, "
               f"{children} children")
    if block:
        _follow(spec.name)


def _follow(app: str) -> None:
    from herd.platform.membership import Membership
    from herd.registry import Registry

    membership = Membership.start()
    watch = Registry.start("default").watch("")
    since = membership.stats()["seq"]
    click.echo(f"following {app} (Ctrl-C to stop following; the app keeps running)")
    try:
        while True:
            for event in membership.events(since=since, timeout=0.5):
                since = event.seq
                click.echo(f"{type(event).__name__} node={event.node_id[:12]} "
                           f"region={event.region}")
            for event in watch.poll(timeout=0.5):
                click.echo(f"{type(event).__name__} {event.key}")
    except KeyboardInterrupt:
        click.echo("stopped following")


@click.command("status")
@click.argument("app", required=False)
@address_option
@run_dir_option
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@one_line_errors
def status(app: str | None, address: str | None, run_dir: Path, as_json: bool) -> None:
    """The live tree of APP (or of every running app) and the node table."""
    from herd.platform.cluster import disconnect
    from herd.supervisors.apps.status import render
    from herd.supervisors.apps.status import status as app_status

    # Ray's driver prints cluster events (a node marked dead) to stdout from a background
    # thread; what `status` prints, `--json` above all, must be herd's output alone.
    with contextlib.redirect_stdout(sys.stderr):
        cli_connect(address, run_dir)
        view = app_status(app)
        disconnect()
    if as_json:
        click.echo(json.dumps(view, indent=2, default=str))
    else:
        for line in render(view):
            click.echo(line)


@click.command("stop")
@click.argument("app")
@address_option
@run_dir_option
@one_line_errors
def stop(app: str, address: str | None, run_dir: Path) -> None:
    """Stop APP's supervisors in reverse start order (shutdown timeouts honoured)."""
    from herd.supervisors.apps.app import stop_app

    cli_connect(address, run_dir)
    stopped = stop_app(app)
    click.echo(f"app {app} stopped: {', '.join(stopped)}")


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
    from herd.platform import jobs

    if list_jobs:
        echo_table(jobs.list_jobs(address), ["job_id", "status", "entrypoint"])
        return
    if logs_of:
        click.echo(jobs.job_logs(address, logs_of))
        return
    if app_path is None:
        raise ConfigError("give an app YAML to submit (or --list / --logs JOB)",
                          field="APP_PATH", value=None)
    from herd.supervisors.apps.app import AppSpec

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
    click.echo(f"submitted job {job_id}")
    if no_wait:
        return
    final = jobs.follow(address, job_id, click.echo, timeout)
    click.echo(f"job {job_id} {final}")
    if final != "SUCCEEDED":
        sys.exit(1)


@click.command("demo")
@click.option("--app", "app_path", type=click.Path(path_type=Path),
              default=Path("configs/demo.yaml"), show_default=True)
@one_line_errors
def demo(app_path: Path) -> None:
    """A local 3-node, 2-region cluster running APP: kill the node holding most children and
    watch each come back."""
    from herd.supervisors.apps.demo import run_demo

    started = time.monotonic()
    run_demo(app_path, click.echo)
    click.echo(f"demo finished in {time.monotonic() - started:.0f} s")


COMMANDS = [run, status, stop, submit, demo]
