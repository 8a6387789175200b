"""Apps through the CLI, end to end as a user runs them: cluster up, run, status, kill a node,
status shows the moved children, stop, down; and `herd submit` through the Ray Jobs API."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
from ray.exceptions import RayActorError

from herd.platform.cluster import LocalCluster, disconnect
from herd.platform.waiting import wait_until
from herd.registry import via

REPO = Path(__file__).resolve().parents[2]


def herd(*args: str, env: dict[str, str] | None = None,
         timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "herd.cli.main", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "HERD_LOG_LEVEL": "WARNING", **(env or {})})


def status_json(run_dir: Path) -> dict[str, Any]:
    out = herd("status", "demo", "--json", "--run-dir", str(run_dir))
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def assert_readable(output: str) -> None:
    """herd's own lines only: no JSON log lines, no Ray raylet dumps or GCS retry lines."""
    assert not [line for line in output.splitlines() if line.lstrip().startswith("{")], output
    for marker in ("Raylet is terminated", "marked dead because", "gcs_client.cc", "(raylet)"):
        assert marker not in output, output


def workers_of(view: dict[str, Any]) -> list[dict[str, Any]]:
    sups = {s["name"]: s for s in view["apps"][0]["supervisors"]}
    return sups["workers"]["children"]


def _all_running(view: dict[str, Any]) -> dict[str, Any] | None:
    children = workers_of(view)
    return view if children and all(c["status"] == "running" for c in children) else None


@pytest.fixture(scope="module")
def up_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One `herd cluster up --dashboard` cluster (the Ray Jobs API for `herd submit`) for the
    module's CLI sessions (its run dir); `herd cluster down` at the end must succeed."""
    run_dir = tmp_path_factory.mktemp("cli-apps") / "cluster"
    up = herd("cluster", "up", "--nodes", "3", "--regions", "us-east,us-west",
              "--dashboard", "--run-dir", str(run_dir))
    assert up.returncode == 0, up.stderr
    try:
        yield run_dir
    finally:
        down = herd("cluster", "down", "--run-dir", str(run_dir))
    assert down.returncode == 0, down.stderr


@pytest.fixture(scope="module")
def submitted(up_cluster: Path) -> dict[str, Any]:
    """The demo app, submitted as a Ray job (`herd submit`); it keeps running for the tests
    after the submit test (one start of its nine actors, not two)."""
    cluster = LocalCluster.attach(up_cluster)
    env = cluster.env()
    address = cluster.dashboard_url
    assert address is not None
    done = herd("submit", "configs/demo.yaml", "--address", address, "--timeout",
                "300", env=env, timeout=400)
    return {"result": done, "address": address, "env": env}


def test_submit_runs_the_app_as_a_ray_job(up_cluster: Path, submitted: dict[str, Any]) -> None:
    done, address, env = submitted["result"], submitted["address"], submitted["env"]
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "SUCCEEDED" in done.stdout
    job_id = done.stdout.split("submitted job ", 1)[1].split()[0]
    listed = herd("submit", "--list", "--address", address, env=env)
    assert job_id in listed.stdout and "SUCCEEDED" in listed.stdout
    logs = herd("submit", "--logs", job_id, "--address", address, env=env)
    assert "app demo running" in logs.stdout

    LocalCluster.attach(up_cluster).connect(log_to_driver=False)
    try:
        from herd.supervisors.apps.status import status

        view = wait_until(lambda: _all_running(status("demo")), 60, interval=0.5,
                          what="submitted app running")
        assert len(view["apps"][0]["supervisors"]) == 2
    finally:
        disconnect()


