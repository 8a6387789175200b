"""The OTP supervisor state machine, ported from ``supervisor.erl`` (non-simple strategies).

It decides and sequences; a :class:`Runner` does the side effects (start a child, stop one), so
this module needs no Ray and is unit-tested with an in-memory runner. Its caller (the supervisor
actor) must run one operation at a time, like the gen_server loop of ``supervisor.erl``, and after
each operation hand the ids from :meth:`SupervisorCore.take_retries` back as new operations (OTP's
``try_again_restart`` cast, which lets other requests in between).

Semantics, as in ``supervisor.erl``:

* children start in list order and stop in reverse order; ``start_child`` appends.
* a child that exits is handled by its restart type: ``permanent`` always restarts;
  ``transient`` restarts unless the reason is normal (``normal``, ``shutdown``,
  ``shutdown:<detail>``); ``temporary`` never restarts and is forgotten. A ``transient`` child
  that exited normally keeps its spec (``restart_child`` can start it again).
* each restart is counted (:class:`RestartIntensity`); exceeding the intensity stops the
  supervisor with reason ``shutdown`` after terminating all children in reverse order. The
  core says so with a :class:`Stop` that also tells what happened (OTP's error report:
  ``reached_max_restart_intensity``, which child, the intensity).
* ``one_for_all`` / ``rest_for_one`` terminate the affected siblings in reverse start order, then
  start them again in order; temporary siblings are terminated and forgotten, never restarted.
* a restart whose start fails marks the child ``restarting`` and queues a retry; the retry is a
  new restart (counted against the intensity). For ``one_for_all`` it terminates the siblings
  already restarted; for ``rest_for_one`` it restarts from the failed child only.
* ``auto_shutdown``: when a significant child exits on its own and is not restarted, the
  supervisor stops with ``shutdown`` (``any_significant``), or does so once no significant child
  is left running (``all_significant``). Children the supervisor terminates itself never count.

Where herd differs from ``supervisor.erl``, and why:

* ``which_children`` lists children in start order (OTP: reverse start order), as Python callers
  expect; ``count_children``'s ``active`` counts the incarnations the supervisor knows to run
  (OTP asks ``is_process_alive``; here an exit not yet handled is still counted).
* API errors are exceptions (``ChildNotFound``, ``ChildRunning``, ``StartChildError``...) instead
  of ``{error, ...}`` tuples; there is no ``ignore`` start result, no ``simple_one_for_one``
  (``DynamicSupervisor`` covers it), no ``get_childspec``/``check_childspecs`` (a ``ChildSpec`` is
  validated when built) and no code change.
* exit reasons are strings; OTP's ``{shutdown, Term}`` is ``"shutdown:<detail>"`` and a process
  that died without a reason (kill, crash, node loss) exits with ``"killed"``.
* the intensity window uses monotonic float seconds (OTP: whole seconds); the rule is the same.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, Literal, Protocol, TypeVar

from herd.platform.logging import get_logger
from herd.supervisors.errors import (
    ChildAlreadyPresent,
    ChildAlreadyStarted,
    ChildNotFound,
    ChildRestarting,
    ChildRunning,
    StartChildError,
)
from herd.supervisors.otp.exit import KILLED, SHUTDOWN, is_normal
from herd.supervisors.otp.intensity import RestartIntensity
from herd.supervisors.otp.spec import ChildSpec, SupervisorSpec, check_significant

__all__ = ["Child", "ChildStatus", "Runner", "Stop", "SupervisorCore"]

log = get_logger("herd.supervisors.otp.core")

R = TypeVar("R")
ChildStatus = Literal["running", "restarting", "undefined"]


class Runner(Protocol[R]):
    """Side effects of a supervisor: ``R`` is whatever identifies one running incarnation."""

    async def start(self, spec: ChildSpec) -> R:
        """Start a child; raise ``StartChildError`` (leaving nothing running) if it fails."""
        ...

    async def stop(self, spec: ChildSpec, running: R) -> str:
        """Stop a running child per ``spec.shutdown``; return its exit reason."""
        ...


@dataclass(frozen=True)
class Stop:
    """The core's decision that its supervisor must stop: the exit reason its watchers get, and
    what happened, for people (``str(stop)``: ``"shutdown: reached_max_restart_intensity
    (child 'db' exited with reason 'killed'; 4 restarts within 5 s, max_restarts=3)"``)."""

    reason: str
    detail: str

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"


@dataclass(eq=False)
class Child(Generic[R]):
    """A child spec and its current incarnation (OTP's ``#child{}`` record)."""

    spec: ChildSpec
    running: R | None = None
    restarting: bool = False

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def status(self) -> ChildStatus:
        if self.running is not None:
            return "running"
        return "restarting" if self.restarting else "undefined"


class SupervisorCore(Generic[R]):
    """The state of one supervisor: its flags, its children in start order, its restarts."""

    def __init__(self, name: str, spec: SupervisorSpec, runner: Runner[R],
                 clock: Callable[[], float] | None = None) -> None:
        self.name = name
        self.strategy = spec.strategy
        self.auto_shutdown = spec.auto_shutdown
        self.runner = runner
        self.intensity = (RestartIntensity(spec.max_restarts, spec.max_seconds, clock)
                          if clock else RestartIntensity(spec.max_restarts, spec.max_seconds))
        self.children: list[Child[R]] = []
        self._retries: list[str] = []
        self._log = log.bind(supervisor=name)

    # ------------------------------------------------------------------ init and API calls
    async def init(self, specs: Iterable[ChildSpec]) -> None:
        """Start the initial children in order; if one fails, terminate the ones started (in
        reverse order) and raise ``StartChildError`` naming it."""
        for spec in specs:
            try:
                running = await self.runner.start(spec)
            except StartChildError as exc:
                self._log.error("start_error", child_id=spec.id, reason=str(exc))
                await self.terminate_all()
                raise StartChildError(f"supervisor {self.name!r}: failed to start child "
                                      f"{spec.id!r}: {exc}") from exc.__cause__
            self.children.append(Child(spec, running))
            self._log.info("child_started", child_id=spec.id)

    async def start_child(self, spec: ChildSpec) -> Child[R]:
        check_significant(spec, self.auto_shutdown)
        existing = self._find(spec.id)
        if existing is not None:
            if existing.running is not None:
                raise ChildAlreadyStarted(spec.id)
            raise ChildAlreadyPresent(spec.id)
        running = await self.runner.start(spec)
        child = Child(spec, running)
        self.children.append(child)
        self._log.info("child_started", child_id=spec.id)
        return child

    async def terminate_child(self, child_id: str) -> None:
        child = self._get(child_id)
        await self._do_terminate(child)
        self._del_child(child)

    async def restart_child(self, child_id: str) -> Child[R]:
        child = self._get(child_id)
        self._require_undefined(child)
        child.running = await self.runner.start(child.spec)
        self._log.info("child_started", child_id=child_id)
        return child

    async def delete_child(self, child_id: str) -> None:
        child = self._get(child_id)
        self._require_undefined(child)
        self.children.remove(child)

    def count_children(self) -> dict[str, int]:
        supervisors = sum(1 for c in self.children if c.spec.type == "supervisor")
        return {"specs": len(self.children),
                "active": sum(1 for c in self.children if c.running is not None),
                "supervisors": supervisors, "workers": len(self.children) - supervisors}

    async def terminate_all(self) -> None:
        """Terminate every child in reverse start order (the supervisor is stopping)."""
        await self._terminate_children(list(reversed(self.children)))

    # ------------------------------------------------------------------ exits and restarts
    async def child_exited(self, running: R, reason: str) -> Stop | None:
        """A child's incarnation ``running`` exited with ``reason``. Returns a :class:`Stop`
        (reason ``"shutdown"``) when the supervisor must now stop (intensity exceeded, or
        auto_shutdown), else None. Exits of incarnations that are no longer current (the
        supervisor stopped them) are ignored."""
        child = next((c for c in self.children if c.running is running), None)
        if child is None:
            return None
        child.running = None
        if child.spec.restart == "permanent":
            self._log.error("child_terminated", child_id=child.id, reason=reason)
            return await self._restart(child, f"exited with reason {reason!r}")
        if is_normal(reason):
            self._log.info("child_exited", child_id=child.id, reason=reason)
            self._del_child(child)
            return self._auto_shutdown(child, reason)
        self._log.error("child_terminated", child_id=child.id, reason=reason)
        if child.spec.restart == "transient":
            return await self._restart(child, f"exited with reason {reason!r}")
        self._del_child(child)
        return self._auto_shutdown(child, reason)

    async def try_again(self, child_id: str) -> Stop | None:
        """Retry the restart of a child whose restart failed (if it is still waiting for one)."""
        child = self._find(child_id)
        if child is None or not child.restarting:
            return None
        return await self._restart(child, "failed to restart")

    def take_retries(self) -> list[str]:
        """Ids whose restart failed during the last operation, to be retried as new operations."""
        retries, self._retries = self._retries, []
        return retries

    async def _restart(self, child: Child[R], what: str) -> Stop | None:
        """Restart ``child`` (which ``what``: "exited with reason 'killed'") per the strategy,
        unless this restart exceeds the intensity."""
        if not self.intensity.add():
            limit = self.intensity
            self._log.error("reached_max_restart_intensity", child_id=child.id,
                            max_restarts=limit.max_restarts, max_seconds=limit.max_seconds)
            self._del_child(child)
            return Stop(SHUTDOWN, f"reached_max_restart_intensity (child {child.id!r} {what}; "
                                  f"{limit.recent()} restarts within {limit.max_seconds:g} s, "
                                  f"max_restarts={limit.max_restarts})")
        if self.strategy == "one_for_one":
            await self._start_group([child])
        elif self.strategy == "rest_for_one":
            await self._restart_group(self.children[self.children.index(child):])
        else:
            await self._restart_group(list(self.children))
        return None

    async def _restart_group(self, group: list[Child[R]]) -> None:
        """Terminate ``group`` in reverse order, forget its temporary children, start the rest."""
        await self._terminate_children(list(reversed(group)))
        await self._start_group([c for c in group if c in self.children])

    async def _start_group(self, group: list[Child[R]]) -> None:
        for child in group:
            child.running = None
            try:
                child.running = await self.runner.start(child.spec)
            except StartChildError as exc:
                self._log.error("start_error", child_id=child.id, reason=str(exc))
                child.restarting = True
                self._retries.append(child.id)
                return
            child.restarting = False
            self._log.info("child_restarted", child_id=child.id)

    def _auto_shutdown(self, child: Child[R], reason: str) -> Stop | None:
        if self.auto_shutdown == "never" or not child.spec.significant:
            return None
        if self.auto_shutdown == "all_significant" and any(
                c.spec.significant and c.status != "undefined" for c in self.children):
            return None
        self._log.info("auto_shutdown", child_id=child.id, auto_shutdown=self.auto_shutdown)
        return Stop(SHUTDOWN, f"auto_shutdown (significant child {child.id!r} exited with reason "
                              f"{reason!r}; auto_shutdown={self.auto_shutdown})")

    # ------------------------------------------------------------------ helpers
    async def _terminate_children(self, children: list[Child[R]]) -> None:
        """Terminate ``children`` in the order given; temporary ones are forgotten."""
        for child in children:
            await self._do_terminate(child)
            self._del_child(child)

    async def _do_terminate(self, child: Child[R]) -> None:
        running = child.running
        if running is None:
            return
        child.running = None
        reason = await self.runner.stop(child.spec, running)
        expected = (reason == SHUTDOWN
                    or (reason == KILLED and child.spec.shutdown == "brutal_kill")
                    or (child.spec.restart != "permanent" and is_normal(reason)))
        if not expected:
            self._log.error("shutdown_error", child_id=child.id, reason=reason)

    def _del_child(self, child: Child[R]) -> None:
        """OTP ``del_child``: a temporary child is forgotten, others keep their spec."""
        child.running = None
        child.restarting = False
        if child.spec.restart == "temporary" and child in self.children:
            self.children.remove(child)

    def _find(self, child_id: str) -> Child[R] | None:
        return next((c for c in self.children if c.id == child_id), None)

    def _get(self, child_id: str) -> Child[R]:
        child = self._find(child_id)
        if child is None:
            raise ChildNotFound(f"supervisor {self.name!r} has no child {child_id!r}")
        return child

    @staticmethod
    def _require_undefined(child: Child[R]) -> None:
        if child.running is not None:
            raise ChildRunning(child.id)
        if child.restarting:
            raise ChildRestarting(child.id)
