"""Lightweight children under static OTP supervisors, on a real 3-node cluster.

A subset of the OTP conformance scenarios (``test_otp_conformance.py``) runs with lightweight
children (and, in ``make test-long``, the same bodies with actor children): strategies,
intensity and escalation, significant children, shutdown order. A child's
incarnation is told by ``ident()`` (a fresh value per constructor run) instead of a pid, since
lightweight children share their host's process; a crash is ``exit("error: crash")`` from inside
the child (for lightweight children also a method that raises). Then the lightweight-only
cases: mixed trees and ``via``, bad starts, the loop-lag watchdog, a child that swallows
cancellation, ``crash_on_error=False``.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
import types
import uuid
from typing import Any

import otp_probe
import pytest
import ray
from ray import cloudpickle

from herd.platform import rpc
from herd.platform.control_plane import get_named
from herd.platform.waiting import wait_until
from herd.registry import via
from herd.supervisors import ChildSpec, Supervisor, exit
from herd.supervisors.errors import ChildNotFound, StartChildError
from herd.supervisors.lightweight.batching import HostBatcher, loop_batcher

Probe = otp_probe.Probe
WAIT_S = 30.0
#: the actor runs of these scenarios check the test bodies against actor children, whose
#: semantics test_otp_conformance.py proves on its own: they run with the long tests
KINDS = [pytest.param("actor", marks=pytest.mark.long), "lightweight"]

cloudpickle.register_pickle_by_value(sys.modules[__name__])
cloudpickle.register_pickle_by_value(otp_probe)


class Worker:
    """Reports its start and terminate hook to the probe; ``ident`` tells incarnations apart."""

    def __init__(self, probe: Any, tag: str) -> None:
        self.probe, self.tag, self.id = probe, tag, uuid.uuid4().hex
        if rpc.get(probe.take_failure.remote(tag), timeout=10):
            raise RuntimeError(f"{tag} refuses to start")
        rpc.get(probe.record.remote("start", tag), timeout=10)
        self.count = 0

    def ident(self) -> str:
        return self.id

    def incr(self) -> int:
        self.count += 1
        return self.count

    def exit(self, reason: str) -> str:
        exit(reason)
        return reason

    def crash(self) -> None:
        raise RuntimeError("crash")

    def terminate(self, reason: str) -> None:
        rpc.get(self.probe.record.remote("terminate", self.tag, reason), timeout=10)


class Napper:
    """An async child: naps, blocks its loop, or swallows cancellation in its run loop."""

    def __init__(self, stubborn: bool = False) -> None:
        self.id = uuid.uuid4().hex
        self.stubborn = stubborn

    def ident(self) -> str:
        return self.id

    async def nap(self, seconds: float) -> float:
        await asyncio.sleep(seconds)
        return seconds

    def block(self, seconds: float) -> float:
        time.sleep(seconds)  # blocks the host's event loop
        return seconds

    async def run(self) -> None:
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if not self.stubborn:
                    raise


class Broken:
    def __init__(self) -> None:
        raise ValueError("nope")


def worker(probe: Any, tag: str, kind: str, **kw: Any) -> ChildSpec:
    kw.setdefault("shutdown", 1000)
    return ChildSpec(id=tag, actor=Worker, args=(probe, tag), kind=kind, **kw)


def start(sups: list[Supervisor], name: str, children: list[ChildSpec], **flags: Any) -> Supervisor:
    flags.setdefault("registry", None)
    sup = Supervisor.start(name, children, **flags)
    sups.append(sup)
    return sup


def handle_of(sup: Supervisor, child_id: str) -> Any:
    return next(c.handle for c in sup.which_children() if c.id == child_id)


def idents(sup: Supervisor) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for child in sup.which_children():
        try:
            found[child.id] = (rpc.get(child.handle.ident.remote(), timeout=WAIT_S)
                               if child.handle is not None else None)
        except (ray.exceptions.RayError, KeyError):
            found[child.id] = None  # stopping or restarting right now
    return found


def restarted(sup: Supervisor, child_id: str, old: str | None,
              *others: str, before: dict[str, str | None] | None = None
              ) -> dict[str, str | None]:
    """Wait until ``child_id`` (and each of ``others``, compared with ``before``) runs a new
    incarnation. The idents are read one after another, so a restart in progress can show
    some children old and some new: waiting for every child expected to change avoids that."""
    def changed() -> dict[str, str | None] | None:
        now = idents(sup)
        expected = {child_id: old, **{o: (before or {}).get(o) for o in others}}
        return now if all(now.get(c) not in (None, was) for c, was in expected.items()) else None
    return wait_until(changed, WAIT_S, what=f"{child_id} restarted")


def crash(sup: Supervisor, child_id: str) -> None:
    with contextlib.suppress(ray.exceptions.ActorDiedError):
        rpc.get(handle_of(sup, child_id).exit.remote("error: crash"), timeout=WAIT_S)


def events(probe: Any, kind: str) -> list[tuple[Any, ...]]:
    return [e[1:] for e in rpc.get(probe.seen.remote()) if e[0] == kind]


def exit_reason(ref: Any) -> str:
    try:
        return rpc.get(ref, timeout=WAIT_S)
    except ray.exceptions.ActorDiedError:
        return "killed"


def gone(sup: Supervisor) -> bool:
    return get_named(f"herd/sup/{sup.name}") is None


# ------------------------------------------------------------------------------ conformance
@pytest.mark.parametrize("kind", KINDS)
def test_one_for_one_and_intensity(probe: Any, sups: list[Supervisor], kind: str) -> None:
    """one_for_one: only the crashed child restarts; the third restart within the period
    exceeds intensity 2: the supervisor stops with shutdown, terminating the sibling."""
    sup = start(sups, f"lw_ofo_{kind}", [worker(probe, "c1", kind), worker(probe, "c2", kind)],
                max_restarts=2, max_seconds=3600)
    done = sup.monitor()
    before = idents(sup)
    crash(sup, "c1")
    after = restarted(sup, "c1", before["c1"])
    assert after["c2"] == before["c2"]
    crash(sup, "c2")
    restarted(sup, "c2", after["c2"])
    crash(sup, "c1")
    assert exit_reason(done) == "shutdown"
    assert events(probe, "terminate") == [("c2", "shutdown")]
    wait_until(lambda: gone(sup), WAIT_S, what="supervisor gone")


@pytest.mark.parametrize("kind", KINDS)
def test_one_for_all(probe: Any, sups: list[Supervisor], kind: str) -> None:
    """one_for_all: siblings terminated in reverse order (reason shutdown), all restarted in
    start order."""
    sup = start(sups, f"lw_ofa_{kind}", [worker(probe, c, kind) for c in ("c1", "c2", "c3")],
                strategy="one_for_all", max_restarts=2)
    before = idents(sup)
    crash(sup, "c2")
    after = restarted(sup, "c3", before["c3"], "c1", "c2", before=before)
    assert not set(after.values()) & set(before.values())
    assert events(probe, "terminate") == [("c3", "shutdown"), ("c1", "shutdown")]
    assert [e[0] for e in events(probe, "start")] == ["c1", "c2", "c3", "c1", "c2", "c3"]


@pytest.mark.parametrize("kind", KINDS)
def test_rest_for_one(probe: Any, sups: list[Supervisor], kind: str) -> None:
    """rest_for_one: the crashed child and the later ones restart; earlier ones stay."""
    sup = start(sups, f"lw_rfo_{kind}", [worker(probe, c, kind) for c in ("c1", "c2", "c3")],
                strategy="rest_for_one", max_restarts=2)
    before = idents(sup)
    crash(sup, "c2")
    after = restarted(sup, "c3", before["c3"], "c2", before=before)
    assert after["c1"] == before["c1"]
    assert events(probe, "terminate") == [("c3", "shutdown")]


@pytest.mark.parametrize("kind", KINDS)
def test_escalation_when_restarts_fail(probe: Any, sups: list[Supervisor], kind: str) -> None:
    """one_for_one_escalation: a child failing every restart exhausts the intensity; the
    supervisor stops and terminates its sibling."""
    sup = start(sups, f"lw_escal_{kind}", [worker(probe, "c1", kind), worker(probe, "c2", kind)],
                max_restarts=2, max_seconds=3600)
    done = sup.monitor()
    rpc.get(probe.fail_next_starts.remote("c1", 100))
    crash(sup, "c1")
    assert exit_reason(done) == "shutdown"
    assert [e[0] for e in events(probe, "start")] == ["c1", "c2"]
    assert events(probe, "terminate") == [("c2", "shutdown")]


@pytest.mark.parametrize("kind", KINDS)
def test_significant_children(probe: Any, sups: list[Supervisor], kind: str) -> None:
    """significant_transient: a crashed significant transient child is restarted; with
    all_significant the supervisor stops once the last significant child exits normally."""
    sup = start(sups, f"lw_sig_{kind}", [
        worker(probe, "c1", kind, restart="transient", significant=True),
        worker(probe, "c2", kind, restart="transient", significant=True)],
        auto_shutdown="all_significant", max_restarts=5)
    done = sup.monitor()
    before = idents(sup)
    crash(sup, "c1")
    restarted(sup, "c1", before["c1"])
    with contextlib.suppress(ray.exceptions.ActorDiedError):
        rpc.get(handle_of(sup, "c1").exit.remote("normal"), timeout=WAIT_S)
    wait_until(lambda: sup.count_children()["active"] == 1, WAIT_S, what="c1 stopped")
    with contextlib.suppress(ray.exceptions.ActorDiedError):
        rpc.get(handle_of(sup, "c2").exit.remote("normal"), timeout=WAIT_S)
    assert exit_reason(done) == "shutdown"


@pytest.mark.parametrize("kind", KINDS)
def test_shutdown_order_and_brutal_kill(probe: Any, sups: list[Supervisor], kind: str) -> None:
    """sup_stop_infinity / sup_stop_brutal_kill: children stop in reverse start order with
    reason shutdown; a brutal_kill child's terminate hook does not run."""
    sup = start(sups, f"lw_stop_{kind}", [
        worker(probe, "c1", kind), worker(probe, "c2", kind, shutdown="infinity"),
        worker(probe, "c3", kind, shutdown="brutal_kill"), worker(probe, "c4", kind)])
    assert sup.stop() == "normal"
    assert events(probe, "terminate") == [("c4", "shutdown"), ("c2", "shutdown"),
                                          ("c1", "shutdown")]
    assert gone(sup)


