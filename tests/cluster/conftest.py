"""Fixtures of the cluster tests: the OTP probe (otp_probe.py) and the supervisors a test starts."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import otp_probe
import pytest
import ray

from herd.platform import rpc
from herd.platform.control_plane import get_named
from herd.supervisors import Supervisor
from herd.supervisors.errors import SupervisorStopped

SUPERVISOR_STOP_S = 30.0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/tests/cluster/" in str(item.fspath):
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="module")
def shared_probe(cluster: Any) -> Iterator[Any]:
    handle = otp_probe.Probe.remote()
    yield handle
    ray.kill(handle)


@pytest.fixture
def probe(shared_probe: Any) -> Any:
    rpc.get(shared_probe.reset.remote(), timeout=SUPERVISOR_STOP_S)
    return shared_probe


@pytest.fixture
def sups() -> Iterator[list[Supervisor]]:
    """Supervisors a test starts; any still running at the end are stopped."""
    started: list[Supervisor] = []
    yield started
    for sup in started:
        if get_named(f"herd/sup/{sup.name}") is not None:
            with contextlib.suppress(SupervisorStopped):  # it was stopping on its own
                sup.stop(timeout=SUPERVISOR_STOP_S)
