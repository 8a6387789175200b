"""OTP supervisor_SUITE (lib/stdlib/test/supervisor_SUITE.erl) ported to herd on a real 3-node
cluster. Each test names the OTP case(s) it ports. Children are real actors; a ``Probe`` actor
records what they see (starts, terminate hooks) so the order of events can be checked."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from typing import Any

import otp_probe
import pytest
import ray
from ray import cloudpickle

from herd.platform import rpc
from herd.platform.control_plane import get_named
from herd.platform.waiting import wait_until
from herd.supervisors import (
    ChildAlreadyPresent,
    ChildAlreadyStarted,
    ChildRunning,
    ChildSpec,
    Supervisor,
    SupervisorSpec,
    exit,
)
from herd.supervisors.errors import ChildNotFound, StartChildError, SupervisorStopped
from herd.supervisors.otp.harness import watch_child

Probe = otp_probe.Probe
WAIT_S = 30.0

# Workers cannot import this test module: ship its classes by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])
cloudpickle.register_pickle_by_value(otp_probe)


class Worker:
    """A child that reports its start and its terminate hook to the probe."""

    def __init__(self, probe: Any, tag: str, hook_sleep_s: float = 0.0) -> None:
        self.probe, self.tag, self.hook_sleep_s = probe, tag, hook_sleep_s
        if rpc.get(probe.take_failure.remote(tag), timeout=10):
            raise RuntimeError(f"{tag} refuses to start")
        rpc.get(probe.record.remote("start", tag), timeout=10)

    def pid(self) -> int:
        return os.getpid()

    def exit(self, reason: str) -> str:
        exit(reason)
        return reason

    def sleep(self, seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    def terminate(self, reason: str) -> None:
        time.sleep(self.hook_sleep_s)
        rpc.get(self.probe.record.remote("terminate", self.tag, reason), timeout=10)


def worker(probe: Any, tag: str, hook_sleep_s: float = 0.0, **kw: Any) -> ChildSpec:
    kw.setdefault("shutdown", 1000)
    return ChildSpec(id=tag, actor=Worker, args=(probe, tag, hook_sleep_s), **kw)


def start(sups: list[Supervisor], name: str, children: list[ChildSpec], **flags: Any) -> Supervisor:
    sup = Supervisor.start(name, children, registry=None, **flags)
    sups.append(sup)
    return sup


def pids(sup: Supervisor) -> dict[str, int | None]:
    return {c.id: c.pid for c in sup.which_children()}


def counts(sup: Supervisor) -> list[int]:
    c = sup.count_children()
    return [c["specs"], c["active"], c["supervisors"], c["workers"]]


def handle_of(sup: Supervisor, child_id: str) -> Any:
    return next(c.handle for c in sup.which_children() if c.id == child_id)


def watch(handle: Any) -> Any:
    """A monitor call that has reached the child: returns its exit reason, or fails with
    ActorDiedError when it is killed."""
    return watch_child(handle, timeout=WAIT_S)


def exit_reason(ref: Any) -> str:
    try:
        return rpc.get(ref, timeout=WAIT_S)
    except ray.exceptions.ActorDiedError:
        return "killed"


def ask_exit(handle: Any, reason: str) -> None:
    """Make a child call exit(reason); its supervisor may end it before the call answers."""
    with contextlib.suppress(ray.exceptions.ActorDiedError):
        rpc.get(handle.exit.remote(reason), timeout=WAIT_S)


def kill(pid: int | None) -> None:
    assert pid is not None
    os.kill(pid, signal.SIGKILL)


def restarted(sup: Supervisor, child_id: str, old_pid: int | None) -> dict[str, int | None]:
    """Wait until ``child_id`` runs with another pid than ``old_pid``; returns all pids."""
    def changed() -> dict[str, int | None] | None:
        now = pids(sup)
        return now if now.get(child_id) not in (None, old_pid) else None
    return wait_until(changed, WAIT_S, what=f"{child_id} restarted")


def gone(sup: Supervisor) -> bool:
    return get_named(f"herd/sup/{sup.name}") is None


def events(probe: Any, kind: str) -> list[tuple[Any, ...]]:
    return [e[1:] for e in rpc.get(probe.seen.remote()) if e[0] == kind]


# ------------------------------------------------------------------------------ restart types
def test_permanent_normal(probe: Any, sups: list[Supervisor]) -> None:
    """permanent_normal (+ permanent_shutdown): a permanent child is restarted even after a
    normal exit."""
    sup = start(sups, "perm", [worker(probe, "c1")])
    old = pids(sup)["c1"]
    ask_exit(handle_of(sup, "c1"), "normal")
    restarted(sup, "c1", old)
    assert counts(sup) == [1, 1, 0, 1]


def test_transient_normal(probe: Any, sups: list[Supervisor]) -> None:
    """transient_normal, transient_shutdown and transient_abnormal: a transient child is
    restarted only after an abnormal exit; after a normal one its spec stays, undefined."""
    sup = start(sups, "trans", [worker(probe, "c1", restart="transient")])
    old = pids(sup)["c1"]
    ask_exit(handle_of(sup, "c1"), "error: abnormal")
    restarted(sup, "c1", old)
    ask_exit(handle_of(sup, "c1"), "shutdown:some_info")
    wait_until(lambda: counts(sup) == [1, 0, 0, 1], WAIT_S, what="transient child stopped")
    assert [(c.id, c.status, c.handle) for c in sup.which_children()] == [("c1", "undefined", None)]
    assert sup.restart_child("c1").status == "running"


def test_temporary_normal(probe: Any, sups: list[Supervisor]) -> None:
    """temporary_normal and temporary_abnormal: a temporary child is never restarted and is
    forgotten."""
    sup = start(sups, "temp", [worker(probe, "c1", restart="temporary"),
                               worker(probe, "c2", restart="temporary")])
    ask_exit(handle_of(sup, "c1"), "normal")
    kill(pids(sup)["c2"])
    wait_until(lambda: sup.which_children() == [], WAIT_S, what="temporary children forgotten")
    assert counts(sup) == [0, 0, 0, 0]


# ------------------------------------------------------------------------------ strategies
def test_one_for_one(probe: Any, sups: list[Supervisor]) -> None:
    """one_for_one: only the crashed child restarts; the third restart within the period
    exceeds intensity 2 and the supervisor stops with reason shutdown."""
    sup = start(sups, "ofo", [worker(probe, "c1"), worker(probe, "c2")], max_restarts=2,
                max_seconds=3600)
    done = sup.monitor()
    before = pids(sup)
    kill(before["c1"])
    after = restarted(sup, "c1", before["c1"])
    assert after["c2"] == before["c2"]
    kill(after["c2"])
    after = restarted(sup, "c2", after["c2"])
    c2 = watch(handle_of(sup, "c2"))
    kill(after["c1"])
    assert exit_reason(done) == "shutdown"
    assert exit_reason(c2) == "shutdown"
    wait_until(lambda: gone(sup), WAIT_S, what="supervisor gone")


def test_one_for_all(probe: Any, sups: list[Supervisor]) -> None:
    """one_for_all: the siblings are terminated (terminate hook, reason shutdown) and all
    children restart in start order."""
    sup = start(sups, "ofa", [worker(probe, "c1"), worker(probe, "c2"), worker(probe, "c3")],
                strategy="one_for_all", max_restarts=2)
    before = pids(sup)
    kill(before["c2"])
    after = restarted(sup, "c3", before["c3"])
    assert not set(after.values()) & set(before.values())
    assert events(probe, "terminate") == [("c3", "shutdown"), ("c1", "shutdown")]
    assert [e[0] for e in events(probe, "start")] == ["c1", "c2", "c3", "c1", "c2", "c3"]
    assert counts(sup) == [3, 3, 0, 3]


def test_rest_for_one(probe: Any, sups: list[Supervisor]) -> None:
    """rest_for_one: the crashed child and those started after it restart, in order; earlier
    ones are untouched; then the intensity (2) is exceeded on the third restart."""
    sup = start(sups, "rfo", [worker(probe, "c1"), worker(probe, "c2"), worker(probe, "c3")],
                strategy="rest_for_one", max_restarts=2, max_seconds=3600)
    done = sup.monitor()
    before = pids(sup)
    kill(before["c2"])
    after = restarted(sup, "c3", before["c3"])
    assert after["c1"] == before["c1"] and after["c2"] != before["c2"]
    assert events(probe, "terminate") == [("c3", "shutdown")]
    kill(after["c3"])
    again = restarted(sup, "c3", after["c3"])
    assert again["c2"] == after["c2"]
    kill(again["c2"])
    assert exit_reason(done) == "shutdown"


def test_rest_for_one_other_child_fails_restart(probe: Any, sups: list[Supervisor]) -> None:
    """rest_for_one_other_child_fails_restart: c2 fails to restart once; the retry restarts
    c2 only, not c1 again."""
    sup = start(sups, "rfo_fail", [worker(probe, "c1"), worker(probe, "c2")],
                strategy="rest_for_one", max_restarts=3)
    before = pids(sup)
    rpc.get(probe.fail_next_starts.remote("c2", 1))
    kill(before["c1"])
    after = restarted(sup, "c2", before["c2"])
    starts = [e[0] for e in events(probe, "start")]
    assert starts == ["c1", "c2", "c1", "c2"]
    assert after["c1"] != before["c1"]


def test_one_for_all_other_child_fails_restart(probe: Any, sups: list[Supervisor]) -> None:
    """one_for_all_other_child_fails_restart: when c2 fails to restart, the retry terminates
    the already restarted c1 (reason shutdown) and starts both again."""
    sup = start(sups, "ofa_fail", [worker(probe, "c1"), worker(probe, "c2")],
                strategy="one_for_all", max_restarts=3)
    before = pids(sup)
    rpc.get(probe.fail_next_starts.remote("c2", 1))
    kill(before["c1"])
    restarted(sup, "c2", before["c2"])
    assert [e[0] for e in events(probe, "start")] == ["c1", "c2", "c1", "c1", "c2"]
    assert events(probe, "terminate") == [("c2", "shutdown"), ("c1", "shutdown")]


def test_temporary_bystander(probe: Any, sups: list[Supervisor]) -> None:
    """temporary_bystander: a temporary sibling stopped by one_for_all is not restarted."""
    sup = start(sups, "bystander", [worker(probe, "c1", shutdown=100),
                                    worker(probe, "c2", restart="temporary", shutdown=100)],
                strategy="one_for_all", max_restarts=2, max_seconds=300)
    old = pids(sup)["c1"]
    ask_exit(handle_of(sup, "c1"), "normal")
    restarted(sup, "c1", old)
    assert [c.id for c in sup.which_children()] == ["c1"]


# ------------------------------------------------------------------------------ intensity
def test_multiple_restarts(probe: Any, sups: list[Supervisor]) -> None:
    """multiple_restarts: intensity 1 per 1 s is never exceeded by restarts > 1 s apart."""
    sup = start(sups, "multi", [worker(probe, "c1", shutdown="brutal_kill")], max_restarts=1,
                max_seconds=1)
    pid = pids(sup)["c1"]
    for _ in range(2):
        kill(pid)
        pid = restarted(sup, "c1", pid)["c1"]
        time.sleep(1.2)
    sup.terminate_child("c1")
    sup.delete_child("c1")
    assert counts(sup) == [0, 0, 0, 0]


def test_one_for_one_escalation(probe: Any, sups: list[Supervisor]) -> None:
    """one_for_one_escalation: a child that fails every restart exhausts the intensity (each
    failed start is a restart attempt); the supervisor stops and terminates its sibling."""
    sup = start(sups, "escal", [worker(probe, "c1"), worker(probe, "c2")], max_restarts=2,
                max_seconds=3600)
    done = sup.monitor()
    c2 = watch(handle_of(sup, "c2"))
    rpc.get(probe.fail_next_starts.remote("c1", 100))
    kill(pids(sup)["c1"])
    assert exit_reason(done) == "shutdown"
    assert exit_reason(c2) == "shutdown"
    assert [e[0] for e in events(probe, "start")] == ["c1", "c2"]  # 3 failed restarts of c1
    wait_until(lambda: gone(sup), WAIT_S, what="supervisor gone")
    with pytest.raises(SupervisorStopped):
        sup.which_children()


def test_stopped_reason_reachable_from_the_api(probe: Any, sups: list[Supervisor]) -> None:
    """Not in supervisor_SUITE (OTP puts it in an error report): why a supervisor stopped on
    its own is what every later call says, and ``stopped_reason()`` returns it, also after its
    actor is gone, until the name is started again."""
    sup = start(sups, "why", [worker(probe, "c1")], max_restarts=1, max_seconds=3600)
    assert sup.stopped_reason() is None
    done = sup.monitor()
    first = pids(sup)["c1"]
    kill(first)
    kill(restarted(sup, "c1", first)["c1"])
    assert exit_reason(done) == "shutdown"  # the OTP exit reason is unchanged
    why = ("shutdown: reached_max_restart_intensity (child 'c1' exited with reason 'killed'; "
           "2 restarts within 3600 s, max_restarts=1)")
    assert sup.stopped_reason() == why
    wait_until(lambda: gone(sup), WAIT_S, what="supervisor gone")
    assert sup.stopped_reason() == why
    for call in (sup.which_children, sup.count_children, lambda: sup.terminate_child("c1"),
                 lambda: sup.start_child(worker(probe, "c2")), lambda: Supervisor.get("why")):
        with pytest.raises(SupervisorStopped) as info:
            call()
        assert str(info.value) == f"supervisor 'why' has stopped: {why}"
    again = start(sups, "why", [])
    assert again.stopped_reason() is None and sup.stopped_reason() is None
    again.stop()
    assert again.stopped_reason() == "normal"


# ------------------------------------------------------------------------------ stopping
def test_sup_stop_infinity(probe: Any, sups: list[Supervisor]) -> None:
    """sup_stop_infinity: children with shutdown infinity (a worker and a supervisor) are
    stopped with reason shutdown, in reverse start order."""
    nested = ChildSpec(id="s1", supervisor=SupervisorSpec(children=[worker(probe, "inner")],
                                                          registry=None))
    sup = start(sups, "stop_inf", [nested, worker(probe, "c2", shutdown="infinity")])
    s1, c2 = watch(handle_of(sup, "s1")), watch(handle_of(sup, "c2"))
    assert sup.stop() == "normal"
    assert (exit_reason(s1), exit_reason(c2)) == ("shutdown", "shutdown")
    assert events(probe, "terminate") == [("c2", "shutdown"), ("inner", "shutdown")]
    assert gone(sup)


def test_sup_stop_timeout(probe: Any, sups: list[Supervisor]) -> None:
    """sup_stop_timeout: a child busy past its shutdown time (1 s) is killed."""
    sup = start(sups, "stop_timeout", [worker(probe, "c1"), worker(probe, "c2")])
    c1, c2 = watch(handle_of(sup, "c1")), watch(handle_of(sup, "c2"))
    handle_of(sup, "c2").sleep.remote(200)
    time.sleep(0.2)
    began = time.monotonic()
    sup.stop()
    assert 0.9 < time.monotonic() - began < 10
    assert (exit_reason(c1), exit_reason(c2)) == ("shutdown", "killed")


def test_sup_stop_brutal_kill(probe: Any, sups: list[Supervisor]) -> None:
    """sup_stop_brutal_kill: a brutal_kill child is killed without its terminate hook."""
    sup = start(sups, "stop_brutal", [worker(probe, "c1"),
                                      worker(probe, "c2", shutdown="brutal_kill")])
    c1, c2 = watch(handle_of(sup, "c1")), watch(handle_of(sup, "c2"))
    sup.stop()
    assert (exit_reason(c1), exit_reason(c2)) == ("shutdown", "killed")
    assert events(probe, "terminate") == [("c1", "shutdown")]


def test_terminate_hook_timing(probe: Any, sups: list[Supervisor]) -> None:
    """Shutdown protocol timing (sup_stop / simple_one_for_one_shutdown): a terminate hook
    that fits in the shutdown time completes; one that does not is cut off by the kill."""
    sup = start(sups, "hooks", [worker(probe, "slow", hook_sleep_s=5.0, shutdown=500),
                                worker(probe, "fits", hook_sleep_s=0.5, shutdown=3000)])
    slow, fits = watch(handle_of(sup, "slow")), watch(handle_of(sup, "fits"))
    began = time.monotonic()
    sup.stop()
    took = time.monotonic() - began
    assert (exit_reason(fits), exit_reason(slow)) == ("shutdown", "killed")
    assert events(probe, "terminate") == [("fits", "shutdown")]
    assert 0.9 <= took < 4.5, took


# ------------------------------------------------------------------------------ administration
def test_child_adm(probe: Any, sups: list[Supervisor]) -> None:
    """child_adm: start_child, terminate_child, restart_child, delete_child, which_children,
    count_children and their errors."""
    spec = worker(probe, "c1")
    sup = start(sups, "adm", [spec])
    assert counts(sup) == [1, 1, 0, 1]
    with pytest.raises(ChildAlreadyStarted):
        sup.start_child(spec)
    with pytest.raises(ChildNotFound):
        sup.terminate_child("hej")
    sup.terminate_child("c1")
    assert counts(sup) == [1, 0, 0, 1]
    sup.terminate_child("c1")
    with pytest.raises(ChildAlreadyPresent):
        sup.start_child(spec)
    assert sup.restart_child("c1").status == "running"
    with pytest.raises(ChildRunning):
        sup.restart_child("c1")
    with pytest.raises(ChildRunning):
        sup.delete_child("c1")
    with pytest.raises(ChildNotFound):
        sup.restart_child("c2")
    sup.terminate_child("c1")
    sup.delete_child("c1")
    assert sup.which_children() == [] and counts(sup) == [0, 0, 0, 0]
    assert sup.start_child(spec).status == "running"


def test_sup_start_fail(probe: Any, sups: list[Supervisor]) -> None:
    """sup_start_fail / failed_to_start_child: a child whose constructor raises makes the
    supervisor's start fail, with the children already started terminated; start_child of a
    failing child reports the error and changes nothing."""
    rpc.get(probe.fail_next_starts.remote("c2", 1))
    with pytest.raises(StartChildError, match="c2 refuses to start"):
        Supervisor.start("start_fail", [worker(probe, "c1"), worker(probe, "c2")], registry=None)
    assert events(probe, "terminate") == [("c1", "shutdown")]
    wait_until(lambda: get_named("herd/sup/start_fail") is None, WAIT_S, what="no supervisor")
    sup = start(sups, "start_child_fail", [])
    rpc.get(probe.fail_next_starts.remote("c3", 1))
    with pytest.raises(StartChildError, match="c3 refuses to start"):
        sup.start_child(worker(probe, "c3"))
    assert counts(sup) == [0, 0, 0, 0]


# ------------------------------------------------------------------------------ trees
def test_tree_escalation_three_levels(probe: Any, sups: list[Supervisor]) -> None:
    """tree + escalation through three levels: the leaf and middle supervisors (intensity 0)
    give up in turn with reason shutdown, the root restarts the middle subtree with its static
    children only (a child added to the leaf with start_child is gone), and the next failure
    exceeds the root's intensity too."""
    leaf = SupervisorSpec(children=[worker(probe, "w")], max_restarts=0, registry=None)
    middle = SupervisorSpec(children=[ChildSpec(id="leaf", supervisor=leaf)], max_restarts=0,
                            registry=None)
    sup = start(sups, "tree", [ChildSpec(id="middle", supervisor=middle)], max_restarts=1,
                max_seconds=3600)
    done = sup.monitor()
    leaf_sup = sup.supervisor("middle").supervisor("leaf")
    leaf_sup.start_child(worker(probe, "dynamic"))
    tree = sup.which_children(recursive=True)
    assert [c.id for c in tree[0].children[0].children] == ["w", "dynamic"]
    old_middle = pids(sup)["middle"]
    kill(leaf_sup.which_children()[0].pid)
    restarted(sup, "middle", old_middle)
    tree = sup.which_children(recursive=True)
    assert [c.id for c in tree[0].children[0].children] == ["w"]
    assert tree[0].children[0].children[0].status == "running"
    assert "w [worker, permanent] running" in sup.render_tree()
    kill(tree[0].children[0].children[0].pid)
    assert exit_reason(done) == "shutdown"


