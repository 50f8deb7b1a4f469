"""The house's rules, read from the code: layers, no import circles, small modules.

- ``io/`` is the ground floor: it imports only ``slidesift.errors`` and other ``io`` modules.
- No circle of imports between slidesift modules (imports inside functions count too).
- No library module imports ``slidesift.cli``; no command module imports another command.
- No module is over 500 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "slidesift"
MAX_LINES = 500


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every slidesift module ``path`` imports (module level, in functions, or by name)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = _module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("slidesift"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                root = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*root, base]) if base else ".".join(root)
            if not base.startswith("slidesift"):
                continue
            for alias in node.names:  # `from slidesift.phantom import _texture` is a module
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in MODULES else base)
    return {_owner(m) for m in found} - {here}


def _owner(name: str) -> str:
    """The module that defines ``name`` (a module, or a package's ``__init__``)."""
    while name not in MODULES and "." in name:
        name = name.rpartition(".")[0]
    return name


FILES = sorted(PACKAGE.rglob("*.py"))
MODULES = {_module_name(p): p for p in FILES}
GRAPH = {name: _imports(path) for name, path in MODULES.items()}


def test_io_is_the_ground_floor() -> None:
    for name, deps in GRAPH.items():
        if name.startswith("slidesift.io."):
            above = {
                d for d in deps if d != "slidesift.errors" and not d.startswith("slidesift.io")
            }
            assert not above, f"{name} imports pipeline stages {sorted(above)}"


def test_no_import_circles() -> None:
    # a package's __init__ re-exports its modules; it is not a stage of its own
    graph = {
        n: {d for d in deps if MODULES[d].name != "__init__.py"}
        for n, deps in GRAPH.items()
        if MODULES[n].name != "__init__.py"
    }
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                circle = [*stack[stack.index(dep) :], dep]
                pytest.fail("import circle: " + " -> ".join(circle))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_the_library_never_imports_the_cli() -> None:
    for name, deps in GRAPH.items():
        if not name.startswith("slidesift.cli"):
            cli = sorted(d for d in deps if d.startswith("slidesift.cli"))
            assert not cli, f"{name} imports {cli}"


def test_no_command_imports_another() -> None:
    shared = {"slidesift.cli.options", "slidesift.cli.views", "slidesift.cli.config"}
    for name, deps in GRAPH.items():
        if name.startswith("slidesift.cli.") and name != "slidesift.cli.main":
            others = sorted(d for d in deps if d.startswith("slidesift.cli.") and d not in shared)
            assert not others, f"{name} imports the commands {others}"


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_over_500_lines(path: Path) -> None:
    n = len(path.read_text(encoding="utf-8").splitlines())
    assert n <= MAX_LINES, f"{path.name} has {n} lines; split it (types below, behaviour above)"


def test_the_checker_sees_a_circle_and_a_climb(tmp_path: Path) -> None:
    """The rules above can fail: the parser finds the imports they are about."""
    assert "slidesift.errors" in GRAPH["slidesift.io.slide"]
    assert "slidesift.sift" in GRAPH["slidesift.tumor_rails"]
    assert "slidesift.rails" in GRAPH["slidesift.sift"]
    assert "slidesift.phantom._texture" in GRAPH["slidesift.phantom.render"]
    # an import inside a function counts
    assert "slidesift.segment_outputs" in GRAPH["slidesift.evaluate"]
