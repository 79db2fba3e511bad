"""The shape of the code, as docs/architecture.md describes it: imports run one way down the
layers, no module imports one that imports it back, and functions stay short.

Imports are read from the source (every ``import`` statement, those inside functions too), so
a lazy import counts like any other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: The layers, bottom first; a unit may import units of lower layers only (and itself).
#: A unit is a top-level module of the library or one of its sub-packages.
LAYERS = [
    ["revmed.errors"],
    ["revmed", "revmed.sizes", "revmed.preset"],
    ["revmed.nn"],
    ["revmed.runtime", "revmed.models", "revmed.io", "revmed.transforms",
     "revmed.regions", "revmed.metrics"],
    ["revmed.config"],
    ["revmed.checkpoint"],
    # below the engine: validation during training runs networks over whole volumes as
    # inference does (its windows and tiles)
    ["revmed.data", "revmed.inference", "revmed.evaluation"],
    ["revmed.engine"],
    ["revmed.selfsr"],
    ["revmed.planning", "revmed.api"],
    ["revmed.cli"],
    ["revmed.__main__"],
]
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}
#: Longest function body (lines, signature and docstring aside), everywhere in the library.
MAX_BODY = 60
#: Most modules directly in revmed/ (``__init__`` and ``__main__`` aside); the rest live in
#: packages, one per part of the library.
MAX_ROOT_MODULES = 10


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


def test_the_library_root_holds_few_modules():
    root = {p.stem for p in (REPO / "revmed").glob("*.py")} - {"__init__", "__main__"}
    assert len(root) <= MAX_ROOT_MODULES, sorted(root)


def test_the_checks_can_fail():
    """The graph is really read: known edges are there, and a made-up upward one is caught."""
    assert "revmed.checkpoint" in GRAPH["revmed.inference.predictor"]
    assert "revmed.inference.windows" in GRAPH["revmed.engine.validation"]
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


#: Where the library may name the BraTS label set: where it is defined and named ("brats" in a
#: dataset.toml or on the command line), for files made before label sets were recorded (old
#: checkpoints and patch folders), and the phantom that imitates BraTS. Everywhere else labels
#: come from the data or the checkpoint.
BRATS_NAMED_IN = {"revmed.regions", "revmed.data.layout", "revmed.checkpoint",
                  "revmed.data.training_data", "revmed.data.synthetic.datasets"}


def test_brats_is_no_silent_default():
    naming = {name for name, path in MODULES.items()
              if any(isinstance(node, ast.Name) and node.id == "BRATS"
                     or isinstance(node, ast.alias) and node.name == "BRATS"
                     for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))))}
    assert naming - BRATS_NAMED_IN == set()
    assert "revmed.regions" in naming  # the check reads names: the definition is found


#: Most functions that take a whole ``Preset`` (a parameter annotated ``Preset``, or an
#: unannotated one named ``preset``): the entry points that assemble a run, plan it or write
#: it down; everything else takes the section it needs.
MAX_PRESET_TAKERS = 15


def _preset_takers() -> list[str]:
    found = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                continue
            args = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
            for arg in args:
                text = ast.unparse(arg.annotation) if arg.annotation is not None else ""
                if "Preset" in text.replace("|", " ").replace("'", " ").split() or \
                        (not text and arg.arg == "preset"):
                    found.append(f"{name}:{node.lineno} {getattr(node, 'name', 'lambda')}")
                    break
    return sorted(found)


def test_few_functions_take_the_whole_preset():
    takers = _preset_takers()
    assert len(takers) <= MAX_PRESET_TAKERS, "\n".join(takers)
    assert any("setup_training" in t for t in takers)  # the check reads annotations


def test_commands_import_no_private_helpers_of_each_other():
    """Shared CLI helpers live in ``revmed.cli.output`` (or the library), never as private
    names of another command's module."""
    private = [f"{name} imports {node.module}.{alias.name}"
               for name, path in MODULES.items() if name.startswith("revmed.cli")
               for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
               if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("revmed.")
               for alias in node.names if alias.name.startswith("_")]
    assert private == []


def test_the_tests_mirror_the_package():
    """One test folder per package of the library (``tests/io`` for ``revmed/io``, and
    ``tests/io/dicom`` for ``revmed/io/dicom``), plus the command line's; the files tests read
    (real scanner DICOM, old checkpoints) are under ``tests/data/fixtures``."""
    library = REPO / "revmed"
    packages = {p.parent.relative_to(library) for p in library.rglob("__init__.py")}
    packages -= {Path("."), Path("data/synthetic")}  # the phantoms: tests/data/test_synth.py
    folders = {p.relative_to(REPO / "tests") for p in (REPO / "tests").rglob("*")
               if p.is_dir() and "__pycache__" not in p.parts}
    folders = {f for f in folders if f.parts[0] != "cli" and f.parts[:2] != ("data", "fixtures")}
    assert folders == packages
