"""`herd cluster up|status|down` end to end, as a user runs them, plus one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERD = [sys.executable, "-m", "herd.cli.main"]
REPO = Path(__file__).resolve().parents[2]


def herd(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HERD, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO, env={**os.environ, "HERD_LOG_LEVEL": "WARNING"})


@pytest.mark.parametrize("args, message", [
    (["cluster", "status", "--run-dir", "/nonexistent/herd"], "no cluster state"),
    (["cluster", "up", "--config", "configs/broken/unknown-field.yaml"], "unknown-field.yaml"),
    (["cluster", "up", "--config", "configs/does-not-exist.yaml"], "does-not-exist.yaml"),
    (["bench", "nope"], "unknown benchmark"),
])
def test_errors_are_one_line(args: list[str], message: str) -> None:
    result = herd(*args, timeout=60)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("herd: error:")]
    assert len(error_lines) == 1 and message in error_lines[0], result.stderr


@pytest.mark.parametrize("args, message", [
    (["--config", "configs/cluster-address.yaml"], "mode 'address' connects to the existing"),
    (["--config", "configs/cluster-embedded.yaml"], "mode 'embedded'"),
    (["--config", "configs/cluster-local.yaml", "--nodes", "2"], "either --config or --nodes"),
    (["--regions", "us-east,us-east"], "duplicate region 'us-east'"),
    (["--nodes", "1", "--regions", "a,b,c"], "3 regions need at least 3 nodes, got 1"),
    (["--nodes", "2", "--regions", "a b"], "regions: region"),
])
def test_cluster_up_refuses_what_it_cannot_honour(args: list[str], message: str,
                                                  tmp_path: Path) -> None:
    """Issue 11, case 7: one-line errors, and nothing started."""
    run_dir = tmp_path / "run"
    result = herd("cluster", "up", *args, "--run-dir", str(run_dir), timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.startswith("herd: error:") and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (run_dir / "cluster.json").exists()


def test_cluster_up_status_down_from_a_local_config(tmp_path: Path) -> None:
    """`--config` starts exactly the topology of a `mode: local` file (its regions, zones,
    labels and resources); a second `up` is refused; `status` as JSON and as a table; `down`
    stops it and clears its state. (`up --nodes N --regions ...` starts test_cli_apps's
    cluster.)"""
    run_dir = tmp_path / "run"
    up = herd("cluster", "up", "--config", "configs/cluster-local.yaml", "--run-dir",
              str(run_dir), timeout=300)
    try:
        assert up.returncode == 0, up.stderr
        assert "cluster up: 3 nodes" in up.stdout
        again = herd("cluster", "up", "--run-dir", str(run_dir))
        assert again.returncode == 1 and "already running" in again.stderr
        status = herd("cluster", "status", "--json", "--run-dir", str(run_dir))
        assert status.returncode == 0, status.stderr
        rows = json.loads(status.stdout)
        assert [(r["region"], r["zone"]) for r in rows] == [
            ("us-east", "us-east-1a"), ("us-east", "us-east-1b"), ("us-west", "us-west-2a")]
        assert all(r["alive"] and r["pids"] > 0 and r["cpu"] == 2 for r in rows)
        table = herd("cluster", "status", "--run-dir", str(run_dir))
        assert "NODE_ID" in table.stdout and "us-west" in table.stdout
    finally:
        down = herd("cluster", "down", "--run-dir", str(run_dir))
    assert down.returncode == 0, down.stderr
    assert "stopped" in down.stdout
    assert not run_dir.exists() or not json.loads((run_dir / "cluster.json").read_text())
