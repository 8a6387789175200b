"""The import checker behind ``test_layering.py``: herd's layering contract, read from the code.

Layers, lowest first: ``platform -> registry -> supervisors -> {replication, consensus,
eventsourcing} -> chaos -> cli``; the three in braces are siblings of one rank that must not import
each other. A module may import its own layer and the layers below it, never one above nor a
sibling: not at module level, not inside a
function, not as a string import path (``"herd.supervisors.apps.demo:run"``,
``importlib.import_module("herd.cli.main")``). Modules must not form import cycles (every
explicit import counts, including imports inside functions and under ``TYPE_CHECKING``: moving
an import there hides a cycle, it does not remove it), must not use another module's underscore
names, and must stay under :data:`MAX_LINES` lines.

Modules are found through ``[tool.setuptools.package-dir]`` of ``pyproject.toml`` (``herd.platform``
is the folder ``platform/``, ...), so the checker runs on the real tree and on small trees that
tests build under ``tmp_path``.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

# each tuple is one rank, lowest first; layers of one rank are siblings
RANKS: tuple[tuple[str, ...], ...] = (
    ("platform",), ("registry",), ("supervisors",),
    ("replication", "consensus", "eventsourcing"), ("chaos",), ("cli",))
LAYERS = tuple(layer for rank in RANKS for layer in rank)
MAX_LINES = 400
# a whole string constant naming a module of a layer, optionally with ":attribute" (logger
# names such as "herd.dynamic" name no layer and are not import paths)
IMPORT_STRING = re.compile(
    rf"herd\.(?:{'|'.join(LAYERS)})(?:\.[A-Za-z_]\w*)*(?::[A-Za-z_][\w.]*)?")


@dataclass(frozen=True)
class Import:
    """One place where ``module`` names ``target`` (a herd module)."""

    module: str
    target: str
    path: Path
    line: int
    how: str  # "import", "function import" or "string"

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.module} -> {self.target} ({self.how})"


@dataclass(frozen=True)
class PrivateUse:
    """``module`` uses ``name``, an underscore name of another module ``owner``."""

    module: str
    owner: str
    name: str
    path: Path
    line: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.module} uses {self.owner}.{self.name}"


@dataclass
class Report:
    imports: list[Import] = field(default_factory=list)
    private: list[PrivateUse] = field(default_factory=list)
    long_files: dict[Path, int] = field(default_factory=dict)
    unknown: list[Import] = field(default_factory=list)

    def upward(self) -> list[Import]:
        """Imports whose target is in a higher layer than the importer, or in a sibling layer
        of the same rank."""
        return [i for i in self.imports if layer_rank(i.target) > layer_rank(i.module)
                or (layer_rank(i.target) == layer_rank(i.module)
                    and layer_of(i.target) != layer_of(i.module))]

    def cycles(self) -> list[list[str]]:
        """Strongly connected components of more than one module (or a module importing
        itself), each sorted, the list sorted. String import paths run later, on demand, so
        they are not edges here."""
        graph: dict[str, set[str]] = {}
        for i in self.imports:
            if i.how != "string":
                graph.setdefault(i.module, set()).add(i.target)
        return sorted(sorted(c) for c in strongly_connected(graph)
                      if len(c) > 1 or next(iter(c)) in graph.get(next(iter(c)), ()))


def layer_of(module: str) -> str | None:
    """The layer ``herd.<layer>...`` names, or None outside every layer."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def layer_rank(module: str) -> int:
    """Index of ``module``'s layer's rank in :data:`RANKS` (-1 outside every layer)."""
    layer = layer_of(module)
    return next((i for i, rank in enumerate(RANKS) if layer in rank), -1)


def package_dirs(root: Path) -> dict[str, Path]:
    """``{"herd.platform": root / "platform", ...}``: the top-level folders of the mapping."""
    with open(root / "pyproject.toml", "rb") as f:
        mapping = tomllib.load(f)["tool"]["setuptools"]["package-dir"]
    return {name: root / folder for name, folder in mapping.items() if name.count(".") == 1}


def module_files(root: Path) -> dict[str, Path]:
    """Every herd module of the tree: dotted name -> file (``__init__.py`` for a package)."""
    modules: dict[str, Path] = {}
    for package, folder in package_dirs(root).items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if "__pycache__" in parts:
                continue
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join([package, *parts])] = path
    return modules


def check_tree(root: Path) -> Report:
    """Read every herd module under ``root`` and collect what the contract is about."""
    modules = module_files(root)
    report = Report()
    for name, path in modules.items():
        source = path.read_text()
        lines = len(source.splitlines())
        if lines > MAX_LINES:
            report.long_files[path.relative_to(root)] = lines
        tree = ast.parse(source, filename=str(path))
        is_package = path.name == "__init__.py"
        visitor = _ImportVisitor(name, is_package, path.relative_to(root), modules)
        visitor.visit(tree)
        for found in visitor.imports:
            known = layer_rank(found.target) >= 0
            (report.imports if known else report.unknown).append(found)
        report.private += visitor.private
    return report


class _ImportVisitor(ast.NodeVisitor):
    """Collects the herd imports of one module and its uses of other modules' private names."""

    def __init__(self, module: str, is_package: bool, path: Path,
                 modules: dict[str, Path]) -> None:
        self.module, self.path, self.modules = module, path, modules
        self.package = module if is_package else module.rpartition(".")[0]
        self.depth = 0
        self.imports: list[Import] = []
        self.private: list[PrivateUse] = []
        self.module_aliases: dict[str, str] = {}  # local name -> herd module it is bound to

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_AsyncFunctionDef = visit_FunctionDef

    def add(self, target: str, line: int, how: str | None = None) -> None:
        how = how or ("function import" if self.depth else "import")
        self.imports.append(Import(self.module, self.resolve(target), self.path, line, how))

    def resolve(self, dotted: str) -> str:
        """The longest prefix of ``dotted`` that is a module of the tree (``dotted`` if none)."""
        parts = dotted.split(".")
        for end in range(len(parts), 1, -1):
            candidate = ".".join(parts[:end])
            if candidate in self.modules:
                return candidate
        return dotted

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name.startswith("herd."):
                self.add(alias.name, node.lineno)
                if alias.asname:
                    self.module_aliases[alias.asname] = self.resolve(alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = self.absolute(node)
        if not base.startswith("herd."):
            return
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            if submodule in self.modules:
                self.add(submodule, node.lineno)
                self.module_aliases[alias.asname or alias.name] = submodule
                continue
            self.add(base, node.lineno)
            if _private(alias.name):
                self.private.append(PrivateUse(self.module, self.resolve(base), alias.name,
                                               self.path, node.lineno))

    def absolute(self, node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        base = self.package.split(".")
        base = base[:len(base) - (node.level - 1)]
        return ".".join(base + ([node.module] if node.module else []))

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if isinstance(node.value, ast.Name) and _private(node.attr):
            owner = self.module_aliases.get(node.value.id)
            if owner is not None and owner != self.module:
                self.private.append(PrivateUse(self.module, owner, node.attr, self.path,
                                               node.lineno))
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str) and IMPORT_STRING.fullmatch(node.value):
            self.add(node.value.partition(":")[0], node.lineno, "string")


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def strongly_connected(graph: dict[str, set[str]]) -> Iterator[set[str]]:
    """Tarjan's algorithm, iterative (import graphs can be deep)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = len(index)
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(graph.get(succ, ())))))
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    yield component
