"""The shape of the code, as docs/architecture.md describes it: imports run one way down the
layers, no module imports one that imports it back, and functions stay short.

Imports are read from the source (every ``import`` statement, those inside functions too), so
a lazy import counts like any other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

#: The layers, bottom first; a unit may import units of lower layers only (and itself).
#: A unit is a top-level module of the library or one of its sub-packages.
LAYERS = [
    ["revmed.errors"],
    ["revmed", "revmed.sizes", "revmed.atomic", "revmed.preset"],
    ["revmed.nn"],
    ["revmed.runtime", "revmed.models", "revmed.io", "revmed.transforms",
     "revmed.regions", "revmed.metrics"],
    ["revmed.config"],
    ["revmed.windows", "revmed.tiles", "revmed.checkpoint"],
    ["revmed.data"],
    ["revmed.engine"],
    ["revmed.inference", "revmed.evaluation"],
    ["revmed.selfsr"],
    ["revmed.planning", "revmed.demo", "revmed.api"],
    ["revmed.cli"],
    ["revmed.__main__"],
]
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}
#: Longest function body (lines, signature and docstring aside), everywhere in the library.
MAX_BODY = 60


def _modules() -> dict[str, Path]:
    """Dotted name -> source file, as installed (``cli/`` is ``revmed.cli``)."""
    found = {}
    for folder, package in (("revmed", "revmed"), ("cli", "revmed.cli")):
        for path in (REPO / folder).rglob("*.py"):
            parts = [p for p in path.relative_to(REPO / folder).with_suffix("").parts
                     if p != "__init__"]
            found[".".join([package, *parts])] = path
    return found


MODULES = _modules()


def _imports(path: Path) -> set[str]:
    """The revmed modules ``path`` imports (``from a import b``: ``a.b`` when it is a module)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in MODULES}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                out.add(sub if sub in MODULES else node.module)
    return {m for m in out if m in MODULES}


GRAPH = {name: _imports(path) - {name} for name, path in MODULES.items()}


def _unit(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2])


def test_every_unit_has_a_layer():
    assert {_unit(m) for m in MODULES} <= set(RANK), sorted({_unit(m) for m in MODULES} - set(RANK))


def test_imports_run_down_the_layers():
    upward = [f"{a} imports {b}" for a, targets in GRAPH.items() for b in targets
              if _unit(a) != _unit(b) and RANK[_unit(b)] >= RANK[_unit(a)]]
    assert upward == []


def test_no_module_imports_one_that_imports_it_back():
    cycles, state = [], {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(GRAPH[module]):
            if state.get(target) == "open":
                cycles.append(" -> ".join(path[path.index(target):] + [module, target]))
            elif target not in state:
                visit(target, path + [module])
        state[module] = "done"

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [])
    assert cycles == []


def test_the_checks_can_fail():
    """The graph is really read: known edges are there, and a made-up upward one is caught."""
    assert "revmed.checkpoint" in GRAPH["revmed.inference"]
    assert "revmed.nn.replay" in GRAPH["revmed.nn.coupling"]
    assert RANK[_unit("revmed.engine.trainer")] > RANK[_unit("revmed.checkpoint")]


def _long_functions() -> list[str]:
    long = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            body = node.body
            if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                body = body[1:]  # the docstring
            if body and body[-1].end_lineno - body[0].lineno + 1 > MAX_BODY:
                long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}")
    return long


def test_no_function_body_is_over_60_lines():
    assert _long_functions() == []


@pytest.mark.parametrize(("module", "cls", "limit"), [("revmed.engine.trainer", "Trainer", 250)])
def test_the_trainer_stays_short(module, cls, limit):
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    (node,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls]
    assert node.end_lineno - node.lineno + 1 < limit
