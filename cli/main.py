"""The ``herd`` command line. Errors print one line and exit non-zero, without a traceback."""

from __future__ import annotations

import os

import click

from herd.cli import apps
from herd.cli.bench.command import bench
from herd.cli.chaos import chaos
from herd.cli.cluster import cluster
from herd.cli.consensus import consensus
from herd.cli.dashboard_cmd import dashboard
from herd.cli.events import events
from herd.cli.federation import federation
from herd.platform.logging import configure


@click.group()
@click.option("-v", "--verbose", count=True,
              help="show herd's log events on stderr: -v from INFO, -vv from DEBUG")
@click.option("--log-level", default=None,
              help="lowest level of herd's log events shown on stderr (default WARNING, "
                   "or HERD_LOG_LEVEL); every event from INFO also goes to the log file")
@click.pass_context
def main(ctx: click.Context, verbose: int, log_level: str | None) -> None:
    """herd: OTP- and Horde-style supervision for Python on Ray."""
    chosen = log_level or {0: None, 1: "INFO"}.get(verbose, "DEBUG")
    level = (chosen or os.environ.get("HERD_LOG_LEVEL") or "WARNING").upper()
    ctx.obj = {"stderr_level": level}
    configure(level=level, json=os.environ.get("HERD_LOG_JSON") == "1")


main.add_command(cluster)
main.add_command(bench)
main.add_command(chaos)
main.add_command(consensus)
main.add_command(federation)
main.add_command(dashboard)
main.add_command(events)
for command in apps.COMMANDS:
    main.add_command(command)


if __name__ == "__main__":
    main()
