"""Quorum arithmetic and vote counting (pure: no Ray): majorities, static member lists, the
decision rule and its deterministic tie-break. Public names are re-exported by
``herd.platform.quorum``."""

from __future__ import annotations

import json
import math
from collections.abc import Hashable, Iterable
from typing import Any, TypeGuard

from herd.platform.errors import ConfigError


# ------------------------------------------------------------------------------- arithmetic
def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def quorum_count(n: int) -> int:
    """Votes needed for a majority of ``n`` members: ``n // 2 + 1``.

    Two sets of that size drawn from the same ``n`` members always share a member, which is what
    makes a majority safe: two disjoint groups can never both decide.
    """
    if not _is_int(n) or n < 1:
        raise ConfigError("member count must be an integer >= 1", source="quorum", field="n",
                          value=n)
    return n // 2 + 1


def _members(members: Any, source: str, field_name: str) -> list[Hashable]:
    """A static member list: a non-string iterable of unique hashable ids, at least one."""
    if isinstance(members, (str, bytes)) or not isinstance(members, Iterable):
        raise ConfigError("must be a member count or a list of member ids", source=source,
                          field=field_name, value=members)
    listed = list(members)
    try:
        unique = set(listed)
    except TypeError as exc:
        raise ConfigError("member ids must be hashable", source=source, field=field_name,
                          value=listed) from exc
    if not listed:
        raise ConfigError("needs at least one member", source=source, field=field_name,
                          value=listed)
    if len(unique) != len(listed):
        raise ConfigError("member ids must be unique", source=source, field=field_name,
                          value=listed)
    return listed


def has_quorum(votes: int | Iterable[Hashable], n: int | Iterable[Hashable]) -> bool:
    """True when ``votes`` reach a majority (:func:`quorum_count`) of ``n``.

    ``n`` is the member count or the static member list. ``votes`` is a vote count or the ids of
    the voters; with a member list only listed members count, and a voter listed twice counts
    once, so two disjoint sets of voters can never both have quorum. Impossible input (more
    votes than members, a negative count, a string where a list belongs) is a ``ConfigError``.
    """
    members: set[Hashable] | None = None
    if _is_int(n):
        total = n
    else:
        members = set(_members(n, "has_quorum", "n"))
        total = len(members)
    needed = quorum_count(total)  # validates an integer n
    if _is_int(votes):
        if not 0 <= votes <= total:
            raise ConfigError(f"vote count must be in 0..{total}", source="has_quorum",
                              field="votes", value=votes)
        return votes >= needed
    if isinstance(votes, (str, bytes, bool)) or not isinstance(votes, Iterable):
        raise ConfigError("must be a vote count or a list of voter ids", source="has_quorum",
                          field="votes", value=votes)
    try:
        voters = set(votes)
    except TypeError as exc:
        raise ConfigError("voter ids must be hashable", source="has_quorum", field="votes",
                          value=votes) from exc
    if members is None:
        if len(voters) > total:
            raise ConfigError(f"{len(voters)} distinct voters but only {total} members",
                              source="has_quorum", field="votes", value=sorted(map(str, voters)))
        return len(voters) >= needed
    return len(voters & members) >= needed


def check_count(value: Any, low: int, high: float, source: str, field_name: str) -> int:
    """``value`` if it is an integer in ``low..high`` (``high`` may be ``math.inf``)."""
    if not _is_int(value) or not low <= value <= high:
        bounds = f">= {low}" if math.isinf(high) else f"in {low}..{int(high)}"
        raise ConfigError(f"must be an integer {bounds}", source=source, field=field_name,
                          value=value)
    return value


def check_timeout(timeout: Any, source: str) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) \
            or not math.isfinite(timeout) or timeout <= 0:
        raise ConfigError("must be a positive number of seconds", source=source, field="timeout",
                          value=timeout)
    return float(timeout)


# --------------------------------------------------------------------------- tie breaking
def tie_break_key(value: Any) -> tuple[int, str, str]:
    """Canonical sort key of a vote value; of values with equally many votes the smallest wins.

    JSON-serialisable values sort by their canonical JSON (sorted keys, no whitespace) and come
    before all others, which sort by ``repr``; the type's qualified name separates values with the
    same text (``[1, 2]`` and ``(1, 2)``). The key is the same in every process, so every caller
    breaks a tie the same way, provided non-JSON values have a stable ``repr`` (not the default
    ``<object at 0x...>``).
    """
    kind = f"{type(value).__module__}.{type(value).__qualname__}"
    try:
        return (0, json.dumps(value, sort_keys=True, separators=(",", ":")), kind)
    except (TypeError, ValueError):
        return (1, repr(value), kind)


def tally(values: Iterable[Any]) -> list[tuple[Any, int]]:
    """Votes grouped by equal value (``==``), most votes first, ties by :func:`tie_break_key`.

    A group is represented by its first value in input order.
    """
    groups: list[list[Any]] = []
    for value in values:
        for group in groups:
            if group[0] == value:
                group[1] += 1
                break
        else:
            groups.append([value, 1])
    ordered = sorted(groups, key=lambda g: (-g[1], tie_break_key(g[0])))
    return [(value, count) for value, count in ordered]


def majority_value(values: Iterable[Any], needed: int, pending: int = 0) -> tuple[Any, int] | None:
    """The winning value of a vote and its vote count, or None while undecided or lost.

    The winner is the value with the most votes (ties: smallest :func:`tie_break_key`) and it
    needs at least ``needed`` votes. With ``pending`` votes still outstanding a winner is only
    returned once no outcome of those votes could change it (the runner-up plus every pending
    vote stays below it), so an early answer is the answer all votes would have given.
    """
    check_count(needed, 1, math.inf, "majority_value", "needed")
    check_count(pending, 0, math.inf, "majority_value", "pending")
    groups = tally(values)
    if not groups:
        return None
    value, count = groups[0]
    runner_up = groups[1][1] if len(groups) > 1 else 0
    if count < needed or (pending and runner_up + pending >= count):
        return None
    return value, count


def reachable(values: list[Any], needed: int, pending: int) -> bool:
    """Can some value (one already voted for, or a new one) still get ``needed`` votes?"""
    groups = tally(values)
    return (groups[0][1] if groups else 0) + pending >= needed

