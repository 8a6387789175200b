"""Warm pools without Ray: the ``warm=`` option, child shapes, the warm record meta, and the
attribute rules of ``WarmHandle``."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from herd.platform.errors import ConfigError
from herd.supervisors.dynamic.child_record import ChildRecord
from herd.supervisors.dynamic.spec import DynamicSupervisorSpec
from herd.supervisors.otp.spec import SupervisorSpec
from herd.supervisors.warm import WarmHandle, shape_of
from herd.supervisors.warm.handle import CALL_METHOD
from herd.supervisors.warm.spec import call_options

GROUP = "herd_monitor"
HARNESS = {"concurrency_groups": {GROUP: 16}}


def test_warm_option_is_validated_at_the_boundary() -> None:
    assert SupervisorSpec(warm={"standby": 3}).warm.standby == 3  # type: ignore[union-attr]
    assert DynamicSupervisorSpec.build(name="s").warm is None
    with pytest.raises(ConfigError) as caught:
        DynamicSupervisorSpec.build(name="s", warm={"standby": 0})
    assert caught.value.field == "warm.standby" and caught.value.value == 0
    with pytest.raises(ConfigError, match="standbyy"):
        SupervisorSpec(warm={"standbyy": 1})
    with pytest.raises(ConfigError, match="warm.start_timeout_s"):
        SupervisorSpec(warm={"start_timeout_s": -1})
    auto = DynamicSupervisorSpec.build(name="s", warm={"standby": "auto", "max_standby": 30})
    assert auto.warm is not None and (auto.warm.standby, auto.warm.max_standby) == ("auto", 30)
    for bad in ("lots", 65, True):
        with pytest.raises(ConfigError, match="warm.standby"):
            SupervisorSpec(warm={"standby": bad})


def test_shape_is_the_process_options() -> None:
    plain = shape_of(HARNESS, {}, monitor_group=GROUP)
    assert plain is not None and plain.options() == {}
    cpu = shape_of(HARNESS, {"num_cpus": 0.5, "max_concurrency": 4}, monitor_group=GROUP)
    assert cpu is not None and cpu.options() == {"num_cpus": 0.5}
    assert cpu != plain
    env = {"runtime_env": {"env_vars": {"A": "1"}}, "resources": {"gpu-ish": 1}}
    assert shape_of(HARNESS, env, monitor_group=GROUP) == shape_of(
        HARNESS, dict(reversed(env.items())), monitor_group=GROUP)


def test_class_options_count_and_spec_options_win() -> None:
    from_class = shape_of({**HARNESS, "num_cpus": 1}, {}, monitor_group=GROUP)
    overridden = shape_of({**HARNESS, "num_cpus": 1}, {"num_cpus": 0.1}, monitor_group=GROUP)
    assert from_class is not None and from_class.options() == {"num_cpus": 1}
    assert overridden is not None and overridden.options() == {"num_cpus": 0.1}
    assert call_options({"max_concurrency": 2}, {"max_concurrency": 8}) == {"max_concurrency": 8}


@pytest.mark.parametrize("options", [
    {"scheduling_strategy": "SPREAD"},
    {"placement_group": "pg"},
    {"lifetime": "detached"},
    {"runtime_env": {"bad": object()}},
])
def test_options_a_shell_cannot_take_mean_cold(options: dict[str, Any]) -> None:
    assert shape_of(HARNESS, options, monitor_group=GROUP) is None


def test_node_affinity_as_plain_data_is_shape() -> None:
    pinned = {"scheduling_strategy": {"node_affinity": ["n1", False]}}
    shape = shape_of(HARNESS, pinned, monitor_group=GROUP)
    assert shape is not None and shape.options() == pinned
    assert shape != shape_of(HARNESS, {"scheduling_strategy": {"node_affinity": ["n2", False]}},
                             monitor_group=GROUP)
    assert shape_of(HARNESS, {"scheduling_strategy": {"other": 1}}, monitor_group=GROUP) is None


def test_own_concurrency_groups_mean_cold() -> None:
    groups = {"concurrency_groups": {GROUP: 16, "io": 2}}
    assert shape_of(groups, {}, monitor_group=GROUP) is None


def test_placement_replaced_by_the_owner_is_not_shape() -> None:
    placed = {"scheduling_strategy": "node affinity", "label_selector": {"region": "x"}}
    shape = shape_of(HARNESS, placed, ("scheduling_strategy", "label_selector"), GROUP)
    assert shape is not None and shape.options() == {}
    kept = shape_of(HARNESS, {"label_selector": {"region": "x"}}, monitor_group=GROUP)
    assert kept is not None and kept.options() == {"label_selector": {"region": "x"}}


@settings(max_examples=50, deadline=None)
@given(st.dictionaries(st.sampled_from(["num_cpus", "num_gpus", "memory"]),
                       st.floats(min_value=0, max_value=8), max_size=3))
def test_equal_options_give_equal_shapes(options: dict[str, float]) -> None:
    shape = shape_of(HARNESS, options, monitor_group=GROUP)
    assert shape is not None and shape == shape_of(HARNESS, dict(options), monitor_group=GROUP)
    assert shape.options() == options


def test_warm_record_routes_through_its_shell_until_the_next_claim() -> None:
    record = ChildRecord(sup="s", child_id="c", owner="n1").started("r", 1.0, warm=True)
    meta = record.to_meta()
    assert meta["route"] == CALL_METHOD and meta["warm"] is True
    assert ChildRecord.from_meta(meta).warm
    claimed = record.claimed("n2", None, failover=True, restarted=False)
    assert not claimed.warm and "route" not in claimed.to_meta()
    assert not record.moving_to("n3").warm
    assert "route" not in ChildRecord(sup="s", child_id="c", owner="n1").to_meta()


def test_warm_handle_exposes_the_child_methods_only() -> None:
    shell = object()  # the attribute rules never touch the shell
    handle = WarmHandle(shell, ["incr", "get"])  # type: ignore[arg-type]
    assert handle.incr.method == "incr"
    for missing in ("nope", "_private", "__dunder__"):
        with pytest.raises(AttributeError):
            getattr(handle, missing)
    assert WarmHandle(shell).anything.method == "anything"  # type: ignore[arg-type]
