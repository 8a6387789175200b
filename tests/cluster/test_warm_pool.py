"""Warm standby workers on a real 3-node cluster (a head and two workers; health checks
1000/500/500/3).

Every fault is real (a child's process or a node SIGKILLed) and every claim that a start was warm
is checked from pids: the pid that answers after the fault must be one the pool reported ready
*before* the fault. A ``Ledger`` actor records each constructor run (tag, pid), so "exactly once"
is what really ran, not what the registry says. Cases: OTP crash restarts with a pool exhausted,
a shape mismatch and a failing constructor (same ``StartChildError`` as cold, shell
discarded); OTP conformance cases rerun with warm children; and -- last, as it kills a node --
a dynamic supervisor's crash restart and failover of actor children into warm shells while the
dead node was refilling its own pool.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import ray
import test_otp_conformance as conformance
from ray import cloudpickle

from herd.platform import rpc
from herd.platform.cluster import LocalCluster
from herd.platform.control_plane import pinned_options
from herd.platform.waiting import wait_until
from herd.registry import Registry, via
from herd.supervisors import ChildSpec, DynamicSupervisor, Supervisor
from herd.supervisors.dynamic.member import member_handle
from herd.supervisors.errors import StartChildError
from herd.supervisors.warm import WarmHandle

WAIT_S = 60.0
HEALTH_CHECK = {"initial_delay_ms": 1000, "period_ms": 500, "timeout_ms": 500,
                "failure_threshold": 3}

cloudpickle.register_pickle_by_value(sys.modules[__name__])


@ray.remote(num_cpus=0)
class Ledger:
    """Constructor runs: (tag, pid), in order; tags told to fail their next start."""

    def __init__(self) -> None:
        self.starts: list[tuple[str, int]] = []
        self.failing: set[str] = set()

    def started(self, tag: str, pid: int) -> bool:
        """Record a start; False when this start must fail."""
        if tag in self.failing:
            self.failing.discard(tag)
            return False
        self.starts.append((tag, pid))
        return True

    def fail_next(self, tag: str) -> None:
        self.failing.add(tag)

    def runs(self) -> list[tuple[str, int]]:
        return list(self.starts)


class Counter:
    """A stateful child: its count starts at ``start`` in every incarnation."""

    def __init__(self, ledger: Any, tag: str, start: int = 0, delay_s: float = 0.0) -> None:
        time.sleep(delay_s)
        if not rpc.get(ledger.started.remote(tag, os.getpid()), timeout=10):
            raise RuntimeError(f"{tag} refuses to start")
        self.n = start

    def incr(self) -> int:
        self.n += 1
        return self.n

    def pid(self) -> int:
        return os.getpid()

    async def apid(self) -> int:
        return os.getpid()


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    c = LocalCluster(nodes=3, regions=["us-east"], health_check=HEALTH_CHECK)
    try:
        c.connect(log_to_driver=False)
        Registry.start("default")
        yield c
    finally:
        c.shutdown()


@pytest.fixture
def ledger(cluster: LocalCluster) -> Iterator[Any]:
    handle = Ledger.options(**pinned_options(cluster.head.node_id)).remote()
    yield handle
    ray.kill(handle)


@pytest.fixture
def started() -> Iterator[list[Any]]:
    """Supervisors (static or dynamic) a test starts; each is stopped at the end."""
    sups: list[Any] = []
    yield sups
    for sup in sups:
        sup.stop(timeout=WAIT_S)


def counter(ledger: Any, tag: str, **kw: Any) -> ChildSpec:
    kw.setdefault("shutdown", "brutal_kill")
    return ChildSpec(id=tag, actor=Counter, args=(ledger, tag), **kw)


def ready_pids(status: dict[str, Any] | None, want: int) -> set[int] | None:
    """The pids of the ready shells of every shape, once each shape has ``want`` of them."""
    if status is None or not status["ready"]:
        return None
    if any(len(pids) < want for pids in status["ready"].values()):
        return None
    return {pid for pids in status["ready"].values() for pid in pids}


def otp_ready(sup: Supervisor, want: int) -> set[int]:
    return wait_until(lambda: ready_pids(sup.warm_status(), want), WAIT_S,
                      what="warm shells ready")


def member_ready(sup: DynamicSupervisor, node_id: str, want: int) -> set[int]:
    def ready() -> set[int] | None:
        handle = member_handle(sup.name, node_id)
        if handle is None:
            return None
        return ready_pids(rpc.get(handle.stats.remote(), timeout=10)["warm"], want)
    return wait_until(ready, WAIT_S, what=f"warm shells ready on {node_id[:12]}")


def alive(pid: int) -> bool:
    """Is process ``pid`` running (not gone, not a zombie)?"""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            state = stat.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def new_pid(name: str, old: int) -> int:
    """The pid answering ``name`` through ``via`` once it is not ``old``."""
    def changed() -> int | None:
        pid = via(name, timeout=WAIT_S).pid.call()
        return pid if pid != old else None
    return wait_until(changed, WAIT_S, what=f"{name} restarted")


# -------------------------------------------------------------------------- OTP restarts
def test_otp_restarts_take_warm_shells(ledger: Any, started: list[Any]) -> None:
    """A SIGKILLed child answers again from a shell that was ready before the kill, with
    fresh state and the same API (``via``, the handle ``which_children`` reports); its
    constructor ran once per incarnation. Two children killed at once with one ready shell:
    one restarts warm, the other cold, both correct. A child of another shape, and one a
    shell cannot become (its own concurrency groups), start cold. A constructor that raises
    in a shell gives the cold start's ``StartChildError`` word for word, and the shell is
    ended, not returned. A shell that served a child ends with it."""
    sup = Supervisor.start("warm-otp", [counter(ledger, "a"), counter(ledger, "b")],
                           warm={"standby": 1, "max_shapes": 1})
    started.append(sup)
    assert via("warm-otp/a").incr.call() == 1
    pool = otp_ready(sup, 1)
    first = via("warm-otp/a").pid.call()
    os.kill(first, signal.SIGKILL)
    second = new_pid("warm-otp/a", first)
    assert {second} == pool
    assert via("warm-otp/a").incr.call() == 1  # a new incarnation: the constructor's state
    info = next(c for c in sup.which_children() if c.id == "a")
    assert isinstance(info.handle, WarmHandle) and info.pid == second
    assert rpc.get(info.handle.apid.remote(), timeout=10) == second
    with pytest.raises(AttributeError):
        info.handle.no_such_method  # noqa: B018 - the attribute access is the test
    runs = rpc.get(ledger.runs.remote())
    assert [run for run in runs if run[0] == "a"] == [("a", first), ("a", second)]

    pool = otp_ready(sup, 1)  # refilled in the background
    assert second not in pool
    before = {c.id: c.pid for c in sup.which_children()}
    for pid in before.values():
        os.kill(pid, signal.SIGKILL)
    after = {tag: new_pid(f"warm-otp/{tag}", pid) for tag, pid in before.items()}
    assert len(set(after.values()) & pool) == 1 and len(set(after.values())) == 2
    assert [via(f"warm-otp/{tag}").incr.call() for tag in after] == [1, 1]
    assert sup.warm_status()["taken"] == 2
    wait_until(lambda: not alive(second), WAIT_S, what="the used shell ended")

    pool = otp_ready(sup, 1)
    other = sup.start_child(counter(ledger, "other", options={"num_cpus": 0.01}))
    grouped = sup.start_child(ChildSpec(
        id="grouped", actor=ray.remote(concurrency_groups={"io": 2})(Counter),
        args=(ledger, "grouped"), shutdown="brutal_kill"))
    for cold in (other, grouped):
        assert cold.pid not in pool and not isinstance(cold.handle, WarmHandle)
        assert rpc.get(cold.handle.incr.remote(), timeout=10) == 1
    assert sup.warm_status()["taken"] == 2

    errors = []
    for options in ({"num_cpus": 0.01}, {}):  # cold (no pool of that shape), then warm
        rpc.get(ledger.fail_next.remote("bad"))
        with pytest.raises(StartChildError) as caught:
            sup.start_child(counter(ledger, "bad", options=options))
        errors.append(str(caught.value))
    assert errors[0] == errors[1] and "bad refuses to start" in errors[0]
    assert sup.warm_status()["taken"] == 3
    assert Registry.get("default").lookup("warm-otp/bad", fresh=True) is None
    (used,) = pool
    wait_until(lambda: not alive(used), WAIT_S, what="the failed shell ended")
    assert used not in otp_ready(sup, 1)
    assert sorted(c.id for c in sup.which_children()) == ["a", "b", "grouped", "other"]


# ------------------------------------------------------------- OTP conformance, warm
def test_warm_name_is_registered_while_the_constructor_runs(ledger: Any,
                                                            started: list[Any]) -> None:
    """As OTP registers a ``via`` name before ``init/1``: a child starting in a shell is
    named while its (slow) constructor runs; a call that reaches it meanwhile waits for the
    constructor and answers, never "no such method". After a crash the restarted child takes
    the record over: a higher epoch, the new pid, one holder."""
    sup = Supervisor.start("warm-early", [], warm={"standby": 1, "max_shapes": 1})
    started.append(sup)
    sup.start_child(counter(ledger, "seed"))  # gives the pool its shape
    otp_ready(sup, 1)
    registry = Registry.get("default")
    with ThreadPoolExecutor(1) as pool:
        starting = pool.submit(sup.start_child, counter(ledger, "slow", kwargs={"delay_s": 2.0}))
        named = wait_until(lambda: registry.lookup("warm-early/slow", fresh=True), WAIT_S,
                           what="the slow child named")
        assert not starting.done()  # named before its constructor returned
        assert via("warm-early/slow", timeout=WAIT_S).incr.call() == 1
        info = starting.result(timeout=WAIT_S)
    assert info.pid == via("warm-early/slow").pid.call()
    assert named is not None
    before = registry.entry("warm-early/slow", fresh=True)
    os.kill(info.pid, signal.SIGKILL)
    restarted = new_pid("warm-early/slow", info.pid)
    after = registry.entry("warm-early/slow", fresh=True)
    assert after.epoch > before.epoch and after.meta["pid"] == restarted
    assert registry.lookup("warm-early/slow", fresh=True) is not None


def warm_start(sups: list[Supervisor], name: str, children: list[ChildSpec],
               **flags: Any) -> Supervisor:
    """``test_otp_conformance.start`` with three standby shells, ready before the case runs."""
    sup = Supervisor.start(name, children, registry=None, warm={"standby": 3}, **flags)
    sups.append(sup)
    if children:
        otp_ready(sup, 3)
    return sup


WARM_CASES = [conformance.test_one_for_all,
              conformance.test_rest_for_one_other_child_fails_restart]


@pytest.mark.parametrize("case", WARM_CASES, ids=[c.__name__ for c in WARM_CASES])
def test_conformance_with_warm_children(case: Any, probe: Any, sups: list[Supervisor],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Cases of the OTP conformance suite, unchanged, with children restarted in warm
    shells: a representative subset (one_for_all: siblings stopped with their terminate hooks
    and all restarted in order; rest_for_one with a restart that fails in its shell and is
    retried)."""
    monkeypatch.setattr(conformance, "start", warm_start)
    case(probe, sups)


