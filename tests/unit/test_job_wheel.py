"""The wheel `herd submit` ships with a job holds every layer of herd (a node without herd
installed imports all of it from there) and the dashboard's static page."""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

from herd.platform.jobs import HERD_PACKAGES, package_wheel


def test_wheel_holds_every_layer_and_the_dashboard_page(tmp_path: Path) -> None:
    wheel = package_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    for package in HERD_PACKAGES:
        assert any(n.startswith(f"herd/{package}/") and n.endswith(".py") for n in names), package
    assert {"herd/cli/main.py", "herd/cli/dashboard/static/app.js",
            "herd/consensus/raft/__init__.py", "herd/eventsourcing/store/__init__.py"} <= names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    record = next(n for n in names if n.endswith(".dist-info/RECORD"))
    listed = {line.split(",")[0] for line in
              zipfile.ZipFile(wheel).read(record).decode().splitlines()}
    assert names <= listed


def test_every_layer_the_project_installs_is_shipped() -> None:
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    package_dir = tomllib.loads(pyproject.read_text())["tool"]["setuptools"]["package-dir"]
    assert sorted(HERD_PACKAGES) == sorted(name.split(".", 1)[1] for name in package_dir)
