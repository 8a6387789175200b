"""The contract between herd's child harness and whoever watches a child (supervisors, registry).

A herd child (an actor built by ``herd.supervisors`` from a user's class) has a method named
``MONITOR_METHOD`` in the concurrency group ``MONITOR_GROUP``. A call to it stays outstanding
until the child decides to exit and then returns the exit reason (a string such as ``"normal"``,
``"shutdown"`` or an error description). If the child's process dies first, Ray fails the call
with ``ActorDiedError`` within milliseconds. Any number of watchers may call it at once.
"""

from __future__ import annotations

from typing import Any

MONITOR_METHOD = "__herd_monitor__"
MONITOR_GROUP = "herd_monitor"


def is_monitorable(handle: Any) -> bool:
    """True when ``handle`` is an actor handle of a herd child (it exposes the monitor method)."""
    return hasattr(handle, MONITOR_METHOD)
