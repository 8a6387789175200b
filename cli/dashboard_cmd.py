"""``herd dashboard``: serve the live web page of a cluster from this process.

The server runs in the CLI process, not in an actor on the cluster: it needs no node of its own
and no extra dependency on the cluster, it is stopped with Ctrl-C like any command, and it keeps
serving the page (saying "reconnecting") while the head restarts, where an actor on the head
would go down with it. The cluster pays for a registry watch, a membership watch and a few
status calls every 2 s, whatever the number of pages open.
"""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import socket
from pathlib import Path

import click

from herd.cli.common import (
    address_option,
    cluster_session,
    connect_timeout_option,
    echo,
    one_line_errors,
    run_dir_option,
)
from herd.cli.dashboard.layer_panels import layer_panels
from herd.cli.dashboard.panels import Panel, register_panel, replication_section
from herd.cli.dashboard.server import Dashboard, PortInUse, serve
from herd.platform.errors import ConfigError, HerdError

DEFAULT_PORT = 8266


def cluster_token(token_file: Path | None, run_dir: Path) -> str | None:
    """The token actions need: ``--token-file``, else Ray's (``RAY_AUTH_TOKEN``,
    ``RAY_AUTH_TOKEN_PATH``), else the one of ``herd cluster up`` in ``run_dir``, else
    ``~/.ray/auth_token``; None when there is none."""
    if token_file is not None:
        if not token_file.is_file():
            raise ConfigError("no such file", field="--token-file", value=str(token_file))
        return token_file.read_text().strip() or None
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip()
    for candidate in (os.environ.get("RAY_AUTH_TOKEN_PATH"), run_dir / "auth_token",
                      Path.home() / ".ray" / "auth_token"):
        if candidate and Path(candidate).is_file():
            return Path(candidate).read_text().strip() or None
    return None


def _check_port_free(host: str, port: int) -> None:
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(f"port {port} on {host} is in use: pick another with --port"
                                ) from None
            raise HerdError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


async def _serve_until_stopped(dashboard: Dashboard, host: str, port: int) -> None:
    runner = await serve(dashboard, host, port)
    echo(f"herd dashboard on http://{host}:{port}/ (Ctrl-C stops it)")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


@click.command()
@address_option
@run_dir_option
@connect_timeout_option
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on")
@click.option("--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True)
@click.option("--token-file", type=click.Path(path_type=Path), default=None,
              help="file holding the token actions need (default: the cluster's Ray token)")
@one_line_errors
def dashboard(address: str | None, run_dir: Path, connect_timeout: float, host: str, port: int,
              token_file: Path | None) -> None:
    """Serve a live web page of the cluster: supervision trees, children, nodes, timeline."""
    token = cluster_token(token_file, run_dir)
    _check_port_free(host, port)  # before the connect: a taken port fails at once
    with cluster_session(address, run_dir, connect_timeout):
        board = Dashboard(token)
        register_panel(Panel("replication", "Replication peers",
                             replication_section(board.supervisor_names)))
        for panel in layer_panels():
            register_panel(panel)
        asyncio.run(_serve_until_stopped(board, host, port))
