"""Pieces every ``herd`` command shares: one-line errors, tables, and how a command finds the
cluster it talks to."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from herd.platform.cluster import LocalCluster, connect
from herd.platform.errors import HerdError
from herd.platform.local.cluster import STATE_FILE

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_RUN_DIR = Path(os.environ.get("HERD_RUN_DIR", "/tmp/herd/cli"))

run_dir_option = click.option("--run-dir", type=click.Path(path_type=Path), default=DEFAULT_RUN_DIR,
                              show_default=True, help="where the cluster keeps its state and logs")


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
    click.echo("  ".join(col.upper().ljust(w) for col, w in zip(columns, widths, strict=False)))
    for r in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)))


def cli_connect(address: str | None, run_dir: Path) -> None:
    """Connect for a CLI command: ``--address``, else ``RAY_ADDRESS``, else the cluster that
    ``herd cluster up`` started from ``run_dir``."""
    if address or os.environ.get("RAY_ADDRESS"):
        connect(address=address, log_to_driver=False)
    elif (run_dir / STATE_FILE).exists():
        LocalCluster.attach(run_dir).connect(log_to_driver=False)
    else:
        raise HerdError("no cluster to talk to: pass --address, set RAY_ADDRESS, or start one "
                        "with `herd cluster up`")
