"""Bad child and supervisor specs raise ConfigError naming the field (no Ray needed)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import pytest
import ray
from ray import cloudpickle

from herd.platform.errors import ConfigError
from herd.supervisors import ChildSpec, SupervisorSpec, exit
from herd.supervisors.errors import StartChildError, SupervisorError
from herd.supervisors.otp.classes import ShippedClass, resolve_actor
from herd.supervisors.otp.spec import check_significant, validate_name


class Worker:
    def ping(self) -> str:
        return "pong"


@ray.remote(num_cpus=0.5)
class RemoteWorker:
    def ping(self) -> str:
        return "pong"


def raises_on(field: str, **spec: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        ChildSpec(**spec)
    assert info.value.field == field, str(info.value)
    return info.value


def sup_raises_on(field: str, **spec: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        SupervisorSpec(**spec)
    assert info.value.field == field, str(info.value)
    return info.value


def test_defaults_follow_otp_and_elixir() -> None:
    worker = ChildSpec(id="w", actor=Worker)
    assert (worker.restart, worker.shutdown, worker.type, worker.significant) == (
        "permanent", 5000, "worker", False)
    nested = ChildSpec(id="s", supervisor=SupervisorSpec())
    assert (nested.type, nested.shutdown) == ("supervisor", "infinity")
    flags = SupervisorSpec()
    assert (flags.strategy, flags.max_restarts, flags.max_seconds, flags.auto_shutdown) == (
        "one_for_one", 3, 5.0, "never")


def test_actor_forms() -> None:
    assert ChildSpec(id="a", actor=Worker).actor is Worker
    assert ChildSpec(id="b", actor=RemoteWorker).actor is RemoteWorker
    assert ChildSpec(id="c", actor="tests.unit.test_spec:Worker").actor.__name__ == "Worker"


def test_shutdown_values() -> None:
    for good in (0, 1000, "brutal_kill", "infinity"):
        assert ChildSpec(id="w", actor=Worker, shutdown=good).shutdown == good
    for bad in (-10, "soon", 1.5, True, None):
        err = raises_on("shutdown", id="w", actor=Worker, shutdown=bad)
        assert err.value == bad


def test_bad_restart_type() -> None:
    err = raises_on("restart", id="w", actor=Worker, restart="prmanent")
    assert err.value == "prmanent"


def test_bad_child_type() -> None:
    raises_on("type", id="w", actor=Worker, type="wrker")


def test_significant_permanent_is_invalid() -> None:
    raises_on("significant", id="w", actor=Worker, significant=True)
    raises_on("significant", id="w", actor=Worker, restart="transient", significant="yes")
    assert ChildSpec(id="w", actor=Worker, restart="transient", significant=True).significant


def test_significant_needs_auto_shutdown() -> None:
    child = ChildSpec(id="w", actor=Worker, restart="temporary", significant=True)
    sup_raises_on("children[0].significant", children=[child])
    assert SupervisorSpec(children=[child], auto_shutdown="any_significant").children == [child]
    with pytest.raises(ConfigError) as info:
        check_significant(child, "never")
    assert info.value.field == "significant"


def test_bad_import_paths() -> None:
    raises_on("actor", id="w", actor="no_such_module_xyz:Thing")
    raises_on("actor", id="w", actor="tests.unit.test_spec:Missing")
    raises_on("actor", id="w", actor="tests.unit.test_spec")
    raises_on("actor", id="w", actor=Worker())


def test_worker_and_supervisor_kinds() -> None:
    raises_on("actor", id="w")
    raises_on("supervisor", id="s", type="supervisor")
    raises_on("actor", id="s", actor=Worker, supervisor=SupervisorSpec())
    raises_on("supervisor", id="w", actor=Worker, type="worker", supervisor=SupervisorSpec())


def test_bad_ids() -> None:
    for bad in ("", "a/b", "has space", 7, "x" * 201):
        raises_on("id", id=bad, actor=Worker)


def test_herd_owned_and_invalid_ray_options() -> None:
    err = raises_on("options", id="w", actor=Worker, options={"max_restarts": 5})
    assert "max_restarts" in str(err)
    raises_on("options", id="w", actor=Worker, options={"lifetime": "detached"})
    raises_on("options", id="w", actor=Worker, options={"num_cpus": -1})
    raises_on("options", id="w", actor=Worker, options={"no_such_option": 1})
    spec = ChildSpec(id="w", actor=Worker, options={"num_cpus": 0.1,
                                                    "label_selector": {"region": "us-east"}})
    assert spec.options["num_cpus"] == 0.1


def test_unknown_field_and_start_timeout() -> None:
    err = raises_on("restrat", id="w", actor=Worker, restrat="permanent")
    assert "did you mean 'restart'" in str(err)
    raises_on("start_timeout", id="w", actor=Worker, start_timeout=0)


def test_duplicate_child_ids() -> None:
    err = sup_raises_on("children[1].id", children=[ChildSpec(id="a", actor=Worker),
                                                    {"id": "a", "actor": Worker}])
    assert err.value == "a"


def test_nested_errors_name_the_path() -> None:
    sup_raises_on("children[0].supervisor.children[1].restart", children=[
        {"id": "sub", "supervisor": {"children": [{"id": "ok", "actor": Worker},
                                                  {"id": "bad", "actor": Worker,
                                                   "restart": "sometimes"}]}}])


def test_bad_flags() -> None:
    sup_raises_on("strategy", strategy="none_for_one")
    sup_raises_on("strategy", strategy="simple_one_for_one")
    sup_raises_on("max_restarts", max_restarts=-1)
    sup_raises_on("max_restarts", max_restarts="infinity")
    sup_raises_on("max_seconds", max_seconds=0)
    sup_raises_on("max_seconds", max_seconds="infinity")
    sup_raises_on("auto_shutdown", auto_shutdown="sometimes")


def test_supervisor_names() -> None:
    assert validate_name("app") == "app"
    for bad in ("", "a/b", None):
        with pytest.raises(ConfigError) as info:
            validate_name(bad)
        assert info.value.field == "name"


def test_exit_outside_a_child() -> None:
    with pytest.raises(SupervisorError):
        exit("normal")
    with pytest.raises(ConfigError) as info:
        exit("")
    assert info.value.field == "reason"


def test_a_pickled_spec_ships_its_class_and_loads_it_on_use() -> None:
    spec = ChildSpec(id="w", actor=Worker, args=(1,), options={"num_cpus": 0})
    back = cloudpickle.loads(cloudpickle.dumps(SupervisorSpec(children=[spec]))).children[0]
    assert isinstance(back.actor, ShippedClass)
    assert back.actor.name == f"{__name__}:Worker"
    assert resolve_actor(back.actor) is Worker
    assert (back.id, back.args, back.options) == ("w", (1,), {"num_cpus": 0})
    assert resolve_actor(cloudpickle.loads(cloudpickle.dumps(back)).actor) is Worker
    assert spec.actor is Worker  # pickling leaves the original alone
    remote = cloudpickle.loads(cloudpickle.dumps(ChildSpec(id="r", actor=RemoteWorker)))
    assert remote.actor.name == f"{__name__}:RemoteWorker"


def test_a_class_this_process_cannot_import_fails_only_when_loaded(tmp_path: Path) -> None:
    """What a supervisor sees for a class whose module exists only on the driver: the spec
    deserialises; loading the class raises StartChildError naming it and the missing module."""
    (tmp_path / "driver_only_mod.py").write_text("class Hidden:\n    pass\n")
    sys.path.insert(0, str(tmp_path))
    try:
        hidden = importlib.import_module("driver_only_mod").Hidden
        data = cloudpickle.dumps(ChildSpec(id="h", actor=hidden))
    finally:
        sys.path.remove(str(tmp_path))
        del sys.modules["driver_only_mod"]
    spec = cloudpickle.loads(data)
    with pytest.raises(StartChildError) as info:
        resolve_actor(spec.actor)
    message = str(info.value)
    assert "driver_only_mod:Hidden" in message
    assert "No module named 'driver_only_mod'" in message
    assert isinstance(info.value.__cause__, ModuleNotFoundError)