def test_significant_temporary(probe: Any, sups: list[Supervisor]) -> None:
    """significant_temporary: with any_significant, a significant temporary child terminated
    by its supervisor does not stop it; one that is killed does, and all siblings stop."""
    sup = start(sups, "sig_temp", [
        worker(probe, "c1", restart="temporary", significant=True),
        worker(probe, "c2", restart="temporary", significant=True),
        worker(probe, "c3", restart="temporary")], auto_shutdown="any_significant",
        max_restarts=5)
    done = sup.monitor()
    sup.terminate_child("c1")
    assert [c.id for c in sup.which_children()] == ["c2", "c3"]
    c3 = watch(handle_of(sup, "c3"))
    kill(pids(sup)["c2"])
    assert exit_reason(done) == "shutdown"
    assert exit_reason(c3) == "shutdown"


def test_significant_transient(probe: Any, sups: list[Supervisor]) -> None:
    """significant_transient: a killed significant transient child is restarted; with
    all_significant, the supervisor stops once the last significant child exits normally."""
    sup = start(sups, "sig_trans", [
        worker(probe, "c1", restart="transient", significant=True),
        worker(probe, "c2", restart="transient", significant=True)],
        auto_shutdown="all_significant", max_restarts=5)
    done = sup.monitor()
    before = pids(sup)
    kill(before["c1"])
    restarted(sup, "c1", before["c1"])
    ask_exit(handle_of(sup, "c1"), "normal")
    wait_until(lambda: counts(sup)[1] == 1, WAIT_S, what="c1 stopped")
    ask_exit(handle_of(sup, "c2"), "normal")
    assert exit_reason(done) == "shutdown"


