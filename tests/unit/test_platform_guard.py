"""The repo's platform/ folder must never shadow the stdlib ``platform`` module.

``platform/`` is mapped to ``herd.platform`` and has no ``__init__.py``: with the repo root on
``sys.path`` (``python -c`` / ``python -m pytest`` from the root, Ray workers), ``import platform``
must still find the stdlib module.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_no_init_in_platform_folder() -> None:
    assert (REPO / "platform").is_dir()
    assert not (REPO / "platform" / "__init__.py").exists()


def test_import_platform_from_repo_root_is_stdlib() -> None:
    env = dict(os.environ)
    env.pop("PYTHONSAFEPATH", None)  # keep cwd on sys.path, as a plain `python -c` has it
    result = subprocess.run(
        [sys.executable, "-c",
         "import platform, sys; print(platform.__file__); platform.system()"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    module_file = Path(result.stdout.strip().splitlines()[0]).resolve()
    repo_platform = (REPO / "platform").resolve()
    assert repo_platform not in module_file.parents, module_file
    assert module_file.name == "platform.py"


def test_herd_platform_is_the_repo_folder() -> None:
    import herd.platform.config as config

    assert Path(config.__file__).resolve().parent == (REPO / "platform").resolve()
