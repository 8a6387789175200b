"""The KubeRay manifests in configs/kuberay/ (nothing here runs Kubernetes): they load, carry the
fields KubeRay needs, and their region labels cover the placement rules of the app the RayJob
submits."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from herd.supervisors.apps.app import AppSpec

REPO = Path(__file__).resolve().parents[2]
KUBERAY = REPO / "configs" / "kuberay"


def documents(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((KUBERAY / name).read_text()) if d is not None]


def by_kind(kind: str) -> dict[str, Any]:
    found = [d for path in sorted(KUBERAY.glob("*.yaml")) for d in documents(path.name)
             if d["kind"] == kind]
    assert len(found) == 1, f"{kind}: {len(found)} manifests"
    return found[0]


def labels_of(group: dict[str, Any]) -> dict[str, str]:
    text = group["rayStartParams"].get("labels", "")
    return dict(pair.split("=", 1) for pair in text.split(",") if pair)


def groups() -> list[dict[str, Any]]:
    spec = by_kind("RayCluster")["spec"]
    return [spec["headGroupSpec"], *spec["workerGroupSpecs"]]


@pytest.mark.parametrize("name", sorted(p.name for p in KUBERAY.glob("*.yaml")))
def test_manifests_load_with_api_version_kind_and_name(name: str) -> None:
    for doc in documents(name):
        assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"], doc


def test_raycluster_runs_the_ray_herd_pins_with_metrics_and_fault_tolerance() -> None:
    cluster = by_kind("RayCluster")
    assert cluster["apiVersion"] == "ray.io/v1"
    pin = re.search(r'"ray\[default\]>=([\d.]+),<', (REPO / "pyproject.toml").read_text())
    assert pin is not None and cluster["spec"]["rayVersion"].startswith(pin.group(1) + ".")
    redis = cluster["spec"]["gcsFaultToleranceOptions"]
    host, port = redis["redisAddress"].split(":")
    service = by_kind("Service")
    assert service["metadata"]["name"] == host
    assert int(port) in [p["port"] for p in service["spec"]["ports"]]
    assert redis["redisPassword"]["valueFrom"]["secretKeyRef"]["name"] == "redis-password"
    for group in groups():
        params = group["rayStartParams"]
        container = group["template"]["spec"]["containers"][0]
        assert container["image"].startswith("herd:")
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["metrics"] == int(params["metrics-export-port"])  # Prometheus scrapes it
        resources = container["resources"]
        assert resources["requests"] == resources["limits"]
    head_ports = {p["name"] for p in groups()[0]["template"]["spec"]["containers"][0]["ports"]}
    assert {"gcs-server", "dashboard", "herd-dashboard"} <= head_ports


def test_each_worker_group_is_one_region_on_that_regions_kubernetes_nodes() -> None:
    workers = by_kind("RayCluster")["spec"]["workerGroupSpecs"]
    names = [g["groupName"] for g in workers]
    assert len(set(names)) == len(names)
    for group in workers:
        region = labels_of(group)["region"]
        selector = group["template"]["spec"]["nodeSelector"]
        assert selector["topology.kubernetes.io/region"] == region == group["groupName"]
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]


def test_the_submitted_apps_placement_rules_find_labelled_nodes() -> None:
    job = by_kind("RayJob")
    assert job["spec"]["clusterSelector"]["ray.io/cluster"] == by_kind("RayCluster")[
        "metadata"]["name"]
    command = shlex.split(job["spec"]["entrypoint"])
    assert command[:2] == ["herd", "run"]
    app_path = Path(command[2])
    assert app_path.parent == Path("/home/ray/configs")  # where the Dockerfile copies configs/
    assert "COPY configs/ /home/ray/configs/" in (KUBERAY / "Dockerfile").read_text()
    app = AppSpec.from_yaml(REPO / "configs" / app_path.name)
    offered = [labels_of(g) for g in groups()]
    wanted: list[dict[str, str]] = []
    for sup in app.supervisors:
        members = getattr(sup, "members", None)
        if isinstance(members, dict):
            wanted.append(members)
        wanted += [c.options["label_selector"] for c in sup.children
                   if "label_selector" in c.options]
    assert wanted, "the app has no placement rules to check"
    for rule in wanted:
        assert any(all(labels.get(k) == v for k, v in rule.items()) for labels in offered), \
            f"no node group offers {rule}"
