"""The wheel `herd submit` ships with a job holds every layer of herd (a node without herd
installed imports all of it from there) and the dashboard's static page."""

from __future__ import annotations

import zipfile
from pathlib import Path

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
