"""Quorum arithmetic and quorum calls over Ray.

Quorum is always counted against a **static** member list fixed in configuration, never against
the members currently alive: a majority of a list that shrinks as nodes die is no majority at all
(Horde's quorum bug: two halves of a split each see a "majority" of what they can reach).

``QuorumCall`` waits on replica calls (``ObjectRef``s) until ``required`` of them succeed, or
enough have failed that ``required`` can no longer be reached, or the deadline passes. Pending
calls are left running (the caller may still read them); nothing is cancelled.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import RayError

from herd.platform import rpc
from herd.platform.errors import ConfigError, HerdTimeoutError, NoQuorum
from herd.platform.logging import get_logger

log = get_logger("herd.quorum")


def majority(n: int) -> int:
    """The smallest count that is more than half of ``n`` members (``n // 2 + 1``)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError("member count must be an integer >= 1", source="quorum", field="n",
                          value=n)
    return n // 2 + 1


def has_quorum(live: Iterable[str], static_members: Sequence[str]) -> bool:
    """True when the live members include a majority of ``static_members``.

    Members that are not in the static list do not count, nor do duplicates; so two disjoint
    sets of live members can never both have quorum.
    """
    if isinstance(static_members, str):
        raise ConfigError("must be a list of member ids, not a string", source="quorum",
                          field="static_members", value=static_members)
    static = set(static_members)
    if not static:
        raise ConfigError("needs at least one member", source="quorum", field="static_members",
                          value=list(static_members))
    if len(static) != len(static_members):
        raise ConfigError("member ids must be unique", source="quorum", field="static_members",
                          value=list(static_members))
    return len(static.intersection(live)) >= majority(len(static))


def _describe(exc: BaseException) -> str:
    """One line for an error: a task error is described by the exception the task raised."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        exc = cause
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


@dataclass
class QuorumResult:
    """Outcome of a quorum call; indexes refer to the list of refs given to ``QuorumCall``."""

    required: int
    total: int
    successes: dict[int, Any] = field(default_factory=dict)
    failures: dict[int, BaseException] = field(default_factory=dict)

    @property
    def pending(self) -> list[int]:
        return [i for i in range(self.total) if i not in self.successes and i not in self.failures]

    @property
    def reached(self) -> bool:
        return len(self.successes) >= self.required

    @property
    def impossible(self) -> bool:
        """Too many calls failed for ``required`` successes to remain possible."""
        return self.total - len(self.failures) < self.required

    @property
    def values(self) -> list[Any]:
        """Successful results in the order of the refs."""
        return [self.successes[i] for i in sorted(self.successes)]

    def summary(self) -> str:
        failed = "; ".join(f"#{i}: {_describe(e)}" for i, e in sorted(self.failures.items()))
        return (f"{len(self.successes)} of {self.total} succeeded, {len(self.failures)} failed, "
                f"{len(self.pending)} pending; {self.required} required"
                + (f" (failures: {failed})" if failed else ""))


class QuorumNotReached(NoQuorum):
    """Enough replica calls failed that the required number of successes became impossible."""

    def __init__(self, what: str, result: QuorumResult) -> None:
        self.result = result
        super().__init__(f"{what}: no quorum: {result.summary()}")


class QuorumTimeout(HerdTimeoutError):
    """The deadline passed before the required number of replica calls succeeded."""

    def __init__(self, what: str, timeout: float, result: QuorumResult) -> None:
        self.result = result
        super().__init__(f"{what}: quorum not reached within {timeout:.1f} s: {result.summary()}")


class QuorumCall:
    """Wait for ``required`` (default: a majority) of ``refs`` to succeed.

    ``wait()`` returns a :class:`QuorumResult` as soon as quorum is reached, raises
    :class:`QuorumNotReached` (a ``NoQuorum``) as soon as it has become impossible, and
    :class:`QuorumTimeout` (a ``HerdTimeoutError``) when ``timeout`` seconds pass first. A call
    that raised (task error, dead actor) counts as a failure.
    """

    def __init__(self, refs: Sequence[ray.ObjectRef], required: int | None = None,
                 timeout: float | None = None, what: str = "quorum call") -> None:
        if not refs:
            raise ConfigError("needs at least one call", source="QuorumCall", field="refs",
                              value=list(refs))
        if not all(isinstance(ref, ray.ObjectRef) for ref in refs):
            raise ConfigError("must be Ray ObjectRefs", source="QuorumCall", field="refs",
                              value=list(refs))
        if len(set(refs)) != len(refs):
            raise ConfigError("refs must be unique", source="QuorumCall", field="refs",
                              value=list(refs))
        required = majority(len(refs)) if required is None else required
        if isinstance(required, bool) or not isinstance(required, int) \
                or not 1 <= required <= len(refs):
            raise ConfigError(f"must be an integer in 1..{len(refs)}", source="QuorumCall",
                              field="required", value=required)
        timeout = rpc.DEFAULT_TIMEOUT_S if timeout is None else timeout
        if timeout <= 0:
            raise ConfigError("must be positive", source="QuorumCall", field="timeout",
                              value=timeout)
        self.refs = list(refs)
        self.required = required
        self.timeout = timeout
        self.what = what

    def wait(self) -> QuorumResult:
        deadline = time.monotonic() + self.timeout
        result = QuorumResult(required=self.required, total=len(self.refs))
        index = {ref: i for i, ref in enumerate(self.refs)}
        remaining = list(self.refs)
        while not result.reached:
            if result.impossible:
                log.warning("quorum_not_reached", what=self.what, summary=result.summary())
                raise QuorumNotReached(self.what, result)
            left = deadline - time.monotonic()
            if left <= 0:
                log.warning("quorum_timeout", what=self.what, summary=result.summary())
                raise QuorumTimeout(self.what, self.timeout, result)
            ready, remaining = ray.wait(remaining, num_returns=1, timeout=left,
                                        fetch_local=True)
            for ref in ready:
                try:
                    result.successes[index[ref]] = rpc.get(ref, timeout=left, what=self.what)
                except RayError as exc:
                    result.failures[index[ref]] = exc
        return result