# ------------------------------------------------------------------------------ lightweight only
def test_mixed_tree_via_and_status(probe: Any, sups: list[Supervisor]) -> None:
    """Actor and lightweight children under one supervisor, both reached by name; a method
    that raises returns the error and crashes the lightweight child, which answers again by
    name at once; calls and memory show in the host's status."""
    sup = start(sups, "lw_mixed", [worker(probe, "light", "lightweight"),
                                   worker(probe, "heavy", "actor")], registry="default")
    infos = {c.id: c for c in sup.which_children()}
    assert infos["light"].status == infos["heavy"].status == "running"
    assert infos["light"].pid != infos["heavy"].pid
    assert [via(f"lw_mixed/{c}").incr.call() for c in ("light", "heavy", "light")] == [1, 1, 2]
    assert rpc.get(via("lw_mixed/light").incr.remote(), timeout=WAIT_S) == 3
    before = via("lw_mixed/light").ident.call()
    with pytest.raises(RuntimeError, match="crash"):
        via("lw_mixed/light").crash.call()
    began = time.monotonic()
    assert via("lw_mixed/light").incr.call() == 1  # the new incarnation
    assert time.monotonic() - began < 5.0
    assert via("lw_mixed/light").ident.call() != before
    status = sup.lightweight_status()
    assert status["children"] == 1 and status["last_failure"] is None
    (light,) = status["by_child"]
    assert light["key"] == "lw_mixed/light" and light["calls"] >= 2
    assert 0 < light["memory_bytes"] < 100_000
    assert [e[0] for e in events(probe, "start")] == ["light", "heavy", "light"]


