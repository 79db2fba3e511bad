"""Data commands: `revmed info`, `revmed synth`, `revmed patchify`.

Library modules that pull in torch or MONAI are imported inside the commands, so that
`revmed --help` and `revmed --version` answer at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import typer
from rich.table import Table

from revmed import config
from revmed.cli import output
from revmed.cli.root import app
from revmed.preset import SYNTH_TASKS
from revmed.errors import ConfigError
from revmed.sizes import shape_text


def _shape(text: Optional[str]) -> Optional[tuple[int, int, int]]:  # noqa: UP007
    if text is None:
        return None
    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise ConfigError(f"--shape {text}: expected three positive integers, e.g. 64,64,48")
    return shape  # type: ignore[return-value]


@app.command("info")
def info(
    paths: list[Path] = typer.Argument(..., help="Volume files or DICOM series folders."),
    series: Optional[str] = typer.Option(  # noqa: UP007
        None, "--series", help="SeriesInstanceUID to read from a folder with several series."),
    json_: bool = typer.Option(False, "--json", help="Print JSON on stdout."),
) -> None:
    """Show shape, channels, spacing, origin, direction and value range of volumes.

    Example: revmed info scan.nii.gz dicom/series1/
    """
    from revmed.io import read_volume

    rows = []
    for path in paths:
        volume = read_volume(path, series=series)
        finite = volume.array[np.isfinite(volume.array)]
        rows.append({
            "path": str(path), "shape": list(volume.shape), "channels": volume.channels,
            "spacing_mm": [round(float(v), 6) for v in volume.spacing],
            "origin_mm_ras": [round(float(v), 6) for v in volume.origin],
            "direction_ras": [[round(float(v), 6) for v in row] for row in volume.direction],
            "min": float(finite.min()) if finite.size else None,
            "max": float(finite.max()) if finite.size else None,
            "nonfinite_voxels": int(volume.array.size - finite.size),
            **{k: v for k, v in volume.meta.items() if isinstance(v, str | int | float)},
        })
    if json_:
        output.emit_json(rows)
        return
    console = output.stdout()
    for row in rows:
        table = Table(show_header=False, box=None, title=row["path"], title_justify="left")
        for key, value in row.items():
            if key != "path":
                table.add_row(key, str(value))
        console.print(table)


@app.command("synth")
def synth(
    task: str = typer.Argument(..., help=f"One of: {', '.join(SYNTH_TASKS)}."),
    out_dir: Path = typer.Argument(..., help="Folder to write the dataset into."),
    cases: int = typer.Option(10, "--cases", min=2, help="Number of cases (split into "
                              "train/val/test)."),
    seed: int = typer.Option(0, "--seed", help="Seed; the same seed gives the same data."),
    shape: Optional[str] = typer.Option(  # noqa: UP007
        None, "--shape", help="Volume shape I,J,K (default: the task's)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing dataset."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    json_: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
) -> None:
    """Write a synthetic dataset in revmed's dataset layout (no private data needed).

    chestct-sr: chest-CT phantoms in HU for super-resolution; chestct-da: the same anatomy with a
    sharp (B50f-like) and a smooth (B30f-like) kernel; hcp-sr: 6-channel diffusion tensors with a
    brain mask; brats-seg: 4-modality brain MRI with a tumour label map.

    Example: revmed synth chestct-sr data/demo-sr --cases 6
    """
    from revmed.data.synthetic import synthesize

    if task not in SYNTH_TASKS:
        raise ConfigError(f"unknown synth task {task!r}; choose one of {', '.join(SYNTH_TASKS)}")
    with output.progress(f"synth {task}", cases, quiet or json_) as update:
        dataset = synthesize(task, out_dir, cases=cases, seed=seed, shape=_shape(shape),
                             overwrite=overwrite, progress=lambda done, total: update(done, total))
    summary = {"task": task, "folder": str(out_dir), "kind": dataset.kind,
               "channels": list(dataset.channels),
               "cases": {split: len(items) for split, items in dataset.splits.items()}}
    if json_:
        output.emit_json(summary)
    else:
        counts = ", ".join(f"{n} {split}" for split, n in summary["cases"].items())
        output.stdout().print(f"wrote {task} dataset to {out_dir} ({counts})")


@app.command("patchify")
def patchify(
    data_dir: Path = typer.Argument(..., help="Dataset folder (see docs/data.md)."),
    out_dir: Path = typer.Argument(..., help="Folder for the shards and manifest.json."),
    preset: str = typer.Option(..., "--preset", "-p", help="Preset name or .toml path."),
    set_: list[str] = typer.Option([], "--set", help="Override a preset key: --set k=v."),
    split: str = typer.Option("train", "--split", help="Dataset split to cut."),
    seed: Optional[int] = typer.Option(  # noqa: UP007
        None, "--seed", help="Seed of the random crops (default: the preset's train.seed)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace patches made with other "
                                   "settings."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    json_: bool = typer.Option(False, "--json", help="Print the manifest on stdout."),
) -> None:
    """Cut a dataset into patches with the preset's transforms and foreground rule.

    Writes one shard per case under OUT_DIR/shards/ and OUT_DIR/manifest.json, which training can read instead
    of the volumes. Re-running skips the cases already done.

    Example: revmed patchify data/demo-sr patches/demo-sr --preset demo-sr
    """
    from revmed.data.patchify import patchify as run_patchify

    resolved = config.load_preset(preset, set_)
    with output.progress(f"patchify {data_dir}", None, quiet or json_) as update:
        manifest = run_patchify(data_dir, out_dir, resolved, split=split, seed=seed,
                                overwrite=overwrite,
                                progress=lambda done, total, name: update(done, total, name))
    if json_:
        output.emit_json(manifest)
    else:
        output.stdout().print(f"wrote {manifest['patches']} patches of "
                              f"{shape_text(manifest['patch_size'])} from "
                              f"{len(manifest['shards'])} cases to {out_dir}")