@pytest.mark.parametrize("strategy", ["one_for_all", "rest_for_one"])
def test_significant_bystander(probe: Any, sups: list[Supervisor], strategy: str) -> None:
    """significant_bystander: a significant sibling stopped because another child crashed does
    not trigger auto_shutdown."""
    sup = start(sups, f"sig_by_{strategy}", [
        worker(probe, "c1", restart="transient", shutdown=100),
        worker(probe, "c2", restart="transient", significant=True, shutdown=100)],
        strategy=strategy, auto_shutdown="any_significant", max_restarts=5)
    before = pids(sup)
    kill(before["c1"])
    restarted(sup, "c2", before["c2"])
    assert events(probe, "terminate") == [("c2", "shutdown")]
    assert counts(sup) == [2, 2, 0, 2]


def test_significant_escalation(probe: Any, sups: list[Supervisor]) -> None:
    """significant_escalation: C's normal exit auto-shuts down B (its significant child),
    whose exit auto-shuts down A (B is A's significant child)."""
    b = SupervisorSpec(children=[worker(probe, "c", restart="transient", significant=True)],
                       auto_shutdown="any_significant", registry=None)
    sup = start(sups, "sig_escal", [ChildSpec(id="b", supervisor=b, restart="transient",
                                              significant=True)],
                auto_shutdown="any_significant")
    done = sup.monitor()
    child_b = watch(handle_of(sup, "b"))
    c = sup.supervisor("b").which_children()[0].handle
    ask_exit(c, "normal")
    assert exit_reason(child_b) == "shutdown"
    assert exit_reason(done) == "shutdown"
