"""A child that cannot start, under a static and a dynamic supervisor, on a real 3-node cluster:
its constructor raises, its class cannot be imported on the cluster, or no node can host it.
Each ends in one ``StartChildError`` with a one-line message, promptly, with no record left and
no crash dump of the child's process in its log."""

from __future__ import annotations

import importlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ray import cloudpickle

from herd.platform.local import processes
from herd.platform.local.cluster import LocalCluster
from herd.platform.waiting import wait_until
from herd.supervisors import ChildSpec, DynamicSupervisor, Supervisor
from herd.supervisors.errors import StartChildError

WAIT_S = 30.0
START_TIMEOUT_S = 20.0

# Workers cannot import this test module: ship its classes by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


class Boom:
    """A child whose constructor raises, after writing its pid to ``pid_file``."""

    def __init__(self, pid_file: str) -> None:
        Path(pid_file).write_text(str(os.getpid()))
        raise ValueError("boom in ctor")


class AsyncBoom(Boom):
    """The same, as an async actor (Ray runs it on an event loop thread)."""

    async def ping(self) -> str:
        return "pong"


class Plain:
    def ping(self) -> str:
        return "pong"


@pytest.fixture
def hidden_class(tmp_path: Path, cluster: LocalCluster) -> Iterator[type]:
    """A class the driver imports and the cluster's processes cannot: its module is in a
    directory on the driver's ``sys.path`` only (added after connecting, so Ray does not pass
    it on), and cloudpickle ships such a class by reference."""
    (tmp_path / "driver_only_children.py").write_text(
        "class Hidden:\n    def ping(self):\n        return 'pong'\n")
    sys.path.insert(0, str(tmp_path))
    try:
        yield importlib.import_module("driver_only_children").Hidden
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("driver_only_children", None)


@pytest.fixture
def static_sup(cluster: LocalCluster) -> Iterator[Supervisor]:
    sup = Supervisor.start("start-failures", [], registry=None)
    yield sup
    sup.stop(timeout=WAIT_S)


def assert_one_line(error: BaseException) -> str:
    text = str(error)
    assert "\n" not in text and "\x1b" not in text and "^^^" not in text, text
    return text


def worker_logs(cluster: LocalCluster, pid: int) -> list[Path]:
    return list(cluster.ray_tmp.glob(f"*/session_latest/logs/worker-*-{pid}.err"))


def assert_ended_quietly(cluster: LocalCluster, pid_file: Path) -> None:
    """The child's process is gone and its log holds no abort and no C++ stack trace."""
    pid = int(pid_file.read_text())
    wait_until(lambda: not processes.is_running(pid), WAIT_S, what=f"child pid {pid} gone")
    logs = worker_logs(cluster, pid)
    assert logs, f"no worker log for pid {pid}"
    for log in logs:
        text = log.read_text(errors="replace")
        assert "SIGABRT" not in text and "Stack trace" not in text, f"{log}:\n{text}"


# ---------------------------------------------------------------------------- constructor raises
@pytest.mark.parametrize("actor", [Boom, AsyncBoom])
def test_constructor_error_static(cluster: LocalCluster, static_sup: Supervisor, tmp_path: Path,
                                  actor: type) -> None:
    pid_file = tmp_path / "boom.pid"
    started = time.monotonic()
    with pytest.raises(StartChildError) as info:
        static_sup.start_child(ChildSpec(id="boom", actor=actor, args=(str(pid_file),),
                                         start_timeout=START_TIMEOUT_S))
    elapsed = time.monotonic() - started
    assert assert_one_line(info.value) == (
        "child 'boom' failed to start: its constructor raised ValueError: boom in ctor")
    assert isinstance(info.value.__cause__, ValueError)
    assert elapsed < START_TIMEOUT_S
    print(f"constructor error under a static supervisor after {elapsed:.2f} s")
    assert static_sup.which_children() == []
    assert_ended_quietly(cluster, pid_file)


