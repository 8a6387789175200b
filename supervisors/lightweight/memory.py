"""A cheap estimate of the memory one lightweight child holds (for status, not accounting).

``tracemalloc`` would attribute allocations exactly but slows every allocation of the host; this
walks the instance instead: ``sys.getsizeof`` of the instance, its ``__dict__`` (or slots) and,
recursively, what they contain, visiting each object once, down to ``MAX_DEPTH`` levels and at
most ``MAX_OBJECTS`` objects (like ``pympler.asizeof`` with a bound). Shared objects (classes,
modules, functions, interned constants) are not counted. The result is a lower bound for large
or deep states.
"""

from __future__ import annotations

import sys
import types
from typing import Any

__all__ = ["MAX_DEPTH", "MAX_OBJECTS", "estimate_bytes", "rss_bytes"]

MAX_DEPTH = 6
MAX_OBJECTS = 10_000
_SHARED = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType,
           types.MethodType, bool, type(None))


def estimate_bytes(instance: Any) -> int:
    """Approximate bytes held by ``instance`` (see the module docstring)."""
    seen: set[int] = set()
    total = 0
    stack: list[tuple[Any, int]] = [(instance, 0)]
    while stack and len(seen) < MAX_OBJECTS:
        obj, depth = stack.pop()
        if id(obj) in seen or isinstance(obj, _SHARED):
            continue
        seen.add(id(obj))
        try:
            total += sys.getsizeof(obj)
        except TypeError:
            continue
        if depth >= MAX_DEPTH:
            continue
        for item in _referents(obj):
            stack.append((item, depth + 1))
    return total


def _referents(obj: Any) -> list[Any]:
    if isinstance(obj, (str, bytes, bytearray, int, float, complex)):
        return []
    if isinstance(obj, dict):
        return [*obj.keys(), *obj.values()]
    if isinstance(obj, (list, tuple, set, frozenset)):
        return list(obj)
    found: list[Any] = []
    attrs = getattr(obj, "__dict__", None)
    if isinstance(attrs, dict):
        found.append(attrs)
    for slot in getattr(type(obj), "__slots__", ()):
        if isinstance(slot, str) and hasattr(obj, slot):
            found.append(getattr(obj, slot))
    return found


def rss_bytes(pid: int | str = "self") -> int | None:
    """Resident memory of process ``pid`` (this one by default); None if it cannot be read
    (gone, or in a PID namespace this process does not see)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None
