"""Bad child and supervisor specs raise ConfigError naming the field (no Ray needed)."""

from __future__ import annotations

from typing import Any

import pytest
import ray

from herd.platform.errors import ConfigError
from herd.supervisors import ChildSpec, SupervisorSpec, exit
from herd.supervisors.errors import SupervisorError
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
