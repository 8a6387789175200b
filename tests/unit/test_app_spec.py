"""App specs: the shipped examples load; every broken example fails with one clear line that
names the file, the path inside it and the bad value (no cluster needed: validation comes
before connecting)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from herd.platform.errors import ConfigError
from herd.supervisors.apps.app import AppSpec

REPO = Path(__file__).resolve().parents[2]

BROKEN = {
    "app-bad-restart.yaml": ("supervisors[1].children[0].restart", "sometimes"),
    "app-unknown-actor.yaml": ("supervisors[0].children[0].actor", "NoSuchClass"),
    "app-significant-permanent.yaml": ("supervisors[0].children[0].significant", "True"),
    "app-duplicate-child.yaml": ("supervisors[0].children[1].id", "'a'"),
    "app-unknown-distribution.yaml": ("supervisors[0].distribution", "round_robin"),
    "app-unknown-kind.yaml": ("supervisors[0]", "pool"),
    "app-unknown-registry.yaml": ("supervisors[0].registry", "names"),
}


@pytest.mark.parametrize("name", ["demo.yaml", "multi-region.yaml"])
def test_shipped_apps_load(name: str) -> None:
    spec = AppSpec.from_yaml(REPO / "configs" / name)
    assert spec.supervisors and all(s.children for s in spec.supervisors)


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_app_names_file_path_and_value(name: str) -> None:
    path, value = BROKEN[name]
    with pytest.raises(ConfigError) as err:
        AppSpec.from_yaml(REPO / "configs" / "broken" / name)
    message = str(err.value)
    assert name in message and path in message and value in message, message


@pytest.mark.parametrize("name", sorted(BROKEN)[:4])
def test_cli_run_of_broken_app_is_one_line(name: str) -> None:
    out = subprocess.run([sys.executable, "-m", "herd.cli.main", "run",
                          f"configs/broken/{name}"], cwd=REPO, capture_output=True, text=True,
                         timeout=120, env={**os.environ, "RAY_ADDRESS": ""})
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    lines = [line for line in out.stderr.splitlines() if line.startswith("herd: error:")]
    assert len(lines) == 1 and BROKEN[name][0] in lines[0], out.stderr
