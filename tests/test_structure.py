"""The package's structure: imports run one way, by pipeline stage, with no circles and no import deferred
into a function body to dodge one; no function over 80 lines and no file over 400 lines.

Layers, lowest first (a module may import its own layer and the ones below):
errors, version < spec < data, models, store < validate < engine < analysis < report < cli, jobs.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import REPO

PACKAGE = REPO / "src" / "batchscale"
LAYERS = {"errors": 0, "version": 0, "spec": 1, "data": 2, "models": 2, "store": 2, "validate": 3, "engine": 4,
          "analysis": 5, "report": 6, "cli": 7, "jobs": 7, "__main__": 7}
# The package's face may expose any layer (lazily, so importing a lower layer does not load it).
FACE = "batchscale"
MAX_FUNCTION_LINES = 80
MAX_FILE_LINES = 400


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else module
    assert top in LAYERS, f"{module}: not in any layer of tests/test_structure.py"
    return LAYERS[top]


def resolve(name: str, known: dict) -> str | None:
    """The batchscale module an import names (`from a.b import c` may name module a.b.c or a name in a.b)."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def imports(path: Path, module: str, known: dict) -> tuple[set, list]:
    """(modules imported at the top level, [(line, module)] imported inside a function body)."""
    tree = ast.parse(path.read_text())
    top, deferred = set(), []

    def visit(node, in_function: bool):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                visit(child, True)
                continue
            names = []
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
                    base = ".".join(package.split(".")[: len(package.split(".")) - child.level + 1] + ([base] if base else []))
                names = [f"{base}.{alias.name}" for alias in child.names]
            for name in names:
                target = resolve(name, known) if name.startswith("batchscale") else None
                if target and target != module:
                    (deferred.append((child.lineno, target)) if in_function else top.add(target))
            visit(child, in_function)

    visit(tree, False)
    return top, deferred


@pytest.fixture(scope="module")
def graph():
    known = modules()
    return known, {name: imports(path, name, known) for name, path in known.items()}


def test_every_import_runs_down_the_layers(graph):
    known, edges = graph
    wrong = []
    for module, (top, _) in edges.items():
        if module == FACE:
            continue
        for target in top:
            if target != FACE and layer(target) > layer(module):
                wrong.append(f"{module} (layer {layer(module)}) imports {target} (layer {layer(target)})")
    assert not wrong, "\n".join(wrong)


def test_no_circle_of_imports(graph):
    _, edges = graph
    state, path = {}, []

    def visit(module):
        state[module] = "open"
        path.append(module)
        for target in sorted(edges.get(module, (set(), []))[0]):
            if target == FACE or target not in edges:
                continue
            if state.get(target) == "open":
                cycle = path[path.index(target):] + [target]
                pytest.fail("import circle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        path.pop()
        state[module] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module)


def test_no_batchscale_import_deferred_into_a_function_body(graph):
    """Deferred imports hide the real graph (and dodge circles); the command line (batchscale.cli) alone may
    defer, to load a stage only when its command runs."""
    _, edges = graph
    deferred = [f"{module}:{line} imports {target}" for module, (_, inner) in edges.items()
                for line, target in inner if module != FACE and module.split(".")[:2] != ["batchscale", "cli"]]
    assert not deferred, "\n".join(deferred)


def test_no_function_over_80_lines_and_no_file_over_400():
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        if len(text.splitlines()) > MAX_FILE_LINES:
            long.append(f"{path.relative_to(REPO)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}: {length} lines")
    assert not long, "\n".join(long)