def test_constructor_error_fails_supervisor_start(cluster: LocalCluster, tmp_path: Path) -> None:
    pid_file = tmp_path / "boom.pid"
    with pytest.raises(StartChildError) as info:
        Supervisor.start("start-failures-init", [
            ChildSpec(id="ok", actor=Plain),
            ChildSpec(id="boom", actor=Boom, args=(str(pid_file),))], registry=None)
    assert assert_one_line(info.value) == (
        "supervisor 'start-failures-init': failed to start child 'boom': child 'boom' failed "
        "to start: its constructor raised ValueError: boom in ctor")
    assert_ended_quietly(cluster, pid_file)


def test_constructor_error_dynamic(cluster: LocalCluster, tmp_path: Path) -> None:
    sup = DynamicSupervisor.start("start-failures-ctor")
    try:
        pid_file = tmp_path / "boom.pid"
        with pytest.raises(StartChildError) as info:
            sup.start_child(ChildSpec(id="dyn-boom", actor=Boom, args=(str(pid_file),),
                                      start_timeout=START_TIMEOUT_S))
        assert assert_one_line(info.value) == (
            "child 'dyn-boom' failed to start: its constructor raised ValueError: boom in ctor")
        assert sup.which_children() == []
        assert_ended_quietly(cluster, pid_file)
    finally:
        sup.stop()


# ---------------------------------------------------------------------------- class not importable
def check_import_error(error: StartChildError, child_id: str) -> None:
    text = assert_one_line(error)
    assert text.startswith(f"child {child_id!r} failed to start: its class "
                           f"driver_only_children:Hidden cannot be imported"), text
    assert "ModuleNotFoundError: No module named 'driver_only_children'" in text


def test_class_not_importable_static(static_sup: Supervisor, hidden_class: type) -> None:
    started = time.monotonic()
    with pytest.raises(StartChildError) as info:
        static_sup.start_child(ChildSpec(id="hidden", actor=hidden_class,
                                         start_timeout=START_TIMEOUT_S))
    elapsed = time.monotonic() - started
    check_import_error(info.value, "hidden")
    assert elapsed < START_TIMEOUT_S
    print(f"import failure under a static supervisor after {elapsed:.2f} s")
    assert static_sup.which_children() == []
    assert static_sup.count_children()["specs"] == 0


def test_args_not_importable_static(static_sup: Supervisor, hidden_class: type) -> None:
    """The class is fine, an argument is an instance of a class the supervisor cannot import:
    Ray cannot even deserialise the call. Still a StartChildError, not a RayTaskError."""
    with pytest.raises(StartChildError) as info:
        static_sup.start_child(ChildSpec(id="bad-args", actor=Plain, args=(hidden_class(),)))
    text = assert_one_line(info.value)
    assert text == ("supervisor 'start-failures' could not run start_child: Ray could not "
                    "deserialize what it was sent: ModuleNotFoundError: No module named "
                    "'driver_only_children'")
    assert static_sup.which_children() == []


def test_class_not_importable_dynamic(cluster: LocalCluster, hidden_class: type) -> None:
    sup = DynamicSupervisor.start("start-failures-import")
    try:
        started = time.monotonic()
        with pytest.raises(StartChildError) as info:
            sup.start_child(ChildSpec(id="dyn-hidden", actor=hidden_class,
                                      start_timeout=START_TIMEOUT_S))
        elapsed = time.monotonic() - started
        check_import_error(info.value, "dyn-hidden")
        assert elapsed < START_TIMEOUT_S
        print(f"import failure under a dynamic supervisor after {elapsed:.2f} s")
        assert sup.which_children() == []
        assert sup.count_children()["specs"] == 0
    finally:
        sup.stop()


# ---------------------------------------------------------------------------- no node fits
def test_no_node_can_host_it(static_sup: Supervisor) -> None:
    started = time.monotonic()
    with pytest.raises(StartChildError) as info:
        static_sup.start_child(ChildSpec(id="huge", actor=Plain, start_timeout=2,
                                         options={"resources": {"no_such_thing": 1}}))
    elapsed = time.monotonic() - started
    assert assert_one_line(info.value) == (
        "child 'huge' was not placed within 2.0 s: no alive node has free what it asks for "
        "(num_cpus=1 (Ray's default to place an actor), resources={'no_such_thing': 1})")
    assert elapsed < 2 + 10
    assert static_sup.which_children() == []
