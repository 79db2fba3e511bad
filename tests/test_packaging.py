"""The wheel: a `revmed` command, the presets inside, no top-level `cli` module; the library
never imports typer."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
import zipfile
from pathlib import Path

import revmed

REPO = Path(__file__).resolve().parents[1]


def test_wheel_contents(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path),
                    str(REPO)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("revmed-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(
        (".dist-info", ".data"))}
    assert top_level == {"revmed"}, top_level
    assert "revmed/cli/app.py" in names
    sources = {f"revmed/{p.relative_to(REPO / 'revmed').as_posix()}"
               for p in (REPO / "revmed").rglob("*.py")}
    sources |= {f"revmed/cli/{p.name}" for p in (REPO / "cli").glob("*.py")}
    assert sources <= set(names), f"missing from the wheel: {sorted(sources - set(names))}"
    presets = {Path(n).stem for n in names if n.startswith("revmed/presets/") and n.endswith(".toml")}
    assert {"hcp-sr", "chestct-sr", "chestct-da", "brats-seg"} <= presets
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "revmed = revmed.cli.app:main" in text


def test_library_never_imports_typer(tmp_path):
    modules = [m.name for m in pkgutil.walk_packages(revmed.__path__, "revmed.")
               if not m.name.startswith(("revmed.cli", "revmed.__main__"))]
    code = ("import importlib, sys\n"
            f"for name in {modules!r}: importlib.import_module(name)\n"
            "print('typer' in sys.modules)")
    # cwd away from the checkout: there `-c` would import the source folder, not the package
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, cwd=tmp_path)
    assert result.stdout.strip() == "False"
    assert len(modules) > 5
