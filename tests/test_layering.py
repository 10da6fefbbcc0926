"""The package's layout, checked from its source with ``ast``: the two flows stay apart.

``pack/`` and ``unpack/`` never import each other (what both need lives below them, at the top
level); the core never imports ``cli/``; the shared modules import neither flow; no import
cycle; ``plugin.py`` imports nothing but conda's plugin API at module level; at most eight
modules at the top; no function longer than 60 lines (argparse declarations aside).
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Final

import pytest

PACKAGE: Final = Path(__file__).resolve().parents[1] / "conda_pixi_pack"
NAME: Final = "conda_pixi_pack"
#: Top-level modules both flows may use; none of them may import a flow or the CLI.
SHARED: Final = frozenset({"__init__", "errors", "progress", "format", "fileio", "artifacts"})
#: The entry points (``python -m``, conda's plugin hooks): they start the CLI or hand conda a flow.
ENTRY_POINTS: Final = frozenset({"__main__", "plugin"})
#: Longest function allowed; ``configure_parser`` functions (argparse declarations) are exempt.
MAX_FUNCTION_LINES: Final = 60
#: What ``plugin.py`` may import at module level (conda imports it on every command).
PLUGIN_IMPORTS: Final = frozenset({"__future__", "typing", "conda.plugins", "conda.plugins.types"})


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES: Final = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: Path, *, module_level_only: bool = False) -> set[str]:
    """Every module ``path`` imports (each name of a ``from`` import resolved to a module where
    it is one), lazily inside functions and under TYPE_CHECKING too unless ``module_level_only``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    own = _module_name(path)
    package = own if path.name == "__init__.py" else own.rpartition(".")[0]
    nodes = tree.body if module_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in MODULES}
    return found


def _ours(imported: set[str]) -> set[str]:
    return {name for name in imported if name == NAME or name.startswith(f"{NAME}.")}


def _flow(module: str) -> str:
    """``pack``, ``unpack``, ``cli`` or the top-level module's own name."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


@pytest.mark.parametrize("module", sorted(MODULES), ids=sorted(MODULES))
def test_flows_do_not_cross(module: str) -> None:
    flow = _flow(module)
    imported = {_flow(name) for name in _ours(_imports(MODULES[module]))}
    forbidden = {"pack": {"unpack", "cli"}, "unpack": {"pack", "cli"}}.get(flow, set())
    if flow in SHARED:
        forbidden = {"pack", "unpack", "cli"}
    elif flow in ENTRY_POINTS:
        forbidden = {"pack"}  # they start the CLI, or hand conda the unpack flow (conda env create)
    assert not imported & forbidden, f"{module} imports {sorted(imported & forbidden)}"


def test_no_import_cycle() -> None:
    """Module-level imports and lazy ones alike, so a cycle cannot hide inside a function."""
    edges = {
        module: {name for name in _ours(_imports(path)) if name in MODULES} - {module}
        for module, path in MODULES.items()
    }
    visiting: list[str] = []
    done: set[str] = set()

    def visit(module: str) -> None:
        if module in visiting:
            cycle = visiting[visiting.index(module) :] + [module]
            pytest.fail("import cycle: " + " -> ".join(cycle))
        if module in done:
            return
        visiting.append(module)
        for target in sorted(edges[module]):
            visit(target)
        visiting.pop()
        done.add(module)

    for module in sorted(edges):
        visit(module)


def test_the_plugin_module_imports_only_condas_plugin_api() -> None:
    assert _imports(PACKAGE / "plugin.py", module_level_only=True) <= PLUGIN_IMPORTS


def test_at_most_eight_top_level_modules() -> None:
    top = sorted(path.stem for path in PACKAGE.glob("*.py"))
    assert set(top) <= SHARED | ENTRY_POINTS and len(top) <= 8, top


@pytest.mark.parametrize("module", sorted(MODULES), ids=sorted(MODULES))
def test_functions_are_short(module: str) -> None:
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"  # type: ignore[operator]
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.name != "configure_parser"
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES  # type: ignore[operator]
    ]
    assert not long, f"{module}: {', '.join(long)}"


def test_the_checks_see_the_package() -> None:
    """The checks above read real modules (a wrong path would make them pass vacuously)."""
    assert {
        "conda_pixi_pack.pack.pipeline",
        "conda_pixi_pack.unpack.pipeline",
        "conda_pixi_pack.cli.main",
    } <= set(MODULES)
    assert "conda_pixi_pack.fileio" in _ours(_imports(MODULES["conda_pixi_pack.pack.pipeline"]))