# ---------------------------------------------------------------------------- dynamic
def test_failover_into_warm_shells_while_refilling(cluster: LocalCluster, ledger: Any,
                                                   started: list[Any]) -> None:
    """Dynamic supervisor with ``standby="auto"``: a crash restart on a node takes one of its
    warm shells (and starts a refill there); the node is SIGKILLed during that refill, and its
    actor children answer again from shells the survivor had ready before the kill (as many
    as it would inherit), each started exactly once, no process serving two children, the
    survivor their owner."""
    sup = DynamicSupervisor.start("warm-fo", warm={"standby": "auto", "max_standby": 3},
                                  reconcile_interval_s=0.5)
    started.append(sup)
    infos = [sup.start_child(counter(ledger, f"f{i}")) for i in range(3)]
    workers = cluster.worker_nodes
    counts = {n.node_id: sum(i.node_id == n.node_id for i in infos) for n in workers}
    victim = next(n for n in workers if counts[n.node_id] == max(counts.values()))
    survivor = next(n for n in workers if n is not victim)
    orphans = {i.name for i in infos if i.node_id == victim.node_id}
    victim_pool = member_ready(sup, victim.node_id, 1)
    pool = member_ready(sup, survivor.node_id, len(orphans))  # "auto": what it would inherit
    pids = {i.name: via(i.name).pid.call() for i in infos}
    crashed = sorted(orphans)[0]
    os.kill(pids[crashed], signal.SIGKILL)  # the victim takes a shell and begins a refill
    pids[crashed] = new_pid(crashed, pids[crashed])
    assert pids[crashed] in victim_pool
    now = next(c for c in sup.which_children() if c.name == crashed)
    assert now.incarnation == 2 and isinstance(now.handle, WarmHandle)
    runs_before = rpc.get(ledger.runs.remote())
    cluster.kill_node(victim)
    after = {name: new_pid(name, pids[name]) if name in orphans else via(name).pid.call()
             for name in pids}
    assert {after[name] for name in orphans} <= pool
    assert len(set(after.values())) == len(after)  # no process serves two children
    new_runs = rpc.get(ledger.runs.remote())[len(runs_before):]
    assert sorted(new_runs) == sorted((name.split("/")[1], after[name]) for name in orphans)
    children = {c.name: c for c in sup.which_children()}
    assert all(children[name].node_id == survivor.node_id for name in orphans)
    assert all(via(name).incr.call() == 1 for name in orphans)
