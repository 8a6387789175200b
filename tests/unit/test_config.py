"""herd.platform.config: cluster config models, YAML loading and ConfigError messages."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, Field

from herd.platform.config import ClusterConfig, HealthCheckConfig, NodeSpec, TimeoutConfig
from herd.platform.connection import gcs_host_port
from herd.platform.errors import ConfigError, HerdError
from herd.platform.local.cluster import LocalCluster
from herd.platform.validation import format_loc, load_yaml_model

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"
BROKEN = CONFIGS / "broken"


def load_error(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        ClusterConfig.from_yaml(path)
    return info.value


def assert_names(err: ConfigError, source: str, field: str | None, value_text: str) -> None:
    """The message names the file, the field path and the bad value (and so do the attributes)."""
    text = str(err)
    assert source in text, text
    assert err.source == source
    if field is not None:
        assert field in text, text
        assert err.field == field
    assert value_text in text, text


# ---------------------------------------------------------------------------------------------
# Bad input: one shipped broken fixture per kind
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "field", "value", "phrase"), [
    ("unknown-field.yaml", "nodes[1].nmu_cpus", 2, "unknown field"),
    ("wrong-type.yaml", "nodes[1].num_cpus", "lots", "valid number"),
    ("negative-count.yaml", "nodes[0].count", -2, "greater than or equal to 1"),
    ("negative-cpus.yaml", "nodes[1].num_cpus", -1.5, "greater than or equal to 0"),
    ("unknown-region.yaml", "nodes[1].region", "eu-central", "unknown region reference"),
    ("bad-mode.yaml", "mode", "kubernetes", "'embedded', 'local' or 'address'"),
    ("address-missing.yaml", "address", None, "required when mode is 'address'"),
    ("bad-address.yaml", "address", "http://head:8265", "host:port"),
    ("zero-period.yaml", "health_check.period_ms", 0, "greater than 0"),
    ("duplicate-regions.yaml", "regions[2]", "us-east", "duplicate region"),
])
def test_broken_fixture_names_file_field_value(name: str, field: str, value: object,
                                               phrase: str) -> None:
    path = BROKEN / name
    err = load_error(path)
    assert_names(err, str(path), field, repr(value))
    assert err.value == value
    assert phrase in str(err)
    assert isinstance(err, HerdError) and isinstance(err, ValueError)


def test_unknown_field_suggests_the_right_one() -> None:
    err = load_error(BROKEN / "unknown-field.yaml")
    assert "did you mean 'num_cpus'" in str(err)
    assert "allowed fields: count, labels, num_cpus" in str(err)


def test_unknown_region_names_node_index_and_regions() -> None:
    text = str(load_error(BROKEN / "unknown-region.yaml"))
    assert "nodes[1] names region 'eu-central'" in text
    assert "us-east" in text and "us-west" in text


def test_malformed_yaml_names_file_line_and_text() -> None:
    path = BROKEN / "malformed.yaml"
    err = load_error(path)
    text = str(err)
    assert str(path) in text and err.source == str(path)
    assert "malformed YAML at line 4" in text
    assert err.line == 4  # type: ignore[attr-defined]
    assert err.value == "nodes:" and "'nodes:'" in text


def test_duplicate_yaml_key_is_an_error() -> None:
    path = BROKEN / "duplicate-key.yaml"
    err = load_error(path)
    assert_names(err, str(path), None, "duplicate key 'mode'")
    assert "line 4" in str(err)


def test_top_level_list() -> None:
    path = BROKEN / "top-level-list.yaml"
    err = load_error(path)
    assert_names(err, str(path), "<root>", "got a list")
    assert "'mode': 'local'" in str(err)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    err = load_error(path)
    assert_names(err, str(path), None, "file not found")
    assert err.value == str(path)


def test_directory_instead_of_file(tmp_path: Path) -> None:
    err = load_error(tmp_path)
    assert_names(err, str(tmp_path), None, "directory")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads anything")
def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "secret.yaml"
    path.write_text("mode: local\n")
    path.chmod(0)
    try:
        err = load_error(path)
    finally:
        path.chmod(0o600)
    assert_names(err, str(path), None, "cannot read file")


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"namespace: caf\xe9\n")
    assert_names(load_error(path), str(path), None, "cannot read file")


def test_several_errors_are_all_reported(tmp_path: Path) -> None:
    path = tmp_path / "many.yaml"
    path.write_text("nodes:\n  - num_cpus: -1\n    count: 0\ntimeouts: {call_s: 0}\n")
    err = load_error(path)
    text = str(err)
    assert err.field == "nodes[0].num_cpus" and err.value == -1
    assert "2 more error(s)" in text
    assert "nodes[0].count" in text and "timeouts.call_s" in text
    assert [f for f, _, _ in err.errors] == [  # type: ignore[attr-defined]
        "nodes[0].num_cpus", "nodes[0].count", "timeouts.call_s"]


@pytest.mark.parametrize(("data", "field", "value"), [
    ({"address": "127.0.0.1:6379"}, "address", "127.0.0.1:6379"),      # mode is embedded
    ({"mode": "address", "address": "host:99999"}, "address", "host:99999"),
    ({"mode": "address", "address": "ray://head"}, "address", "ray://head"),
    ({"namespace": ""}, "namespace", ""),
    ({"namespace": "has space"}, "namespace", "has space"),
    ({"head": {"count": 2}}, "head.count", 2),
    ({"head": {"resources": {"GPU": -1}}}, "head.resources.GPU", -1),
    ({"head": {"labels": {"region": "a"}, "region": "b"}}, "head.labels.region", "a"),
    ({"head": {"region": "bad region"}}, "head.region", "bad region"),
    ({"regions": ["us-east"], "head": {"region": "eu"}}, "head.region", "eu"),
    ({"auth": "password"}, "auth", "password"),
    ({"log_level": "LOUD"}, "log_level", "LOUD"),
    ({"timeouts": {"placement_s": -1}}, "timeouts.placement_s", -1),
    ({"health_check": {"failure_threshold": 0}}, "health_check.failure_threshold", 0),
    ({"health_check": {"period": 5}}, "health_check.period", 5),
])
def test_from_dict_errors(data: dict, field: str, value: object) -> None:
    with pytest.raises(ConfigError) as info:
        ClusterConfig.from_dict(data, source="test-source")
    assert_names(info.value, "test-source", field, repr(value))
    assert info.value.value == value


def test_from_dict_rejects_non_mapping() -> None:
    with pytest.raises(ConfigError) as info:
        ClusterConfig.from_dict(["mode", "local"])  # type: ignore[arg-type]
    assert_names(info.value, "<dict>", "<root>", "got a list")


# ---------------------------------------------------------------------------------------------
# Good paths
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", sorted(CONFIGS.glob("cluster-*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path: Path) -> None:
    cfg = ClusterConfig.from_yaml(path)
    assert isinstance(cfg, ClusterConfig)
    assert ClusterConfig.from_dict(cfg.model_dump()) == cfg  # round-trips


def test_shipped_config_names() -> None:
    names = {p.name for p in CONFIGS.glob("cluster-*.yaml")}
    assert {"cluster-local.yaml", "cluster-embedded.yaml", "cluster-address.yaml"} <= names


def test_cluster_local_example() -> None:
    cfg = ClusterConfig.from_yaml(CONFIGS / "cluster-local.yaml")
    assert cfg.mode == "local"
    assert cfg.regions == ["us-east", "us-west"]
    assert cfg.node_count() == 3
    workers = cfg.worker_specs()
    assert [w.region for w in workers] == ["us-east", "us-west"]
    assert all(w.zone for w in workers) and cfg.head.zone
    assert workers[1].all_labels() == {"tier": "worker", "region": "us-west", "zone": "us-west-2a"}


def test_cluster_address_example() -> None:
    cfg = ClusterConfig.from_yaml(CONFIGS / "cluster-address.yaml")
    assert cfg.mode == "address" and cfg.address == "127.0.0.1:6379"


def test_defaults() -> None:
    cfg = ClusterConfig()
    assert cfg.mode == "embedded" and cfg.address is None and cfg.namespace == "herd"
    assert cfg.regions == [] and cfg.nodes == [] and cfg.worker_specs() == []
    assert cfg.head == NodeSpec() and cfg.head.num_cpus == 1 and cfg.head.count == 1
    assert cfg.auth == "token" and cfg.log_level == "INFO"
    assert cfg.timeouts == TimeoutConfig(call_s=30, connect_s=30, placement_s=30)
    assert ClusterConfig.from_dict({}) == cfg


def test_empty_yaml_file_is_all_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing but a comment\n")
    assert ClusterConfig.from_yaml(path) == ClusterConfig()


@pytest.mark.parametrize("address", [
    "auto", "127.0.0.1:6379", "head-0.example.com:6379", "[::1]:6379",
    "ray://127.0.0.1:10001", "ray://head.example.com:10001", "dns:ray-head",
    "dns:ray-head.svc:6379",
])
def test_valid_addresses(address: str) -> None:
    assert ClusterConfig(mode="address", address=address).address == address


def test_regions_collected_from_nodes_when_empty() -> None:
    cfg = ClusterConfig.from_dict({
        "mode": "local",
        "head": {"region": "eu"},
        "nodes": [{"region": "us", "count": 2}, {"region": "eu"}, {}],
    })
    assert cfg.regions == ["eu", "us"]


def test_worker_specs_expand_count() -> None:
    cfg = ClusterConfig.from_dict({"mode": "local", "nodes": [
        {"num_cpus": 2, "region": "a", "count": 3, "labels": {"k": "v"}}, {"num_cpus": 0.5}]})
    workers = cfg.worker_specs()
    assert len(workers) == 4 and cfg.node_count() == 5
    assert all(w.count == 1 for w in workers)
    assert [w.num_cpus for w in workers] == [2, 2, 2, 0.5]
    workers[0].labels["k"] = "changed"  # copies: the config is not mutated
    assert cfg.nodes[0].labels == {"k": "v"} and workers[1].labels == {"k": "v"}


def test_all_labels() -> None:
    assert NodeSpec().all_labels() == {}
    spec = NodeSpec(labels={"tier": "a", "region": "r"}, region="r", zone="z")
    assert spec.all_labels() == {"tier": "a", "region": "r", "zone": "z"}


def test_log_level_normalised() -> None:
    assert ClusterConfig(log_level="debug").log_level == "DEBUG"


def test_health_check() -> None:
    hc = HealthCheckConfig()
    assert hc.to_system_config() == {
        "health_check_initial_delay_ms": 1000,
        "health_check_period_ms": 500,
        "health_check_timeout_ms": 500,
        "health_check_failure_threshold": 3,
    }
    assert hc.to_env()["RAY_health_check_period_ms"] == "500"
    assert hc.expected_detection_s() == pytest.approx(2.0)
    ray_defaults = HealthCheckConfig(initial_delay_ms=5000, period_ms=3000, timeout_ms=10000,
                                     failure_threshold=5)
    assert ray_defaults.expected_detection_s() == pytest.approx(25.0)


# ---------------------------------------------------------------------------------------------
# The generic helpers, with another model (as an app-spec module would use them)
# ---------------------------------------------------------------------------------------------

class _Child(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    restart: str = Field(default="permanent", pattern="^(permanent|transient|temporary)$")


class _Sup(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    children: list[_Child] = []


class _App(BaseModel):
    model_config = ConfigDict(extra="forbid")
    supervisors: list[_Sup]


def test_format_loc() -> None:
    assert format_loc(("supervisors", 1, "children", 0, "restart")) == \
        "supervisors[1].children[0].restart"
    assert format_loc(("resources", "a b")) == "resources['a b']"
    assert format_loc(()) == ""


def test_load_yaml_model_generic(tmp_path: Path) -> None:
    path = tmp_path / "app.yaml"
    path.write_text(
        "supervisors:\n"
        "  - name: a\n"
        "  - name: b\n"
        "    children:\n"
        "      - {id: c1, restart: sometimes}\n")
    with pytest.raises(ConfigError) as info:
        load_yaml_model(_App, path)
    assert_names(info.value, str(path), "supervisors[1].children[0].restart", "'sometimes'")

    path.write_text("supervisors:\n  - name: a\n    childern: []\n")
    with pytest.raises(ConfigError) as info:
        load_yaml_model(_App, path)
    assert_names(info.value, str(path), "supervisors[0].childern", "[]")
    assert "did you mean 'children'" in str(info.value)

    path.write_text("supervisors:\n  - {}\n")
    with pytest.raises(ConfigError) as info:
        load_yaml_model(_App, path)
    assert_names(info.value, str(path), "supervisors[0].name", "required field is missing")

    path.write_text("supervisors:\n  - name: a\n    children: [{id: x}]\n")
    app = load_yaml_model(_App, path)
    assert app.supervisors[0].children[0].restart == "permanent"


@pytest.mark.parametrize("address, expected", [
    ("127.0.0.1:6379", ("127.0.0.1", 6379)), ("ray://head.example.com:10001",
                                              ("head.example.com", 10001)),
    ("[::1]:6379", ("::1", 6379)), ("auto", None), ("local", None), ("host:", None),
])
def test_gcs_host_port(address: str, expected: tuple[str, int] | None) -> None:
    assert gcs_host_port(address) == expected


@pytest.mark.parametrize("regions, nodes, message", [
    (["us-east", "us-east"], 3, "duplicate region 'us-east'"),
    (["a", "b", "c"], 1, "3 regions need at least 3 nodes, got 1"),
    (["a b"], 2, "regions: region"),
])
def test_local_cluster_regions_are_checked_before_anything_starts(
        regions: list[str], nodes: int, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        LocalCluster(nodes=nodes, regions=regions, run_dir="/nonexistent/never-created")
