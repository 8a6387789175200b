"""The children a member runs on its node, and how one is stopped."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from herd.supervisors.dynamic.planner import RunningChild
from herd.supervisors.otp.lifecycle import Incarnation, shutdown
from herd.supervisors.otp.spec import ChildSpec

SUPERSEDED = "superseded"


@dataclass(eq=False)
class Running:
    """A child this member started: ``number`` is the incarnation its claim won; ``stopping``
    once an operation has begun to stop it (its exit is then not a crash)."""

    spec: ChildSpec
    incarnation: Incarnation
    number: int
    stopping: bool = False


class RunningChildren:
    """Child id -> its ``Running``, in start order."""

    def __init__(self) -> None:
        self._runs: dict[str, Running] = {}

    def __contains__(self, child_id: object) -> bool:
        return child_id in self._runs

    def __len__(self) -> int:
        return len(self._runs)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._runs))

    def get(self, child_id: str) -> Running | None:
        return self._runs.get(child_id)

    def add(self, child_id: str, run: Running) -> None:
        self._runs[child_id] = run

    def discard(self, child_id: str, run: Running) -> None:
        """Forget ``run`` (only if it is still the child's current run)."""
        if self._runs.get(child_id) is run:
            del self._runs[child_id]

    def current(self, child_id: str, incarnation: int | None = None) -> Running | None:
        """The child's run unless it is stopping (or is not incarnation ``incarnation``)."""
        run = self._runs.get(child_id)
        if run is None or run.stopping or incarnation not in (None, run.number):
            return None
        return run

    def view(self) -> dict[str, RunningChild]:
        """What the reconcile planner needs to know of them."""
        return {cid: RunningChild(run.number, run.stopping) for cid, run in self._runs.items()}

    async def stop(self, child_id: str, reason: str, brutal: bool = False) -> str | None:
        """Stop the child (OTP shutdown, or at once when ``brutal``); its exit reason, or None
        when it is not running."""
        run = self._runs.get(child_id)
        if run is None:
            return None
        run.stopping = True
        try:
            return await stop_run(run, reason, brutal)
        finally:
            self.discard(child_id, run)


async def stop_run(run: Running, reason: str, brutal: bool = False) -> str:
    run.stopping = True
    spec = run.spec.model_copy(update={"shutdown": "brutal_kill"}) if brutal else run.spec
    return await shutdown(run.incarnation, spec, reason)
