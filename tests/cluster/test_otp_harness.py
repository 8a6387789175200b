"""The child harness (monitor, stop, exit for sync, threaded and async actors), registry names,
placement by options, and a root supervisor restarted by Ray, on a real 3-node cluster."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time
from typing import Any

import pytest
import ray
from ray import cloudpickle

from herd.platform import rpc
from herd.platform.control_plane import get_named
from herd.platform.errors import ConfigError, HerdError
from herd.platform.local import processes
from herd.platform.monitor import MONITOR_METHOD, is_monitorable
from herd.platform.waiting import wait_until
from herd.registry import NotRegistered, Registry, via
from herd.supervisors import ChildSpec, Supervisor, SupervisorSpec, exit, make_child_class
from herd.supervisors.errors import StartChildError, SupervisorError
from herd.supervisors.otp.harness import READY_METHOD, STOP_METHOD

WAIT_S = 30.0

# Workers cannot import this test module: ship its classes by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


class Plain:
    def __init__(self) -> None:
        self.hooked: list[str] = []

    def pid(self) -> int:
        return os.getpid()

    def sleep(self, seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    def exit(self, reason: str) -> str:
        exit(reason)
        return reason

    def fail(self) -> None:
        raise ValueError("a method error does not end the child")

    def terminate(self, reason: str) -> None:
        self.hooked.append(reason)


class Async:
    def __init__(self) -> None:
        self.hooked: list[str] = []

    async def exit(self, reason: str) -> str:
        exit(reason)
        return reason

    async def sleep(self, seconds: float) -> float:
        await asyncio.sleep(seconds)
        return seconds

    async def terminate(self, reason: str) -> None:
        await asyncio.sleep(0.2)
        self.hooked.append(reason)

    async def hooked_reasons(self) -> list[str]:
        return self.hooked


@ray.remote(num_cpus=0.5)
class Decorated(Plain):
    pass


def monitors(handle: Any, count: int) -> list[Any]:
    return [getattr(handle, MONITOR_METHOD).remote() for _ in range(count)]


def elapsed(refs: list[Any]) -> tuple[list[Any], float]:
    began = time.monotonic()
    try:
        return rpc.get(refs, timeout=WAIT_S), time.monotonic() - began
    except ray.exceptions.ActorDiedError:
        return ["killed"], time.monotonic() - began


@pytest.fixture
def sups(cluster: Any) -> Any:
    started: list[Supervisor] = []
    yield started
    for sup in started:
        if get_named(f"herd/sup/{sup.name}") is not None:
            sup.stop(timeout=WAIT_S)


def test_monitor_beside_a_busy_sync_actor(cluster: Any) -> None:
    """The monitor method has its own concurrency group: it answers while a user call runs,
    several watchers wait at once, and all fail within milliseconds when the process dies."""
    handle = make_child_class(Plain).options(max_restarts=0).remote()
    pid = rpc.get(getattr(handle, READY_METHOD).remote(), timeout=WAIT_S)["pid"]
    assert is_monitorable(handle)
    watchers = monitors(handle, 3)
    handle.sleep.remote(30)
    time.sleep(0.3)
    assert rpc.get(getattr(handle, READY_METHOD).remote(), timeout=5)["pid"] == pid
    os.kill(pid, signal.SIGKILL)
    result, took = elapsed(watchers)
    assert result == ["killed"] and took < 5


def test_threaded_actor_exits_while_busy(cluster: Any) -> None:
    """In a threaded actor, exit() from one call wakes every monitor while another call runs."""
    handle = make_child_class(Plain).options(max_restarts=0, max_concurrency=4).remote()
    watchers = monitors(handle, 2)
    handle.sleep.remote(30)
    assert rpc.get(handle.exit.remote("error: gave up"), timeout=WAIT_S) == "error: gave up"
    result, took = elapsed(watchers)
    assert result == ["error: gave up"] * 2 and took < 5
    ray.kill(handle)


def test_async_actor_exit_and_async_terminate_hook(cluster: Any) -> None:
    """An async class gets async harness methods: exit() wakes the monitor from another event
    loop, and the stop method awaits an async terminate hook before the child exits."""
    first = make_child_class(Async).options(max_restarts=0).remote()
    watchers = monitors(first, 2)
    first.sleep.remote(30)
    assert rpc.get(first.exit.remote("normal"), timeout=WAIT_S) == "normal"
    assert elapsed(watchers)[0] == ["normal", "normal"]
    second = make_child_class(Async).options(max_restarts=0).remote()
    watcher = monitors(second, 1)
    assert rpc.get(getattr(second, STOP_METHOD).remote("shutdown"), timeout=WAIT_S) == "shutdown"
    assert elapsed(watcher)[0] == ["shutdown"]
    assert rpc.get(second.hooked_reasons.remote(), timeout=WAIT_S) == ["shutdown"]
    for handle in (first, second):
        ray.kill(handle)


def test_actor_forms_errors_and_exit_reasons(cluster: Any, sups: list[Supervisor]) -> None:
    """A @ray.remote class keeps its decorator options, an import path works, and an exception
    in a method does not end the child (no restart)."""
    sup = Supervisor.start("forms", [ChildSpec(id="deco", actor=Decorated),
                                     ChildSpec(id="path", actor=f"{__name__}:Plain")],
                           registry=None)
    sups.append(sup)
    before = {c.id: c.pid for c in sup.which_children()}
    deco = sup.which_children()[0].handle
    with pytest.raises(ValueError, match="does not end the child"):
        rpc.get(deco.fail.remote(), timeout=WAIT_S)
    time.sleep(0.5)
    assert {c.id: c.pid for c in sup.which_children()} == before
    assert rpc.get(deco.pid.remote(), timeout=WAIT_S) == before["deco"]


def test_registry_names_follow_incarnations(cluster: Any, sups: list[Supervisor]) -> None:
    """Children are registered as <supervisor>/<id> (nested: <root>/<sub>/<id>); via() reaches
    the current incarnation after a restart; a terminated child's name is dropped."""
    registry = Registry.start("default")
    nested = SupervisorSpec(children=[ChildSpec(id="leaf", actor=Plain)])
    sup = Supervisor.start("named", [ChildSpec(id="w", actor=Plain),
                                     ChildSpec(id="sub", supervisor=nested)])
    sups.append(sup)
    old = rpc.get(via("named/w").pid.remote(), timeout=WAIT_S)
    assert rpc.get(via("named/sub/leaf").pid.remote(), timeout=WAIT_S) > 0
    assert registry.entry("named/w").meta["child_id"] == "w"
    os.kill(old, signal.SIGKILL)
    new = wait_until(lambda: _pid_via("named/w", old), WAIT_S, what="new incarnation named")
    assert new == next(c.pid for c in sup.which_children() if c.id == "w")
    sup.terminate_child("w")
    wait_until(lambda: registry.lookup("named/w") is None, WAIT_S, what="name dropped")


