"""The OTP decision core (herd.supervisors.otp.core) with an in-memory runner: restart types,
strategies, stop order, intensity, failed restarts and auto_shutdown, as supervisor.erl does them.
No Ray: the runner records what a real one would start and stop."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from herd.platform.errors import ConfigError
from herd.supervisors.errors import (
    ChildAlreadyPresent,
    ChildAlreadyStarted,
    ChildNotFound,
    ChildRestarting,
    ChildRunning,
    StartChildError,
)
from herd.supervisors.otp.core import SupervisorCore
from herd.supervisors.otp.spec import ChildSpec, SupervisorSpec


class Worker:
    pass


@dataclass(eq=False)
class Proc:
    id: str
    n: int


@dataclass
class FakeRunner:
    events: list[tuple[str, str]] = field(default_factory=list)
    failing: dict[str, int] = field(default_factory=dict)  # id -> how many starts fail
    started: int = 0

    async def start(self, spec: ChildSpec) -> Proc:
        if self.failing.get(spec.id, 0) > 0:
            self.failing[spec.id] -= 1
            self.events.append(("start_failed", spec.id))
            raise StartChildError(f"{spec.id} refused to start")
        self.started += 1
        self.events.append(("start", spec.id))
        return Proc(spec.id, self.started)

    async def stop(self, spec: ChildSpec, running: Proc) -> str:
        self.events.append(("stop", spec.id))
        return "killed" if spec.shutdown == "brutal_kill" else "shutdown"

    def take(self) -> list[tuple[str, str]]:
        events, self.events = self.events, []
        return events


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def child(cid: str, **kw: Any) -> ChildSpec:
    return ChildSpec(id=cid, actor=Worker, **kw)


def make(*children: ChildSpec, **flags: Any) -> tuple[SupervisorCore[Proc], FakeRunner, Clock]:
    runner, clock = FakeRunner(), Clock()
    spec = SupervisorSpec(children=list(children), **flags)
    core: SupervisorCore[Proc] = SupervisorCore("sup", spec, runner, clock)
    run(core.init(spec.children))
    runner.take()
    return core, runner, clock


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def proc(core: SupervisorCore[Proc], cid: str) -> Proc:
    found = next(c for c in core.children if c.id == cid)
    assert found.running is not None, f"{cid} is not running"
    return found.running


def crash(core: SupervisorCore[Proc], cid: str, reason: str = "abnormal") -> str | None:
    """The child exits: None, or why the supervisor must stop (``str`` of the core's Stop)."""
    stop = run(core.child_exited(proc(core, cid), reason))
    return None if stop is None else str(stop)


def statuses(core: SupervisorCore[Proc]) -> dict[str, str]:
    return {c.id: c.status for c in core.children}


# -------------------------------------------------------------------------------- restart types
def test_permanent_restarted_after_normal_exit() -> None:
    core, runner, _ = make(child("c1"))
    assert crash(core, "c1", "normal") is None
    assert runner.take() == [("start", "c1")]
    assert core.count_children() == {"specs": 1, "active": 1, "supervisors": 0, "workers": 1}


def test_transient_kept_but_not_restarted_after_normal_or_shutdown() -> None:
    for reason in ("normal", "shutdown", "shutdown:done"):
        core, runner, _ = make(child("c1", restart="transient"))
        crash(core, "c1", reason)
        assert runner.take() == []
        assert statuses(core) == {"c1": "undefined"}
    core, runner, _ = make(child("c1", restart="transient"))
    crash(core, "c1", "error: boom")
    assert runner.take() == [("start", "c1")]


def test_temporary_forgotten_whatever_the_reason() -> None:
    for reason in ("normal", "killed"):
        core, runner, _ = make(child("c1", restart="temporary"))
        crash(core, "c1", reason)
        assert runner.take() == [] and core.children == []


def test_exit_of_an_old_incarnation_is_ignored() -> None:
    core, runner, _ = make(child("c1"))
    old = proc(core, "c1")
    crash(core, "c1")
    runner.take()
    assert run(core.child_exited(old, "killed")) is None
    assert runner.take() == []


# -------------------------------------------------------------------------------- strategies
def test_one_for_one_restarts_only_the_crashed_child() -> None:
    core, runner, _ = make(child("c1"), child("c2"), child("c3"))
    crash(core, "c2")
    assert runner.take() == [("start", "c2")]


def test_one_for_all_stops_others_in_reverse_and_restarts_all_in_order() -> None:
    core, runner, _ = make(child("c1"), child("c2"), child("c3"), strategy="one_for_all")
    crash(core, "c2")
    assert runner.take() == [("stop", "c3"), ("stop", "c1"),
                             ("start", "c1"), ("start", "c2"), ("start", "c3")]


def test_rest_for_one_restarts_the_crashed_child_and_those_after_it() -> None:
    core, runner, _ = make(child("c1"), child("c2"), child("c3"), strategy="rest_for_one")
    crash(core, "c2")
    assert runner.take() == [("stop", "c3"), ("start", "c2"), ("start", "c3")]
    crash(core, "c3")
    assert runner.take() == [("start", "c3")]


@pytest.mark.parametrize("strategy", ["one_for_all", "rest_for_one"])
def test_temporary_bystander_is_stopped_and_forgotten(strategy: str) -> None:
    """OTP temporary_bystander."""
    core, runner, _ = make(child("c1"), child("c2", restart="temporary"), strategy=strategy,
                           max_restarts=2)
    crash(core, "c1", "normal")
    assert runner.take() == [("stop", "c2"), ("start", "c1")]
    assert [c.id for c in core.children] == ["c1"]


def test_start_child_appends_and_stop_all_is_reverse() -> None:
    core, runner, _ = make(child("c1"))
    run(core.start_child(child("c2")))
    run(core.terminate_all())
    assert runner.take() == [("start", "c2"), ("stop", "c2"), ("stop", "c1")]


# -------------------------------------------------------------------------------- intensity
def test_intensity_exceeded_stops_everything() -> None:
    core, runner, clock = make(child("c1"), child("c2"), max_restarts=2, max_seconds=10)
    assert crash(core, "c1") is None
    assert crash(core, "c1") is None
    clock.now += 9
    assert crash(core, "c2") == ("shutdown: reached_max_restart_intensity (child 'c2' exited "
                                 "with reason 'abnormal'; 3 restarts within 10 s, "
                                 "max_restarts=2)")
    assert runner.take() == [("start", "c1"), ("start", "c1")]
    run(core.terminate_all())
    assert runner.take() == [("stop", "c1")]


def test_intensity_not_exceeded_when_restarts_are_spread_out() -> None:
    core, runner, clock = make(child("c1"), max_restarts=1, max_seconds=1)
    for _ in range(4):
        assert crash(core, "c1") is None
        clock.now += 2.1
    assert core.count_children()["active"] == 1


# -------------------------------------------------------------------------------- failed restarts
def test_failed_restart_counts_and_is_retried_until_intensity() -> None:
    """OTP one_for_one_escalation: the restarted child keeps failing to start."""
    core, runner, _ = make(child("c1"), child("c2"), max_restarts=4)
    runner.failing["c1"] = 100
    outcome = crash(core, "c1")
    assert outcome is None and statuses(core)["c1"] == "restarting"
    tries = 1
    while outcome is None:
        assert core.take_retries() == ["c1"]
        outcome = run(core.try_again("c1"))
        tries += 1
    assert outcome is not None and tries == 5
    assert outcome.reason == "shutdown"
    assert outcome.detail == ("reached_max_restart_intensity (child 'c1' failed to restart; "
                              "5 restarts within 5 s, max_restarts=4)")
    runner.take()
    run(core.terminate_all())
    assert runner.take() == [("stop", "c2")]


def test_failed_restart_then_success() -> None:
    core, runner, _ = make(child("c1"))
    runner.failing["c1"] = 1
    crash(core, "c1")
    assert run(core.try_again(*core.take_retries())) is None
    assert statuses(core) == {"c1": "running"}


def test_one_for_all_other_child_fails_restart() -> None:
    """OTP one_for_all_other_child_fails_restart: the retry stops the already restarted c1."""
    core, runner, _ = make(child("c1"), child("c2"), strategy="one_for_all", max_restarts=3)
    runner.failing["c2"] = 1
    crash(core, "c1")
    assert runner.take() == [("stop", "c2"), ("start", "c1"), ("start_failed", "c2")]
    assert statuses(core) == {"c1": "running", "c2": "restarting"}
    run(core.try_again(*core.take_retries()))
    assert runner.take() == [("stop", "c1"), ("start", "c1"), ("start", "c2")]


def test_rest_for_one_other_child_fails_restart() -> None:
    """OTP rest_for_one_other_child_fails_restart: the retry restarts c2, not c1 again."""
    core, runner, _ = make(child("c1"), child("c2"), strategy="rest_for_one", max_restarts=3)
    runner.failing["c2"] = 1
    crash(core, "c1")
    assert runner.take() == [("stop", "c2"), ("start", "c1"), ("start_failed", "c2")]
    run(core.try_again(*core.take_retries()))
    assert runner.take() == [("start", "c2")]


def test_retry_of_a_child_terminated_meanwhile_does_nothing() -> None:
    core, runner, _ = make(child("c1"))
    runner.failing["c1"] = 1
    crash(core, "c1")
    run(core.terminate_child("c1"))
    assert run(core.try_again(*core.take_retries())) is None
    assert statuses(core) == {"c1": "undefined"}


# -------------------------------------------------------------------------------- init and API
def test_init_failure_stops_started_children_in_reverse() -> None:
    runner = FakeRunner(failing={"c3": 1})
    spec = SupervisorSpec(children=[child("c1"), child("c2"), child("c3"), child("c4")])
    core: SupervisorCore[Proc] = SupervisorCore("sup", spec, runner)
    with pytest.raises(StartChildError, match="c3"):
        run(core.init(spec.children))
    assert runner.take() == [("start", "c1"), ("start", "c2"), ("start_failed", "c3"),
                             ("stop", "c2"), ("stop", "c1")]


def test_child_administration() -> None:
    """OTP child_adm."""
    core, runner, _ = make(child("c1"))
    with pytest.raises(ChildAlreadyStarted):
        run(core.start_child(child("c1")))
    with pytest.raises(ChildNotFound):
        run(core.terminate_child("hej"))
    run(core.terminate_child("c1"))
    assert statuses(core) == {"c1": "undefined"}
    run(core.terminate_child("c1"))  # terminating a stopped child succeeds
    with pytest.raises(ChildAlreadyPresent):
        run(core.start_child(child("c1")))
    run(core.restart_child("c1"))
    with pytest.raises(ChildRunning):
        run(core.restart_child("c1"))
    with pytest.raises(ChildRunning):
        run(core.delete_child("c1"))
    with pytest.raises(ChildNotFound):
        run(core.restart_child("c2"))
    run(core.terminate_child("c1"))
    run(core.delete_child("c1"))
    assert core.children == []
    assert runner.take() == [("stop", "c1"), ("start", "c1"), ("stop", "c1")]


def test_restarting_child_cannot_be_restarted_or_deleted() -> None:
    core, runner, _ = make(child("c1"))
    runner.failing["c1"] = 1
    crash(core, "c1")
    with pytest.raises(ChildRestarting):
        run(core.restart_child("c1"))
    with pytest.raises(ChildRestarting):
        run(core.delete_child("c1"))


def test_failed_start_child_keeps_nothing() -> None:
    core, runner, _ = make()
    runner.failing["c1"] = 1
    with pytest.raises(StartChildError):
        run(core.start_child(child("c1")))
    assert core.children == []


def test_significant_child_refused_without_auto_shutdown() -> None:
    core, _, _ = make()
    with pytest.raises(ConfigError):
        run(core.start_child(child("c1", restart="transient", significant=True)))


# -------------------------------------------------------------------------------- auto_shutdown
def test_significant_temporary_any() -> None:
    core, runner, _ = make(child("c1", restart="temporary", significant=True),
                           child("c2", restart="temporary", significant=True),
                           child("c3", restart="temporary"), auto_shutdown="any_significant")
    run(core.terminate_child("c1"))  # stopped by its supervisor: no auto_shutdown
    assert crash(core, "c3", "killed") is None
    assert crash(core, "c2", "killed") == (
        "shutdown: auto_shutdown (significant child 'c2' exited with reason 'killed'; "
        "auto_shutdown=any_significant)")


def test_significant_transient_all() -> None:
    core, runner, _ = make(child("c1", restart="transient", significant=True),
                           child("c2", restart="transient", significant=True),
                           child("c3", restart="transient"), auto_shutdown="all_significant")
    assert crash(core, "c1", "killed") is None  # abnormal: restarted, not significant exit
    assert crash(core, "c1", "normal") is None  # c2 still running
    assert crash(core, "c2", "shutdown") == (
        "shutdown: auto_shutdown (significant child 'c2' exited with reason 'shutdown'; "
        "auto_shutdown=all_significant)")


@pytest.mark.parametrize("strategy", ["one_for_one", "one_for_all", "rest_for_one"])
@pytest.mark.parametrize("auto", ["any_significant", "all_significant"])
def test_significant_bystander(strategy: str, auto: str) -> None:
    """OTP significant_bystander: siblings stopped by a restart do not trigger auto_shutdown."""
    core, runner, _ = make(child("c1", restart="transient", significant=True),
                           child("c2", restart="transient"),
                           child("c3", restart="transient", significant=True),
                           strategy=strategy, auto_shutdown=auto, max_restarts=5)
    assert crash(core, "c2", "killed") is None
    assert all(s == "running" for s in statuses(core).values())