def test_crash_on_error_false_keeps_the_child(probe: Any, sups: list[Supervisor]) -> None:
    sup = start(sups, "lw_keep", [worker(probe, "c1", "lightweight", crash_on_error=False)])
    handle = handle_of(sup, "c1")
    before = rpc.get(handle.ident.remote(), timeout=WAIT_S)
    with pytest.raises(RuntimeError, match="crash"):
        rpc.get(handle.crash.remote(), timeout=WAIT_S)
    assert rpc.get(handle.ident.remote(), timeout=WAIT_S) == before


def test_bad_starts_fail_with_the_cause_and_leave_no_record(probe: Any,
                                                           sups: list[Supervisor]) -> None:
    """A constructor that raises, a class the host cannot import, a full host."""
    sup = start(sups, "lw_bad", [worker(probe, "c1", "lightweight")],
                lightweight={"max_children_per_host": 2})
    with pytest.raises(StartChildError,
                       match="child 'broken' failed to start: its constructor raised "
                             "ValueError: nope"):
        sup.start_child(ChildSpec(id="broken", actor=Broken, kind="lightweight"))
    ghost_module = types.ModuleType("herd_ghost_module")
    ghost = type("Ghost", (), {"__module__": "herd_ghost_module"})
    ghost_module.Ghost = ghost  # type: ignore[attr-defined]
    sys.modules["herd_ghost_module"] = ghost_module
    try:
        with pytest.raises(StartChildError, match="Ghost cannot be imported"):
            sup.start_child(ChildSpec(id="ghost", actor=ghost, kind="lightweight"))
    finally:
        del sys.modules["herd_ghost_module"]
    sup.start_child(worker(probe, "c2", "lightweight"))
    with pytest.raises(StartChildError, match="max_children_per_host=2"):
        sup.start_child(worker(probe, "c3", "lightweight"))
    assert [c.id for c in sup.which_children()] == ["c1", "c2"]
    assert sup.lightweight_status()["children"] == 2