class CachedReader:
    """Looks names up through this process's registry cache (which starts the sync thread)."""

    def read(self, key: str) -> list[str]:
        assert via(key).pid.remote() is not None  # a cached resolve, then a call
        return [t.name for t in threading.enumerate()]

    def pid(self) -> int:
        return os.getpid()


def test_child_with_cached_lookups_exits_when_stopped(cluster: Any,
                                                      sups: list[Supervisor]) -> None:
    """A child whose process runs the registry's cache-sync thread still ends when stopped
    (a thread inside Ray's core worker at exit used to make the process abort and spin)."""
    sup = Supervisor.start("cached", [ChildSpec(id="target", actor=Plain),
                                      ChildSpec(id="reader", actor=CachedReader)])
    sups.append(sup)
    reader = via("cached/reader")
    threads = rpc.get(reader.read.remote("cached/target"), timeout=WAIT_S)
    assert "herd-registry-sync" in threads
    pid = rpc.get(reader.pid.remote(), timeout=WAIT_S)
    sup.terminate_child("reader")
    wait_until(lambda: not processes.is_running(pid), WAIT_S, interval=0.2,
               what="stopped child's process gone")


def _pid_via(key: str, old: int) -> int | None:
    try:
        pid = rpc.get(via(key).pid.remote(), timeout=WAIT_S)
    except (ray.exceptions.RayActorError, NotRegistered):  # restarting: no holder right now
        return None
    return pid if pid != old else None


def test_root_restarted_by_ray_starts_its_children(cluster: Any, sups: list[Supervisor]) -> None:
    """A root supervisor's spec is durable: when its process dies, Ray restarts it and it starts
    its children again (the old ones died with it), including children added by start_child;
    stopping it deletes the spec, so Ray does not bring it back."""
    sup = Supervisor.start("durable", [ChildSpec(id="a", actor=Plain)], registry=None)
    sups.append(sup)
    sup.start_child(ChildSpec(id="b", actor=Plain))
    before = {c.id: c.pid for c in sup.which_children()}
    root_pid = rpc.get(sup.handle.__ray_call__.remote(lambda self: os.getpid()), timeout=WAIT_S)
    os.kill(root_pid, signal.SIGKILL)

    def rebooted() -> dict[str, int | None] | None:
        try:
            now = {c.id: c.pid for c in sup.which_children(timeout=5)}
        except (HerdError, ray.exceptions.RayError):  # restarting, or busy starting children
            return None
        running = now.keys() == before.keys() and all(now.values())
        return now if running and not set(now.values()) & set(before.values()) else None

    wait_until(rebooted, 120, interval=0.2, what="children started again by the restarted root")
    for pid in before.values():
        assert pid is not None
        wait_until(lambda p=pid: not os.path.exists(f"/proc/{p}"), WAIT_S, what="old child gone")
    sup.stop()
    assert get_named("herd/sup/durable") is None


def test_start_errors_leave_nothing(cluster: Any, sups: list[Supervisor]) -> None:
    """A bad spec raises ConfigError before anything starts; a second root with the same name
    is refused; a child no node can host fails after its start_timeout."""
    with pytest.raises(ConfigError) as info:
        Supervisor.start("bad", [{"id": "x", "actor": Plain, "restart": "sometimes"}])
    assert info.value.field == "children[0].restart"
    assert get_named("herd/sup/bad") is None
    sup = Supervisor.start("placed", [], registry=None)
    sups.append(sup)
    with pytest.raises(SupervisorError, match="already running"):
        Supervisor.start("placed", [], registry=None)
    west = {n.node_id for n in cluster.nodes if n.region == "us-west"}
    child = sup.start_child(ChildSpec(id="west", actor=Plain,
                                      options={"label_selector": {"region": "us-west"}}))
    assert child.node_id in west
    began = time.monotonic()
    with pytest.raises(StartChildError, match=r"'mars' was not placed within 2.0 s: .*"
                                              r"label_selector=\{'region': 'mars'\}"):
        sup.start_child(ChildSpec(id="mars", actor=Plain, start_timeout=2,
                                  options={"label_selector": {"region": "mars"}}))
    assert time.monotonic() - began < 10
    assert [c.id for c in sup.which_children()] == ["west"]
