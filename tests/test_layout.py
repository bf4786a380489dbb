"""The layout is the architecture: imports point one way, data -> model -> analysis -> compress
-> the evaluation core -> report -> entry points, and never in a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
# Each module's level; a module may import only from its own level or below.
LEVELS = {
    "src.errors": 0,
    "src.schema": 0,
    "src.threads": 0,
    "src.tokens": 1,
    "src.data": 1,
    "src.network": 2,
    "src.model": 2,
    "src.loading": 2,
    "src.analysis": 3,
    "src.compress": 4,
    "src.checkpoints": 5,
    "src.baseline": 5,
    "src.callbacks": 5,
    "src.store": 5,
    "src.sites": 5,
    "src.workbench": 6,
    "src.viewer": 7,
    "src.report": 7,
    "src.artefacts": 7,
    "src.claims": 7,
    "src.whole_model": 7,
    "src.run": 8,
    "src.study": 8,
    "src.predict": 8,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The src modules a file imports (``from src import schema`` counts as src.schema)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("src")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("src"):
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    modules = {module_name(p) for p in SRC.rglob("*.py")}
    return {name for name in found if name in modules} - {"src"}


GRAPH = {module_name(p): imports(p) for p in SRC.rglob("*.py")}


def level(module: str) -> int:
    return next(v for k, v in LEVELS.items() if module == k or module.startswith(f"{k}."))


def test_every_module_has_a_level() -> None:
    packages = ("src", "src.analysis", "src.compress")
    unplaced = [
        module
        for module in GRAPH
        if module not in packages
        and not any(module == k or module.startswith(f"{k}.") for k in LEVELS)
    ]
    assert not unplaced, f"add these modules to LEVELS: {unplaced}"


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_point_down_the_layers(module: str) -> None:
    if module in ("src",):
        return
    upward = [m for m in GRAPH[module] if level(m) > level(module)]
    assert not upward, f"{module} imports {upward} from a layer above it"


def test_the_analysis_package_is_pure() -> None:
    """Tensors in, tensors out: no data, network, compression, core or entry point."""
    for module, imported in GRAPH.items():
        if module.startswith("src.analysis"):
            assert all(m.startswith(("src.analysis", "src.errors")) for m in imported), module


def test_no_import_cycles() -> None:
    def visit(module: str, path: tuple[str, ...]) -> None:
        for nxt in GRAPH.get(module, ()):
            assert nxt not in path, f"import cycle: {' -> '.join((*path, nxt))}"
            visit(nxt, (*path, nxt))

    for module in GRAPH:
        visit(module, (module,))
