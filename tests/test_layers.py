"""The package's layers, checked: imports flow one way, with no cycles, and the stages are pure.

cli > apps > reference > engine > stages > registry > store, reports, data > ground
(errors, config, schemas, dates, tags, parallel). See docs/architecture.md.
"""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mlflow_pipeline"
# Lower layers never import higher ones.
LAYERS = {
    "errors": 0,
    "config": 0,
    "schemas": 0,
    "tags": 0,
    "conf": 0,
    "redaction": 0,
    "interrupt": 0,
    "parallel": 0,
    "dates": 0,
    "data": 1,
    "store": 1,
    "reports": 1,
    "registry": 2,
    "stages": 3,
    "engine": 4,
    "reference": 5,
    "apps": 6,
    "cli": 7,
}


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(path: Path, *, top_level_only: bool = False) -> set[str]:
    """Every module ``path`` imports (function-level imports too, unless top_level_only)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def ours(names: set[str], known: dict[str, Path]) -> set[str]:
    return {n for n in names if n in known and n != "mlflow_pipeline"}


def layer(module: str) -> str:
    return module.split(".")[1]


def test_every_module_is_in_a_layer():
    assert {layer(m) for m in modules() if m != "mlflow_pipeline"} <= set(LAYERS)


def test_there_are_no_import_cycles():
    known = modules()
    graph = {name: ours(imports(path), known) - {name} for name, path in known.items()}
    # A package's __init__ imports nothing of its own: drop parent packages reached by
    # `from mlflow_pipeline.x import y` so that they do not look like cycles.
    graph = {
        name: {d for d in deps if not name.startswith(d + ".")} for name, deps in graph.items()
    }
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as exc:
        pytest.fail(f"import cycle: {' -> '.join(exc.args[1])}")


def test_imports_flow_one_way():
    known = modules()
    wrong = []
    for name, path in known.items():
        if name == "mlflow_pipeline":
            continue
        for other in ours(imports(path), known):
            if LAYERS[layer(other)] > LAYERS[layer(name)]:
                wrong.append(f"{name} imports {other}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("name", [m for m in modules() if m.startswith("mlflow_pipeline.stages.")])
def test_stage_functions_do_not_talk_to_mlflow(name: str):
    """Stages are pure functions over frames and config: what they read from outside comes in
    as arguments. register writes to the registry only through the registry it is handed."""
    found = imports(modules()[name])
    assert not {n for n in found if n == "mlflow" or n.startswith("mlflow.")}, name
    outside = {n for n in ours(found, modules()) if layer(n) in ("store", "engine")}
    assert not outside, f"{name} imports {outside}"
    if not name.endswith(".register"):
        assert not {n for n in ours(found, modules()) if layer(n) == "registry"}, name


@pytest.mark.parametrize("name", [m for m in modules() if m.startswith("mlflow_pipeline.data.")])
def test_data_helpers_do_not_use_mlflow(name: str):
    assert not {n for n in imports(modules()[name]) if n.split(".")[0] == "mlflow"}, name
