"""The package's shape, checked by reading its source (AST): layers import only downward,
no import cycles, the core never imports MLflow, and nobody uses MLflow's private names.

Layers, lowest first (a module imports its own layer or lower ones, never higher):
errors -> core -> tracking -> reporting | inference -> app | web -> commands (train,
cli, project). Every import counts, also one inside a function; `if TYPE_CHECKING:` imports
never run, so they do not.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from .conftest import ROOT

PACKAGE = "digit_experiments"
RANKS = {
    "errors": 0,
    "core": 1,
    "tracking": 2,
    "reporting": 3,
    "inference": 3,
    "app": 4,
    "stack": 4,
    "web": 4,
    "commands": 5,
}
COMMANDS = {"train", "cli", "project"}


def modules() -> dict[str, Path]:
    """Every module of the package: dotted name -> file."""
    found = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "errors"  # the package's __init__: a version string
    if parts[1] in COMMANDS:
        return "commands"
    return parts[1]


def runtime_imports(tree: ast.AST) -> list[tuple[str, list[str], int]]:
    """(module, names imported from it, line) for every import that can run."""
    found = []

    def visit(node):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((alias.name, [], node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append((node.module, [alias.name for alias in node.names], node.lineno))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def graph(sources: dict[str, str], known: set[str]) -> dict[str, set[str]]:
    """Module -> the package modules it imports (`from pkg import mod` counts as mod)."""
    edges: dict[str, set[str]] = {name: set() for name in sources}
    for name, source in sources.items():
        for module, names, _ in runtime_imports(ast.parse(source)):
            if not module.startswith(PACKAGE):
                continue
            targets = {f"{module}.{n}" for n in names if f"{module}.{n}" in known}
            edges[name] |= targets or {module}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every import cycle (as a path that comes back to its start), found by DFS."""
    found, state = [], {}

    def visit(node, path):
        state[node] = "open"
        for target in sorted(edges.get(node, ())):
            if state.get(target) == "open":
                found.append(path[path.index(target) :] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    return found


def upward_imports(edges: dict[str, set[str]]) -> list[str]:
    return [
        f"{source} ({layer(source)}) imports {target} ({layer(target)})"
        for source, targets in edges.items()
        for target in sorted(targets)
        if layer(target) != layer(source) and RANKS[layer(target)] > RANKS[layer(source)]
    ]


def mlflow_in_core(sources: dict[str, str]) -> list[str]:
    return [
        f"{name}:{line} imports {module}"
        for name, source in sources.items()
        if layer(name) == "core"
        for module, _, line in runtime_imports(ast.parse(source))
        if module.split(".")[0] == "mlflow"
    ]


def private_mlflow_names(source: str, where: str) -> list[str]:
    """Uses of MLflow's private names: `mlflow._x` or `mlflow.a._b` modules, `from mlflow.a
    import _b`, and `_attributes` of anything that came from MLflow (`fluent._stack`)."""
    tree = ast.parse(source)
    found, bound = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "mlflow":
                    bound.add(alias.asname or "mlflow")
                    if _private(alias.name.split(".")):
                        found.append(f"{where}:{node.lineno} import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "mlflow":
            for alias in node.names:
                bound.add(alias.asname or alias.name)
                if _private([*node.module.split("."), alias.name]):
                    found.append(f"{where}:{node.lineno} from {node.module} import {alias.name}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private([node.attr]):
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in bound:
                found.append(f"{where}:{node.lineno} .{node.attr} of {root.id}")
    return found


def _private(parts: list[str]) -> bool:
    return any(p.startswith("_") and not (p.startswith("__") and p.endswith("__")) for p in parts)


@pytest.fixture(scope="module")
def package():
    found = modules()
    sources = {name: path.read_text() for name, path in found.items()}
    return sources, graph(sources, set(found))


def test_every_module_belongs_to_a_layer(package):
    sources, _ = package
    assert {layer(name) for name in sources} <= set(RANKS)
    # The folders are the layers: a reader sees the architecture from the listing.
    folders = {p.name for p in (ROOT / PACKAGE).iterdir() if (p / "__init__.py").is_file()}
    assert folders == {"core", "tracking", "reporting", "inference", "app", "stack", "web"}


def test_layers_import_only_downward(package):
    _, edges = package
    assert upward_imports(edges) == []


def test_there_is_no_import_cycle(package):
    _, edges = package
    assert cycles(edges) == []


def test_the_core_never_imports_mlflow(package):
    sources, _ = package
    assert mlflow_in_core(sources) == []


def test_no_private_mlflow_name_is_used_anywhere():
    files = [
        *sorted((ROOT / PACKAGE).rglob("*.py")),
        *sorted((ROOT / "tests").glob("*.py")),
        *sorted((ROOT / "benchmarks").glob("*.py")),
    ]
    found = []
    for path in files:
        found += private_mlflow_names(path.read_text(), str(path.relative_to(ROOT)))
    assert found == []


def test_the_error_classes_import_nothing(package):
    sources, _ = package
    imports = runtime_imports(ast.parse(sources[f"{PACKAGE}.errors"]))
    assert [module for module, _, _ in imports] == ["__future__"]


def test_search_runs_is_called_in_one_place_only(package):
    # Every search goes through tracking.search, which follows MLflow's page tokens.
    sources, _ = package
    callers = sorted(name for name, source in sources.items() if ".search_runs(" in source)
    assert callers == [f"{PACKAGE}.tracking.search"]


# --- the checks themselves catch what they are for (negative controls) ------------------


def test_the_checks_catch_a_cycle_an_upward_import_mlflow_in_core_and_a_private_name():
    fake = {
        f"{PACKAGE}.core.a": f"from {PACKAGE}.core import b\n",
        f"{PACKAGE}.core.b": f"def f():\n    from {PACKAGE}.core.a import x\n",
        f"{PACKAGE}.core.c": f"def g():\n    import mlflow\n    from {PACKAGE}.app import run\n",
        f"{PACKAGE}.app.run": "",
    }
    edges = graph(fake, set(fake))
    assert cycles(edges) == [[f"{PACKAGE}.core.a", f"{PACKAGE}.core.b", f"{PACKAGE}.core.a"]]
    assert upward_imports(edges) == [f"{PACKAGE}.core.c (core) imports {PACKAGE}.app.run (app)"]
    assert mlflow_in_core(fake) == [f"{PACKAGE}.core.c:2 imports mlflow"]
    private = (
        "from mlflow.tracking import fluent\n"
        "import mlflow.keras.save as keras_save\n"
        "from mlflow.models.utils import _save_example\n"
        "fluent._active_run_stack.get().clear()\n"
        "keras_save._save_example = None\n"
    )
    assert sorted(private_mlflow_names(private, "x.py")) == [
        "x.py:3 from mlflow.models.utils import _save_example",
        "x.py:4 ._active_run_stack of fluent",
        "x.py:5 ._save_example of keras_save",
    ]
    typing_only = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import mlflow\n"
    assert mlflow_in_core({f"{PACKAGE}.core.d": typing_only}) == []
