"""Pieces every ``herd`` command shares: one-line errors, tables, where output goes, and how a
command finds and joins the cluster it talks to.

What a person reads is herd's own output. While a command talks to Ray, file descriptors 1 and 2
point at a log file (Ray's C++ core and its driver threads write there: GCS retry lines, raylet
death notices), herd's output goes to the saved terminal streams through :func:`echo`, and herd's
own log events go to the same file, with WARNING and above (INFO with ``-v``) also on stderr.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO, TypeVar

import click

from herd.platform.cluster import LocalCluster, connect, disconnect
from herd.platform.connection import ClusterInfo
from herd.platform.errors import ClusterUnavailable, HerdError
from herd.platform.local.cluster import STATE_FILE
from herd.platform.logging import configure

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_RUN_DIR = Path(os.environ.get("HERD_RUN_DIR", "/tmp/herd/cli"))
DEFAULT_LOG_DIR = Path(os.environ.get("HERD_LOG_DIR", "/tmp/herd/logs"))
LOG_FILE = "herd-cli.log"
DEFAULT_CONNECT_TIMEOUT_S = 10.0
WATCHDOG_GRACE_S = 5.0

run_dir_option = click.option("--run-dir", type=click.Path(path_type=Path), default=DEFAULT_RUN_DIR,
                              show_default=True, help="where the cluster keeps its state and logs")
address_option = click.option("--address", default=None,
                              help="Ray address (default: RAY_ADDRESS, else the cluster of "
                                   "`herd cluster up` in --run-dir)")
connect_timeout_option = click.option(
    "--connect-timeout", type=click.FloatRange(min=0.5), default=DEFAULT_CONNECT_TIMEOUT_S,
    show_default=True, help="seconds to reach the cluster before giving up")


class _Terminal:
    """The streams herd's own output goes to (the real stdout/stderr while Ray's are in a log)."""

    out: TextIO | None = None
    err: TextIO | None = None
    log_path: Path | None = None


def echo(message: str = "", err: bool = False, nl: bool = True) -> None:
    """Print a line of herd's own output (never into the log file); ``nl=False`` leaves the
    line open (a progress line rewritten with ``\r``)."""
    stream = _Terminal.err if err else _Terminal.out
    if stream is not None:
        click.echo(message, file=stream, nl=nl)
    else:
        click.echo(message, err=err, nl=nl)


def one_line_errors(func: F) -> F:
    """Turn herd's (and Ray's connection) errors into one line on stderr and exit code 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (HerdError, ConnectionError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            echo(f"herd: error: {first}", err=True)
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


def echo_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    cells = [[str(row.get(col, "")) for col in columns] for row in rows]
    widths = [max(len(col), *(len(r[i]) for r in cells)) if cells else len(col)
              for i, col in enumerate(columns)]
    echo("  ".join(col.upper().ljust(w) for col, w in zip(columns, widths, strict=False)))
    for r in cells:
        echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)))


def stderr_level() -> str:
    """The level herd's log events need to reach stderr: ``--log-level``, ``-v``,
    ``HERD_LOG_LEVEL``, else WARNING (set on the root ``herd`` command)."""
    ctx = click.get_current_context(silent=True)
    obj = ctx.find_root().obj if ctx is not None else None
    return str((obj or {}).get("stderr_level", "WARNING"))


def log_path_for(run_dir: Path | None) -> Path:
    """``<run_dir>/logs/herd-cli.log`` for a cluster of ``herd cluster up``, else one file in
    ``HERD_LOG_DIR`` (default /tmp/herd/logs)."""
    if run_dir is not None and (run_dir / "logs").is_dir():
        return run_dir / "logs" / LOG_FILE
    return DEFAULT_LOG_DIR / LOG_FILE


@contextlib.contextmanager
def ray_output_to(log_path: Path) -> Iterator[Path]:
    """Send file descriptors 1 and 2 (Ray's C++ and driver-thread output) and herd's log events
    to ``log_path`` for the block; :func:`echo` keeps writing to the terminal."""
    if _Terminal.out is not None:  # nested: already redirected
        yield _Terminal.log_path or log_path
        return
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    _Terminal.out = os.fdopen(saved_out, "w", buffering=1)
    _Terminal.err = os.fdopen(saved_err, "w", buffering=1)
    _Terminal.log_path = log_path
    configure(level="DEBUG" if stderr_level() == "DEBUG" else "INFO", file=log_path,
              stderr_level=stderr_level(), stream=_Terminal.err)
    try:
        yield log_path
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        configure(level=stderr_level(), json=os.environ.get("HERD_LOG_JSON") == "1",
                  stream=sys.stderr)
        os.dup2(_Terminal.out.fileno(), 1)
        os.dup2(_Terminal.err.fileno(), 2)
        _Terminal.out.close()
        _Terminal.err.close()
        _Terminal.out = _Terminal.err = _Terminal.log_path = None


@contextlib.contextmanager
def watchdog(seconds: float, message: str) -> Iterator[None]:
    """Last resort against a Ray call that blocks in C++ past every timeout: after ``seconds``
    print ``message`` as herd's one-line error and end the process (exit code 1)."""

    def fire() -> None:
        echo(f"herd: error: {message}", err=True)
        os._exit(1)

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def cli_connect(address: str | None, run_dir: Path,
                timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S) -> ClusterInfo:
    """Connect for a CLI command: ``--address``, else ``RAY_ADDRESS``, else the cluster that
    ``herd cluster up`` started from ``run_dir``; gives up after ``timeout_s``."""
    target = address or os.environ.get("RAY_ADDRESS")
    if target:
        with watchdog(timeout_s + WATCHDOG_GRACE_S,
                      f"no Ray cluster answered at {target} within {timeout_s:.0f} s"):
            return connect(address=address, log_to_driver=False, timeout_s=timeout_s)
    if not (run_dir / STATE_FILE).exists():
        raise HerdError("no cluster to talk to: pass --address, set RAY_ADDRESS, or start one "
                        "with `herd cluster up`")
    local = LocalCluster.attach(run_dir)
    with watchdog(timeout_s + WATCHDOG_GRACE_S,
                  f"the cluster of {run_dir} ({local.address}) did not answer within "
                  f"{timeout_s:.0f} s"):
        try:
            return local.connect(log_to_driver=False, timeout_s=timeout_s)
        except ClusterUnavailable as exc:
            raise ClusterUnavailable(f"{exc} (the cluster of run dir {run_dir})") from exc


@contextlib.contextmanager
def cluster_session(address: str | None, run_dir: Path,
                    timeout_s: float) -> Iterator[ClusterInfo]:
    """Ray's output in the log file, a bounded connect, and a disconnect at the end."""
    with ray_output_to(log_path_for(None if address else run_dir)):
        info = cli_connect(address, run_dir, timeout_s)
        try:
            yield info
        finally:
            disconnect()
