"""structlog set-up for herd.

One sink by default in a driver: stderr, console renderer on a TTY, JSON lines otherwise. With
``file=``, two sinks (the CLI): every event at ``level`` or above goes to the file as a JSON line,
and events at ``stderr_level`` or above (WARNING by default) also go to ``stream`` through
structlog's console renderer, so a person reads short lines and no JSON.

Inside a Ray worker (herd's actors) the default is the two sinks: INFO and above as JSON lines in
``<session>/logs/herd-worker-<pid>.log`` (Ray's log monitor does not forward that file; tests
and people read it there), and only ``HERD_LOG_LEVEL`` (default WARNING) and above on stderr,
which Ray forwards to the drivers, one console line each (JSON with ``HERD_LOG_JSON=1``).

Context (``node_id``, ``actor``, ``supervisor``, ``child_id``, ``epoch``) is carried in structlog
context vars, so every event logged inside ``bound(...)`` carries it.
"""

from __future__ import annotations

import contextlib
import logging as std_logging
import os
import sys
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any, NoReturn, TextIO, cast

import structlog

CONTEXT_KEYS = ("node_id", "actor", "supervisor", "child_id", "epoch")

_configured = False
_generation = 0  # bumped by every configure(): loggers made earlier rebuild themselves
_log_file: TextIO | None = None


def level_number(name: str | None, default: int = std_logging.INFO) -> int:
    """``"warning"`` -> 30; unknown or empty names give ``default``."""
    number = std_logging.getLevelName((name or "").upper())
    return number if isinstance(number, int) else default


class _TwoSinks:
    """Last processor of the two-sink set-up: writes the event to the file (JSON) and, from
    ``stream_level``, to the stream (console renderer); then drops it."""

    def __init__(self, file: TextIO, file_level: int, stream: TextIO, stream_level: int,
                 stream_json: bool) -> None:
        self.file, self.file_level = file, file_level
        self.stream, self.stream_level = stream, stream_level
        self.to_json = structlog.processors.JSONRenderer()
        self.to_stream: Any = (self.to_json if stream_json else
                               structlog.dev.ConsoleRenderer(colors=_isatty(stream)))

    def __call__(self, logger: Any, method: str,
                 event_dict: MutableMapping[str, Any]) -> NoReturn:
        number = level_number(str(event_dict.get("level", method)))
        if number >= self.file_level:
            self.file.write(self.to_json(logger, method, dict(event_dict)) + "\n")
            self.file.flush()
        if number >= self.stream_level:
            shown = {k: v for k, v in event_dict.items() if k != "timestamp"}
            self.stream.write(self.to_stream(logger, method, shown) + "\n")
            self.stream.flush()
        raise structlog.DropEvent


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def ray_worker_log_file() -> Path | None:
    """``<session>/logs/herd-worker-<pid>.log`` when this process is a Ray worker, else None."""
    worker_module = sys.modules.get("ray._private.worker")
    if worker_module is None:
        return None
    node = getattr(worker_module, "_global_node", None)
    mode = getattr(worker_module.global_worker, "mode", None)
    if mode != worker_module.WORKER_MODE or node is None:
        return None
    return Path(node.get_logs_dir_path()) / f"herd-worker-{os.getpid()}.log"


def configure(level: str | None = None, json: bool | None = None, file: Path | None = None,
              stderr_level: str | None = None, stream: TextIO | None = None) -> None:
    """Configure structlog for this process (again, when called again).

    ``level`` (else ``HERD_LOG_LEVEL``, else INFO) is the lowest level kept. ``json`` (else
    ``HERD_LOG_JSON=1``, else "stderr is not a TTY") picks JSON lines for ``stream`` (default
    ``sys.stderr``). With ``file``, events also go there as JSON lines and ``stream`` only
    shows ``stderr_level`` (default WARNING) and above, through the console renderer unless
    ``HERD_LOG_JSON=1``. Called without arguments in a Ray worker it logs to the worker's herd
    log file, and ``HERD_LOG_LEVEL`` (default WARNING) sets what reaches stderr (the drivers).
    """
    global _configured, _generation, _log_file
    stream = stream or sys.stderr
    if level is None and file is None and json is None:
        worker_file = ray_worker_log_file()
        if worker_file is not None:
            shown = os.environ.get("HERD_LOG_LEVEL") or "WARNING"
            file, stderr_level = worker_file, shown
            level = "DEBUG" if level_number(shown) <= std_logging.DEBUG else "INFO"
    keep = level_number(level or os.environ.get("HERD_LOG_LEVEL"))
    env_json = os.environ.get("HERD_LOG_JSON")
    common: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]
    if _log_file is not None:
        _log_file.close()
        _log_file = None
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        _log_file = open(file, "a", buffering=1)  # noqa: SIM115 - lives until reconfigured
        show = level_number(stderr_level, std_logging.WARNING)
        final: Any = _TwoSinks(_log_file, keep, stream, show, stream_json=env_json == "1")
        lowest = min(keep, show)
    else:
        if json is None:
            json = env_json == "1" if env_json is not None else not _isatty(stream)
        final = (structlog.processors.JSONRenderer() if json
                 else structlog.dev.ConsoleRenderer(colors=_isatty(stream)))
        lowest = keep
    structlog.configure(
        processors=[*common, final],
        wrapper_class=structlog.make_filtering_bound_logger(lowest),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    _configured = True
    _generation += 1


def get_logger(name: str, **initial: Any) -> structlog.typing.FilteringBoundLogger:
    """A logger named ``name``; configures structlog on first use. The logger is lazy: each
    call uses the configuration in force then, so loggers made at import time follow a later
    ``configure`` (the CLI configures after importing everything)."""
    if not _configured:
        configure()
    return cast(structlog.typing.FilteringBoundLogger, _LazyLogger({"logger": name, **initial}))


class _LazyLogger:
    """A bound logger made from the configuration in force: remade after ``configure``."""

    def __init__(self, context: dict[str, Any]) -> None:
        self._context = context
        self._bound: Any = None
        self._generation = -1

    def bind(self, **values: Any) -> _LazyLogger:
        return _LazyLogger({**self._context, **values})

    def new(self, **values: Any) -> _LazyLogger:
        return _LazyLogger({"logger": self._context.get("logger"), **values})

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # pickling and copying probe dunders before __init__ ran
            raise AttributeError(name)
        if self._generation != _generation:
            self._bound = structlog.get_logger().bind(**self._context)
            self._generation = _generation
        return getattr(self._bound, name)

    def __getstate__(self) -> dict[str, Any]:
        return {"context": self._context}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._context = state["context"]
        self._bound = None
        self._generation = -1


def bind_context(**values: Any) -> None:
    """Bind herd context keys (node_id, actor, supervisor, child_id, epoch) for this task/thread."""
    unknown = set(values) - set(CONTEXT_KEYS)
    if unknown:
        raise ValueError(f"unknown log context keys: {sorted(unknown)}")
    structlog.contextvars.bind_contextvars(**values)


@contextlib.contextmanager
def bound(**values: Any) -> Iterator[None]:
    """Bind context keys for the duration of a block."""
    tokens = structlog.contextvars.bind_contextvars(**values)
    try:
        yield
    finally:
        structlog.contextvars.reset_contextvars(**tokens)