def test_run_again_status_kill_status_stop(up_cluster: Path, submitted: dict[str, Any]) -> None:
    """On the submitted demo app: `herd run` of it again is refused; status; a node killed;
    status shows the moved children; stop. (`herd run` starting an app: the fragile app.)"""
    run_dir = up_cluster
    again = herd("run", "configs/demo.yaml", "--run-dir", str(run_dir))
    assert again.returncode == 1 and "already running" in again.stderr
    view = wait_until(lambda: _all_running(status_json(run_dir)), 60, interval=0.5,
                      what="demo app running")
    children = workers_of(view)
    assert len(children) == 6 and all(c["status"] == "running" for c in children)
    pipeline = {s["name"]: s for s in view["apps"][0]["supervisors"]}["pipeline"]
    assert [c["id"] for c in pipeline["children"]] == ["source", "stage", "sink"]
    assert len(view["nodes"]) == 3
    text = herd("status", "--run-dir", str(run_dir))
    assert "dynamic supervisor workers: running" in text.stdout, text.stderr

    cluster = LocalCluster.attach(run_dir)
    workers = {n.node_id for n in cluster.worker_nodes}
    load = Counter(c["node_id"] for c in children if c["node_id"] in workers)
    victim = load.most_common(1)[0][0]
    moved = {c["id"] for c in children if c["node_id"] == victim}
    cluster.kill_node(cluster.node_by_id(victim))

    def moved_back() -> dict[str, Any] | None:
        current = {c["id"]: c for c in workers_of(status_json(run_dir))}
        ok = all(current[cid]["status"] == "running" and current[cid]["node_id"] != victim
                 and current[cid]["incarnation"] == 2 for cid in moved)
        return current if ok else None

    current = wait_until(moved_back, 90, interval=1.0, what="moved children in status")
    assert len(current) == 6
    assert {c["node_id"] for c in current.values()}.isdisjoint({victim})
    after = herd("status", "--run-dir", str(run_dir))
    assert after.returncode == 0 and after.stderr == "", after.stderr
    assert_readable(after.stdout)
    assert "None" not in after.stdout and "alive=False" in after.stdout

    stop = herd("stop", "demo", "--run-dir", str(run_dir))
    assert stop.returncode == 0, stop.stderr
    assert "app demo stopped: pipeline, workers" in stop.stdout
    gone = herd("status", "demo", "--run-dir", str(run_dir))
    assert gone.returncode == 1 and "no app named 'demo'" in gone.stderr


FRAGILE_APP = """
name: fragile
supervisors:
  - kind: dynamic
    name: esc
    on_exhausted: escalate
    max_restarts: 0
    children:
      - {id: c-1, actor: "herd.supervisors.apps.examples:Counter"}
  - kind: static
    name: brittle
    max_restarts: 0
    children:
      - {id: w, actor: "herd.supervisors.apps.examples:Counter"}
"""


def test_status_shows_stopped_supervisors_with_their_reason(up_cluster: Path,
                                                            tmp_path: Path) -> None:
    """Issue 11, case 4 in `herd status`: a dynamic supervisor that escalated and a static one
    that exited on its restart intensity show as stopped, with why (on the cluster of the
    session above, one of its workers killed)."""
    run_dir = up_cluster
    app_file = tmp_path / "fragile.yaml"
    app_file.write_text(FRAGILE_APP)
    run = herd("run", str(app_file), "--run-dir", str(run_dir))
    assert run.returncode == 0, run.stderr
    assert "app fragile running: 2 supervisors" in run.stdout
    assert_readable(run.stdout + run.stderr)
    LocalCluster.attach(run_dir).connect(log_to_driver=False)
    try:
        for key in ("esc/c-1", "brittle/w"):
            with contextlib.suppress(RayActorError):
                ray.get(via(key).crash.remote(), timeout=60)
    finally:
        disconnect()

    def stopped() -> dict[str, Any] | None:
        out = herd("status", "fragile", "--json", "--run-dir", str(run_dir))
        assert out.returncode == 0, out.stderr
        sups = {s["name"]: s for s in json.loads(out.stdout)["apps"][0]["supervisors"]}
        return sups if all(s["status"] == "stopped" for s in sups.values()) else None

    sups = wait_until(stopped, 90, interval=1.0, what="both supervisors stopped")
    assert "c-1" in sups["esc"]["reason"], sups["esc"]
    assert "reached_max_restart_intensity" in sups["brittle"]["reason"], sups["brittle"]
    text = herd("status", "fragile", "--run-dir", str(run_dir)).stdout
    assert f"dynamic supervisor esc: stopped: {sups['esc']['reason']}" in text, text
    assert "static supervisor brittle: stopped: " in text and "None" not in text, text
    stop = herd("stop", "fragile", "--run-dir", str(run_dir))
    assert stop.returncode == 0 and stop.stderr == "", stop.stderr
