"""Waiting for a quorum of Ray calls (``ObjectRef``s) with one deadline: ``QuorumCall`` and the
shared wait loop. Public names are re-exported by ``herd.platform.quorum``."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import RayError

from herd.platform import rpc
from herd.platform.errors import ConfigError, HerdTimeoutError, NoQuorum
from herd.platform.logging import get_logger
from herd.platform.quorum.core import check_count, check_timeout, quorum_count

log = get_logger("herd.quorum")

# A ref that ``ray.wait`` reported ready is local, so fetching it is immediate; this floor only
# keeps a fetch right at the deadline from failing with a spurious timeout.
_READY_FETCH_S = 1.0


# --------------------------------------------------------------------------- quorum calls
def describe_error(exc: BaseException) -> str:
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
        failed = "; ".join(f"#{i}: {describe_error(e)}" for i, e in sorted(self.failures.items()))
        return (f"{len(self.successes)} of {self.total} succeeded, {len(self.failures)} failed, "
                f"{len(self.pending)} pending; {self.required} required"
                + (f" (failures: {failed})" if failed else ""))


def collect_until(refs: Sequence[ray.ObjectRef], result: QuorumResult, deadline: float, what: str,
             settled: Callable[[QuorumResult], bool]) -> bool:
    """Record each of ``refs`` in ``result`` as it completes (a value in ``successes``, a Ray
    error in ``failures``) until ``settled(result)``, none is pending, or ``deadline``
    (``time.monotonic()``) passes. Returns False when the deadline passed first."""
    index = {ref: i for i, ref in enumerate(refs)}
    remaining = list(refs)
    while remaining and not settled(result):
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        ready, remaining = ray.wait(remaining, num_returns=1, timeout=left, fetch_local=True)
        for ref in ready:
            try:
                result.successes[index[ref]] = rpc.get(ref, timeout=max(left, _READY_FETCH_S),
                                                       what=what)
            except RayError as exc:
                result.failures[index[ref]] = exc
    return True


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
        self.refs = list(refs)
        self.required = check_count(quorum_count(len(refs)) if required is None else required,
                                     1, len(refs), "QuorumCall", "required")
        self.timeout = check_timeout(rpc.DEFAULT_TIMEOUT_S if timeout is None else timeout,
                                      "QuorumCall")
        self.what = what

    def wait(self) -> QuorumResult:
        deadline = time.monotonic() + self.timeout
        result = QuorumResult(required=self.required, total=len(self.refs))
        collect_until(self.refs, result, deadline, self.what, lambda r: r.reached or r.impossible)
        if result.reached:
            return result
        if result.impossible:
            log.warning("quorum_not_reached", what=self.what, summary=result.summary())
            raise QuorumNotReached(self.what, result)
        log.warning("quorum_timeout", what=self.what, summary=result.summary())
        raise QuorumTimeout(self.what, self.timeout, result)
