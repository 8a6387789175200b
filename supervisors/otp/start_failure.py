"""Why a child did not start, in one readable line: every way Ray reports a failed start.

Ray reports a failed start in several shapes, most of them multi-line texts with ANSI colour
codes, ``^^^^`` marker lines and the actor's id and pid. ``describe`` reduces each to one line and
the original exception (kept as ``__cause__`` of the ``StartChildError`` where there is one):

* the child's constructor raised: herd's harness catches it and its ready call raises a
  ``StartChildError`` (Ray wraps it in a ``RayTaskError``); a class without the harness makes
  Ray fail the actor (``ActorDiedError`` carrying the traceback text);
* its class cannot be imported: in the supervisor's process (a ``StartChildError`` from
  ``ShippedClass.load``), on the node Ray placed the actor on (``ActorDiedError`` "failed to
  import on the worker"), or while Ray deserialises a call's arguments (``RaySystemError``);
* its process or node died before it was ready (``ActorDiedError`` with a death context,
  ``ActorUnavailableError``);
* anything else raised while creating the actor (bad options, arguments that do not pickle).

Timeouts are described by ``timed_out`` from the actor's state in the GCS: still waiting for a
node (no node has what it asks for) or constructing (a slow constructor).
"""

from __future__ import annotations

import re
from typing import Any

from ray.exceptions import (
    ActorDiedError,
    ActorUnavailableError,
    RayActorError,
    RaySystemError,
    RayTaskError,
)
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from herd.platform.errors import HerdError

__all__ = ["MAX_CHARS", "describe", "one_line", "placement_of", "timed_out"]

MAX_CHARS = 500
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_MARKERS = re.compile(r"^[\s^~]*$")  # Python's ``^^^^`` / ``~~~`` lines under a traceback frame
_IMPORT_FAILED = "failed to import on the worker"
_PLACEMENT_OPTIONS = ("num_cpus", "num_gpus", "memory", "resources", "accelerator_type",
                      "label_selector", "scheduling_strategy")


def one_line(text: str, limit: int = MAX_CHARS) -> str:
    """``text`` without ANSI codes and marker lines, whitespace collapsed, at most ``limit``
    characters."""
    lines = [line for line in _ANSI.sub("", text).splitlines() if not _MARKERS.match(line)]
    flat = " ".join(" ".join(lines).split())
    return flat if len(flat) <= limit else flat[:limit - 3] + "..."


def last_exception(text: str) -> str:
    """The ``Type: message`` line that ends a Python traceback in ``text`` (the text itself,
    on one line, if there is none)."""
    for line in reversed(_ANSI.sub("", text).splitlines()):
        if line.strip() and not line[0].isspace() and not _MARKERS.match(line):
            head = line.split(":", 1)[0]
            if head.replace(".", "").replace("_", "").isalnum() and not head.isdigit():
                return one_line(line)
    return one_line(text)


def describe(exc: BaseException) -> tuple[str, BaseException | None]:
    """Why a start failed, as one line, and the exception worth keeping as its cause."""
    # First: Ray's wrapper of an error raised remotely is also an instance of that error's class.
    if isinstance(exc, RayTaskError):
        cause = exc.cause
        if isinstance(cause, BaseException) and not isinstance(cause, RayTaskError):
            return describe(cause)
        return f"its ready call raised {last_exception(str(exc))}", None
    if isinstance(exc, HerdError):  # herd said why already (harness, class loading, nested)
        return one_line(str(exc)), exc.__cause__
    if isinstance(exc, RaySystemError):
        return (f"Ray could not deserialize what it was sent: "
                f"{last_exception(exc.traceback_str or str(exc.client_exc))}"), None
    if isinstance(exc, ActorUnavailableError):
        return "its node became unreachable before it was ready", None
    if isinstance(exc, ActorDiedError):
        return _died(exc), None
    if isinstance(exc, RayActorError):
        return f"its actor failed before it was ready: {last_exception(str(exc))}", None
    return f"{type(exc).__name__}: {one_line(str(exc))}", exc


def _died(exc: ActorDiedError) -> str:
    text = str(exc)
    if _IMPORT_FAILED in text:
        return (f"its class cannot be imported on the node Ray placed it on: "
                f"{last_exception(text)}")
    if exc.actor_init_failed:
        return f"its constructor raised {last_exception(text)}"
    # A death context: a first summary line, tab-indented fields (class, id, pid, ip), then
    # Ray's explanation.
    lines = [line for line in text.splitlines()[1:] if line and not line.startswith("\t")]
    return f"its process died before it was ready: {one_line(' '.join(lines) or text)}"


def timed_out(timeout_s: float, actor_state: str | None, options: dict[str, Any]) -> str:
    """Why a child is not up after ``timeout_s``, from its actor's state in the GCS."""
    if actor_state in ("PENDING_CREATION", "DEPENDENCIES_UNREADY"):
        return (f"was not placed within {timeout_s:.1f} s: no alive node has free what it asks "
                f"for ({placement_of(options)})")
    if actor_state == "ALIVE":
        return f"did not finish its constructor within {timeout_s:.1f} s"
    return (f"did not start within {timeout_s:.1f} s (no node satisfies its options, or its "
            f"constructor is slow)")


def placement_of(options: dict[str, Any]) -> str:
    """The options that decide where an actor can run, for messages."""
    parts = []
    for key in _PLACEMENT_OPTIONS:
        if key not in options or options[key] is None:
            continue
        value = options[key]
        if isinstance(value, NodeAffinitySchedulingStrategy):
            value = f"node {value.node_id[:12]}{' (soft)' if value.soft else ''}"
        parts.append(f"{key}={value}")
    if "num_cpus" not in options:
        parts.insert(0, "num_cpus=1 (Ray's default to place an actor)")
    return ", ".join(parts)
