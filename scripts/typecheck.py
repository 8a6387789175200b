"""Run mypy on herd through the package mapping of pyproject.toml.

The source folders (``platform/``, ``registry/``, ...) are mapped into ``herd`` by
``[tool.setuptools.package-dir]`` and the editable install reaches them through an import hook,
which mypy cannot follow. So this script mirrors the mapping as symlinks under
``build/typecheck/herd/`` (``herd.platform`` -> ``../../../platform``), runs mypy there (the
configuration is ``[tool.mypy]``: ``mypy_path`` and ``files`` point at that tree) and reports
paths as they are in the repository. Extra arguments are passed to mypy.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
TREE = ROOT / "build" / "typecheck"


def package_dirs(root: Path = ROOT) -> dict[str, str]:
    """``{"herd.platform": "platform", ...}`` from ``[tool.setuptools.package-dir]``."""
    with open(root / "pyproject.toml", "rb") as f:
        mapping = tomllib.load(f)["tool"]["setuptools"]["package-dir"]
    return {name: folder for name, folder in mapping.items() if name.count(".") == 1}


def link_tree(root: Path = ROOT) -> dict[Path, str]:
    """Create ``build/typecheck/herd/<part>`` -> ``<folder>`` links; returns link -> folder."""
    namespace = TREE / "herd"
    namespace.mkdir(parents=True, exist_ok=True)
    links: dict[Path, str] = {}
    for name, folder in package_dirs(root).items():
        link = namespace / name.split(".", 1)[1]
        target = os.path.relpath(root / folder, namespace)
        if link.is_symlink() and os.readlink(link) == target:
            links[link] = folder
            continue
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target, target_is_directory=True)
        links[link] = folder
    for stale in namespace.iterdir():
        if stale not in links and stale.is_symlink():
            stale.unlink()
    return links


def main(argv: list[str]) -> int:
    links = link_tree()
    out = subprocess.run([sys.executable, "-m", "mypy", *argv], cwd=ROOT, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    text = out.stdout
    for link, folder in links.items():
        text = text.replace(f"{link.relative_to(ROOT)}/", f"{folder}/")
    sys.stdout.write(text)
    return out.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
