"""The emulator's modules import each other without a cycle, imports inside functions included.

An import placed inside a function to dodge a cycle is still a cycle (house rule), so the graph
is built from every ``import`` statement anywhere in a module, read with :mod:`ast` rather than
from what Python happened to import.  A submodule's implicit import of its own package is not an
edge (it would make every package with an ``__init__`` that re-exports its submodules cyclic);
``from voice.emulator import X`` inside a submodule is, when ``X`` is not a submodule itself.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from pathlib import Path

import voice.emulator

PACKAGE = "voice.emulator"
PACKAGE_DIR = Path(voice.emulator.__file__).parent


def module_files(package: str, directory: Path) -> dict[str, Path]:
    """Every module of ``package`` (one level: the emulator has no subpackages) by dotted name."""
    modules = {package: directory / "__init__.py"}
    for path in sorted(directory.glob("*.py")):
        if path.name != "__init__.py":
            modules[f"{package}.{path.stem}"] = path
    return modules


def imported_modules(module: str, path: Path, modules: Mapping[str, Path]) -> set[str]:
    """The modules of ``modules`` that ``module`` imports anywhere in it (functions and ``if`` blocks too).

    ``from package import name`` is an edge to the submodule ``package.name`` when there is one,
    else to ``package`` itself (whose ``__init__`` defines or re-exports ``name``).
    """
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in modules)
        elif isinstance(node, ast.ImportFrom):
            source = node.module or ""
            if node.level:
                # Relative: the anchor is the module itself for an __init__, else its package.
                parts = module.split(".") if is_package else module.split(".")[:-1]
                anchor = ".".join(parts[: len(parts) - node.level + 1])
                source = f"{anchor}.{source}" if source else anchor
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                if submodule in modules:
                    found.add(submodule)
                elif source in modules:
                    found.add(source)
    found.discard(module)
    return found


def import_graph(package: str, directory: Path) -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports."""
    modules = module_files(package, directory)
    return {module: imported_modules(module, path, modules) for module, path in modules.items()}


def find_cycle(graph: Mapping[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or ``None`` (depth-first search, three colours)."""
    visiting: list[str] = []
    done: set[str] = set()

    def visit(node: str) -> list[str] | None:
        if node in visiting:
            return [*visiting[visiting.index(node) :], node]
        if node in done:
            return None
        visiting.append(node)
        for target in sorted(graph.get(node, ())):
            cycle = visit(target)
            if cycle is not None:
                return cycle
        visiting.pop()
        done.add(node)
        return None

    for start in sorted(graph):
        cycle = visit(start)
        if cycle is not None:
            return cycle
    return None


def test_the_emulator_has_no_import_cycle() -> None:
    graph = import_graph(PACKAGE, PACKAGE_DIR)
    assert len(graph) > 10, sorted(graph)  # the walk found the package's modules
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def _write_package(root: Path, files: Mapping[str, str]) -> Path:
    directory = root / "pkg"
    directory.mkdir()
    for name, text in files.items():
        (directory / name).write_text(text, encoding="utf-8")
    return directory


def test_an_import_inside_a_function_closes_a_cycle(tmp_path: Path) -> None:
    directory = _write_package(
        tmp_path,
        {
            "__init__.py": "from pkg.a import A\n",
            "a.py": "from pkg.b import B\n\nclass A:\n    pass\n",
            "b.py": "class B:\n    def run(self):\n        from pkg.a import A\n        return A()\n",
        },
    )
    assert find_cycle(import_graph("pkg", directory)) == ["pkg.a", "pkg.b", "pkg.a"]


def test_relative_and_package_imports_are_resolved(tmp_path: Path) -> None:
    directory = _write_package(
        tmp_path,
        {
            "__init__.py": "from .a import A\n",
            "a.py": "from . import b\n\nA = 1\n",
            "b.py": "from pkg import A\n",  # through the package, which imports a, which imports b
        },
    )
    graph = import_graph("pkg", directory)
    assert graph == {"pkg": {"pkg.a"}, "pkg.a": {"pkg.b"}, "pkg.b": {"pkg"}}
    assert find_cycle(graph) == ["pkg", "pkg.a", "pkg.b", "pkg"]


def test_type_checking_imports_count(tmp_path: Path) -> None:
    directory = _write_package(
        tmp_path,
        {
            "__init__.py": "",
            "a.py": "from pkg.b import B\n",
            "b.py": "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from pkg.a import A\n\nB = 1\n",
        },
    )
    assert find_cycle(import_graph("pkg", directory)) == ["pkg.a", "pkg.b", "pkg.a"]
