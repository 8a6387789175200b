"""The ``herd`` command line. Errors print one line and exit non-zero, without a traceback."""

from __future__ import annotations

import importlib
import os

import click

from herd.platform.logging import configure

#: command name -> "module:attribute"; a command's module (and what it imports: Ray, the
#: benchmarks, the dashboard server) is imported only when that command runs
COMMANDS = {
    "cluster": "herd.cli.cluster:cluster",
    "bench": "herd.cli.bench.command:bench",
    "chaos": "herd.cli.chaos:chaos",
    "consensus": "herd.cli.consensus:consensus",
    "federation": "herd.cli.federation:federation",
    "dashboard": "herd.cli.dashboard_cmd:dashboard",
    "events": "herd.cli.events:events",
    **{name: f"herd.cli.apps:{name}" for name in ("run", "status", "stop", "submit", "demo")},
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, attribute = target.split(":")
        command = getattr(importlib.import_module(module), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{target} is not a click command")
        return command


@click.group(cls=LazyGroup)
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


if __name__ == "__main__":
    main()
