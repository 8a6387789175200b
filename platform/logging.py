"""structlog set-up for herd: console renderer on a TTY, JSON lines otherwise.

Context (``node_id``, ``actor``, ``supervisor``, ``child_id``, ``epoch``) is carried in structlog
context vars, so every event logged inside ``bound(...)`` carries it.
"""

from __future__ import annotations

import contextlib
import logging as std_logging
import os
import sys
from collections.abc import Iterator
from typing import Any

import structlog

CONTEXT_KEYS = ("node_id", "actor", "supervisor", "child_id", "epoch")

_configured = False


def configure(level: str | None = None, json: bool | None = None) -> None:
    """Configure structlog once per process. ``HERD_LOG_LEVEL`` and ``HERD_LOG_JSON`` override."""
    global _configured
    level_name = (level or os.environ.get("HERD_LOG_LEVEL", "INFO")).upper()
    if json is None:
        env = os.environ.get("HERD_LOG_JSON")
        json = env == "1" if env is not None else not sys.stderr.isatty()
    renderer: Any = (structlog.processors.JSONRenderer() if json
                     else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            std_logging.getLevelName(level_name) if isinstance(
                std_logging.getLevelName(level_name), int) else std_logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    _configured = True


def get_logger(name: str, **initial: Any) -> structlog.typing.FilteringBoundLogger:
    """A logger named ``name``; configures structlog on first use."""
    if not _configured:
        configure()
    return structlog.get_logger(name).bind(logger=name, **initial)


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
