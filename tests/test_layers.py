"""The package flows one way: data -> models -> experts -> distill -> evaluate -> report -> pipeline and its callers."""

from __future__ import annotations

import ast
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[1] / "src" / "galaxy_distill"
LAYERS = [
    {"__init__", "errors", "settings", "atomic_io", "progress", "runtime", "distributed"},
    {"data"},
    {"models"},
    {"experts"},
    {"distill", "rundir"},  # rundir: the distillation's run directory, read by the stages after it
    {"evaluate"},
    {"report"},
    {"pipeline"},
    {"demo"},
    {"cli", "cli_options", "__main__"},
]
LAYER = {name: level for level, names in enumerate(LAYERS) for name in names}


def _part(module: str) -> str:
    """The top-level part of galaxy_distill a module belongs to: 'distill' for galaxy_distill.distill.run."""
    return module.split(".")[1] if "." in module else "__init__"


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("galaxy_distill"):
            if node.module == "galaxy_distill":
                found += [(node.lineno, f"galaxy_distill.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.startswith("galaxy_distill.")]
    return found


def test_no_module_imports_a_later_stage() -> None:
    upward = []
    for path in SOURCE.rglob("*.py"):
        relative = path.relative_to(SOURCE).with_suffix("")
        mine = relative.parts[0]
        assert mine in LAYER, f"{relative}: place it in a layer of LAYERS"
        for line, module in _imports(path):
            theirs = _part(module)
            if theirs != "__version__" and LAYER[theirs] > LAYER[mine]:
                upward.append(f"{relative}:{line} imports {module}")
    assert not upward, "imports against the flow: " + "; ".join(upward)