def test_watchdog_restarts_a_host_whose_loop_is_blocked(probe: Any,
                                                        sups: list[Supervisor]) -> None:
    """A child blocking the loop past lag_threshold_s: the host is restarted, its children
    restarted by the supervisor; an actor sibling is untouched; the status says why."""
    sup = start(sups, "lw_block", [ChildSpec(id="blocker", actor=Napper, kind="lightweight"),
                                   worker(probe, "light", "lightweight"),
                                   worker(probe, "heavy", "actor")],
                max_restarts=10, lightweight={"lag_threshold_s": 0.5})
    before = idents(sup)
    handle_of(sup, "blocker").block.remote(30)
    after = restarted(sup, "blocker", before["blocker"])
    after = restarted(sup, "light", before["light"])
    assert after["heavy"] == before["heavy"]
    why = sup.lightweight_status()["last_failure"]
    assert "blocked" in why and "'lw_block/blocker'" in why


def test_a_child_swallowing_cancellation_is_ended_by_restarting_its_host(
        probe: Any, sups: list[Supervisor]) -> None:
    sup = start(sups, "lw_stubborn", [
        ChildSpec(id="stubborn", actor=Napper, args=(True,), kind="lightweight", shutdown=200),
        worker(probe, "sibling", "lightweight")], max_restarts=10,
        lightweight={"kill_grace_s": 0.5})
    before = idents(sup)
    began = time.monotonic()
    sup.terminate_child("stubborn")
    assert 0.6 < time.monotonic() - began < 10
    restarted(sup, "sibling", before["sibling"])
    assert "did not end" in sup.lightweight_status()["last_failure"]
    assert [c.id for c in sup.which_children()] == ["stubborn", "sibling"]


def test_shutdown_timeout_cancels_a_busy_child(probe: Any, sups: list[Supervisor]) -> None:
    """sup_stop_timeout: a child busy past its shutdown time is cancelled (reason killed)."""
    sup = start(sups, "lw_busy", [ChildSpec(id="busy", actor=Napper, kind="lightweight",
                                            shutdown=300),
                                  worker(probe, "calm", "lightweight")])
    nap = handle_of(sup, "busy").nap.remote(60)
    time.sleep(0.2)
    began = time.monotonic()
    sup.terminate_child("busy")
    assert 0.25 < time.monotonic() - began < 5
    with pytest.raises(ray.exceptions.RayError):
        rpc.get(nap, timeout=WAIT_S)
    assert rpc.get(handle_of(sup, "calm").incr.remote(), timeout=WAIT_S) == 1


def test_calls_coalesced_per_host_keep_each_answer_and_error(probe: Any,
                                                             sups: list[Supervisor]) -> None:
    """``HostBatcher``: concurrent calls to the children of one host go out many per Ray call;
    each caller gets its own answer in its child's order, a method's own exception, and
    ``ChildNotFound`` for a key the host does not run."""
    sup = start(sups, "lw_batch", [worker(probe, f"b{i}", "lightweight", crash_on_error=False)
                                   for i in range(3)])
    handles = {c.id: c.handle for c in sup.which_children()}
    host = handles["b0"].host

    async def drive() -> tuple[dict[str, list[Any]], list[BaseException], HostBatcher]:
        batcher = loop_batcher()
        calls = {tag: [batcher.call(host, h.key, "incr", (), {}, WAIT_S) for _ in range(40)]
                 for tag, h in handles.items()}
        answers = {tag: list(await asyncio.gather(*futures)) for tag, futures in calls.items()}
        errors = await asyncio.gather(
            batcher.call(host, handles["b1"].key, "crash", (), {}, WAIT_S),
            batcher.call(host, "lw_batch/nobody", "incr", (), {}, WAIT_S),
            return_exceptions=True)
        return answers, list(errors), batcher

    answers, errors, batcher = asyncio.run(drive())
    assert all(sorted(got) == list(range(1, 41)) for got in answers.values()), answers
    assert isinstance(errors[0], RuntimeError) and "crash" in str(errors[0])
    assert isinstance(errors[1], ChildNotFound)
    assert batcher.calls == 122 and batcher.batches < 20, (batcher.calls, batcher.batches)
    assert rpc.get(handles["b1"].incr.remote(), timeout=WAIT_S) == 41  # it kept its state
