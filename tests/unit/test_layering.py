"""herd's layering contract (``cli -> replication -> supervisors -> registry -> platform``, never
upward, no import cycles), small modules, no use of another module's underscore names, and every
module importable; then the checker itself, on small trees that break each rule once."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from layering import LAYERS, MAX_LINES, Report, check_tree, module_files, tomllib

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def report() -> Report:
    return check_tree(ROOT)


def listed(items: object) -> str:
    return "\n".join(map(str, items))  # type: ignore[call-overload]


# ------------------------------------------------------------------------------ the real tree

def test_no_layer_imports_a_layer_above_it(report: Report) -> None:
    assert len(report.imports) > 100, "the checker found almost no imports: is it reading?"
    assert not report.upward(), f"upward imports ({' -> '.join(reversed(LAYERS))}):\n" \
        + listed(report.upward())


def test_every_herd_import_names_a_layer(report: Report) -> None:
    assert not report.unknown, "imports of herd modules outside every layer:\n" \
        + listed(report.unknown)


def test_no_import_cycles(report: Report) -> None:
    cycles = report.cycles()
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_no_module_over_the_line_limit(report: Report) -> None:
    assert not report.long_files, f"modules over {MAX_LINES} lines:\n" + "\n".join(
        f"{path}: {n}" for path, n in sorted(report.long_files.items()))


def test_no_module_uses_another_modules_private_names(report: Report) -> None:
    assert not report.private, "uses of another module's underscore names:\n" \
        + listed(report.private)


def test_every_module_imports() -> None:
    """Each module imports on its own, in a fresh interpreter (import order hides nothing)."""
    modules = sorted(module_files(ROOT))
    script = textwrap.dedent("""
        import importlib, sys
        failed = {}  # error -> modules whose import raised it
        for name in sys.argv[1:]:
            try:
                importlib.import_module(name)
            except Exception as exc:
                failed.setdefault(f"{type(exc).__name__}: {exc}", []).append(name)
        for error, names in failed.items():
            print(f"{error}\\n    in {', '.join(names)}")
        sys.exit(1 if failed else 0)
    """)
    out = subprocess.run([sys.executable, "-c", script, *modules], cwd=ROOT, text=True,
                         capture_output=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]


def test_strictly_type_checked_modules_exist() -> None:
    """The strict mypy list names real modules, so a rename cannot drop one silently."""
    with open(ROOT / "pyproject.toml", "rb") as f:
        overrides = tomllib.load(f)["tool"]["mypy"]["overrides"]
    patterns = [p for o in overrides if o.get("disallow_untyped_defs") for p in o["module"]]
    assert len(patterns) >= 9
    modules = module_files(ROOT)
    missing = [p for p in patterns if not (
        p in modules if not p.endswith(".*")
        else any(m == p[:-2] or m.startswith(p[:-1]) for m in modules))]
    assert not missing, f"strictly checked in pyproject.toml but absent: {missing}"


# ------------------------------------------------------------------------------ the checker

PYPROJECT = """
[tool.setuptools.package-dir]
"herd.platform" = "platform"
"herd.registry" = "registry"
"herd.supervisors" = "supervisors"
"herd.replication" = "replication"
"herd.consensus" = "consensus"
"herd.cli" = "cli"
"""


def tree(tmp_path: Path, files: dict[str, str]) -> Path:
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return tmp_path


CLEAN = {
    "platform/errors.py": "class HerdError(Exception): ...\n",
    "platform/crdt/__init__.py": "from .base import CRDT\n",
    "platform/crdt/base.py": "from herd.platform.errors import HerdError\nclass CRDT: ...\n",
    "registry/__init__.py": "from herd.registry.state import State\n",
    "registry/state.py": "from herd.platform import errors\nclass State: ...\n",
    "supervisors/__init__.py": "",
    "supervisors/core.py": """
        import importlib
        from herd.registry import State
        from herd.platform.crdt import CRDT
        def load():
            return importlib.import_module("herd.platform.errors")
    """,
    "cli/main.py": 'TARGETS = ["herd.supervisors.core:load", "herd.registry.state"]\n',
}


def test_checker_accepts_a_clean_tree(tmp_path: Path) -> None:
    report = check_tree(tree(tmp_path, CLEAN))
    assert len(report.imports) == 9
    assert not (report.upward() or report.cycles() or report.private or report.long_files
                or report.unknown)


def test_checker_reports_platform_importing_registry(tmp_path: Path) -> None:
    report = check_tree(tree(tmp_path, {**CLEAN, "platform/x.py": """
        import herd.registry.state
        def later():
            from ..registry import State
        NAME = "herd.supervisors.core:load"
        LOG = "herd.supervisors is mentioned in prose, which is fine"
    """}))
    found = {(i.module, i.target, i.how, i.line) for i in report.upward()}
    assert found == {("herd.platform.x", "herd.registry.state", "import", 2),
                     ("herd.platform.x", "herd.registry", "function import", 4),
                     ("herd.platform.x", "herd.supervisors.core", "string", 5)}
    assert "platform/x.py:2: herd.platform.x -> herd.registry.state" in str(report.upward()[0])


def test_checker_reports_sibling_layers_importing_each_other(tmp_path: Path) -> None:
    report = check_tree(tree(tmp_path, {**CLEAN, **{
        "replication/store.py": "from herd.supervisors import core\n",
        "consensus/raft.py": "from herd.replication import store\n",
    }}))
    assert [(i.module, i.target) for i in report.upward()] == [
        ("herd.consensus.raft", "herd.replication.store")]


def test_checker_reports_import_cycles(tmp_path: Path) -> None:
    report = check_tree(tree(tmp_path, {**CLEAN, **{
        "registry/a.py": "from herd.registry import b\n",
        "registry/b.py": "def f():\n    import herd.registry.a\n",  # hidden in a function
        "supervisors/x.py": "from herd.supervisors.y import Y\n",
        "supervisors/y.py": "from typing import TYPE_CHECKING\n"
                            "if TYPE_CHECKING:\n    from herd.supervisors.z import Z\nY = 1\n",
        "supervisors/z.py": "import herd.supervisors.x\n",
    }}))
    assert report.cycles() == [["herd.registry.a", "herd.registry.b"],
                               ["herd.supervisors.x", "herd.supervisors.y",
                                "herd.supervisors.z"]]
    assert not report.upward()


def test_checker_reports_private_names_long_files_and_unknown_layers(tmp_path: Path) -> None:
    report = check_tree(tree(tmp_path, {**CLEAN, **{
        "registry/c.py": "from herd.platform.crdt.base import _helper, __doc__\n"
                         "from herd.platform import errors\nerrors._secret()\n",
        "registry/long.py": "x = 1\n" * (MAX_LINES + 1),
        "registry/exact.py": "x = 1\n" * MAX_LINES,
        "registry/d.py": "import herd.elsewhere\n",
    }}))
    assert [(p.module, p.owner, p.name, p.line) for p in report.private] == [
        ("herd.registry.c", "herd.platform.crdt.base", "_helper", 1),
        ("herd.registry.c", "herd.platform.errors", "_secret", 3)]
    assert report.long_files == {Path("registry/long.py"): MAX_LINES + 1}
    assert [i.target for i in report.unknown] == ["herd.elsewhere"]
