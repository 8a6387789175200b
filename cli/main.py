"""The ``herd`` command line. Errors print one line and exit non-zero, without a traceback."""

from __future__ import annotations

import os

import click

from herd.cli import apps
from herd.cli.bench.command import bench
from herd.cli.cluster import cluster
from herd.platform.logging import configure


@click.group()
@click.option("--log-level", default=None, help="structlog level (default INFO, or HERD_LOG_LEVEL)")
def main(log_level: str | None) -> None:
    """herd: OTP- and Horde-style supervision for Python on Ray."""
    configure(level=log_level or os.environ.get("HERD_LOG_LEVEL", "WARNING"))


main.add_command(cluster)
main.add_command(bench)
for command in apps.COMMANDS:
    main.add_command(command)


if __name__ == "__main__":
    main()
