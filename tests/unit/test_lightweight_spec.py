"""Lightweight child specs, the loop-lag watchdog and the memory estimate (no Ray)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from herd.platform.errors import ConfigError
from herd.supervisors.apps.app import AppSpec
from herd.supervisors.lightweight.handle import ROUTE_METHOD, route_meta
from herd.supervisors.lightweight.memory import estimate_bytes
from herd.supervisors.lightweight.runtime import HostRuntime
from herd.supervisors.lightweight.watchdog import LoopWatchdog, blocking_key
from herd.supervisors.otp.spec import ChildSpec, SupervisorSpec


class Worker:
    def block(self, seconds: float) -> None:
        time.sleep(seconds)


def test_kind_defaults_to_actor_and_crash_on_error_to_true() -> None:
    spec = ChildSpec(id="w", actor=Worker)
    assert spec.kind == "actor" and spec.crash_on_error
    light = ChildSpec(id="w", actor=Worker, kind="lightweight", crash_on_error=False)
    assert light.kind == "lightweight" and not light.crash_on_error


@pytest.mark.parametrize("option", ["num_cpus", "num_gpus", "memory", "resources", "runtime_env",
                                    "scheduling_strategy", "label_selector", "max_concurrency"])
def test_ray_actor_options_are_rejected_for_lightweight_children(option: str) -> None:
    value = {"resources": {"x": 1}, "runtime_env": {"pip": ["x"]}, "label_selector": {"a": "b"},
             "scheduling_strategy": "SPREAD"}.get(option, 1)
    with pytest.raises(ConfigError, match=rf"options\.{option}: a lightweight child"):
        ChildSpec(id="w", actor=Worker, kind="lightweight", options={option: value})


def test_bad_kinds_are_rejected_with_the_field_named() -> None:
    with pytest.raises(ConfigError, match="kind"):
        ChildSpec(id="w", actor=Worker, kind="fiber")
    with pytest.raises(ConfigError, match="kind: a supervisor child cannot be lightweight"):
        ChildSpec(id="s", supervisor=SupervisorSpec(), kind="lightweight")
    with pytest.raises(ConfigError, match="crash_on_error"):
        ChildSpec(id="w", actor=Worker, kind="lightweight", crash_on_error="maybe")


def test_host_settings_are_validated() -> None:
    spec = SupervisorSpec(lightweight={"max_children_per_host": 5, "lag_threshold_s": 0.2})
    assert spec.lightweight.max_children_per_host == 5
    assert SupervisorSpec().lightweight.max_children_per_host == 10_000
    with pytest.raises(ConfigError, match="lightweight.max_children_per_host"):
        SupervisorSpec(lightweight={"max_children_per_host": 0})
    with pytest.raises(ConfigError, match="lightweight.bogus"):
        SupervisorSpec(lightweight={"bogus": 1})


def test_route_meta_names_the_host_method() -> None:
    assert route_meta("sup/a") == {"route": ROUTE_METHOD, "route_key": "sup/a",
                                   "lightweight": "sup/a"}


def test_memory_estimate_grows_with_state_and_is_bounded() -> None:
    worker = Worker()
    empty = estimate_bytes(worker)
    worker.items = {i: [i] * 10 for i in range(100)}  # type: ignore[attr-defined]
    assert estimate_bytes(worker) > empty + 100 * 100
    worker.loop = worker  # type: ignore[attr-defined]  # cycles are visited once
    assert estimate_bytes(worker) < 10**6


def test_watchdog_names_the_child_blocking_the_loop() -> None:
    tripped: list[tuple[float, str | None]] = []
    done = threading.Event()

    def on_blocked(lag: float, key: str | None) -> None:
        tripped.append((lag, key))
        done.set()

    async def main() -> None:
        runtime = HostRuntime()
        runtime.start("good", Worker, (), {})
        runtime.start("bad", Worker, (), {})

        def who(frame: object) -> str | None:
            return blocking_key(frame,  # type: ignore[arg-type]
                                {id(c.instance): k for k, c in runtime.children.items()})

        watchdog = LoopWatchdog(0.2, on_blocked, who)
        watchdog.start()
        await runtime.call("good", "block", (0.05,), {})  # below the threshold
        await asyncio.sleep(0.1)
        assert tripped == []
        await runtime.call("bad", "block", (0.8,), {})
        await asyncio.sleep(0.1)  # the heartbeat measures the lag when it runs again
        watchdog.stop()
        assert watchdog.max_lag_s > 0.5

    asyncio.run(main())
    assert done.wait(2.0)
    lag, key = tripped[0]
    assert key == "bad" and lag > 0.2


def test_yaml_apps_take_the_kind_and_the_host_settings() -> None:
    app = {"name": "app", "supervisors": [
        {"kind": "static", "name": "pipeline", "lightweight": {"max_children_per_host": 100},
         "children": [{"id": "light", "actor": "collections:Counter", "kind": "lightweight"},
                      {"id": "heavy", "actor": "collections:Counter"}]}]}
    spec = AppSpec.from_dict(app)
    static = spec.supervisors[0]
    assert [c.kind for c in static.children] == ["lightweight", "actor"]
    assert static.lightweight.max_children_per_host == 100  # type: ignore[union-attr]
    app["supervisors"][0]["children"][0]["options"] = {"num_cpus": 1}  # type: ignore[index]
    with pytest.raises(ConfigError, match=r"supervisors\[0\]\.children\[0\]\.options\.num_cpus"):
        AppSpec.from_dict(app)


def test_dynamic_supervisors_take_lightweight_children_and_host_settings() -> None:
    app = {"name": "app", "supervisors": [
        {"kind": "dynamic", "name": "workers", "lightweight": {"max_children_per_host": 50},
         "children": [{"id": "light", "actor": "collections:Counter", "kind": "lightweight"}]}]}
    spec = AppSpec.from_dict(app)
    dynamic = spec.supervisors[0]
    assert [c.kind for c in dynamic.children] == ["lightweight"]
    assert dynamic.lightweight.max_children_per_host == 50  # type: ignore[union-attr]
    app["supervisors"][0]["lightweight"] = {"node_id": "abc"}  # type: ignore[index]
    with pytest.raises(ConfigError, match=r"supervisors\[0\]\.lightweight"):
        AppSpec.from_dict(app)
