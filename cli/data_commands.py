"""Data commands: `revmed info`, `revmed synth`, `revmed patchify`.

Library modules that pull in torch or MONAI are imported inside the commands, so that
`revmed --help` and `revmed --version` answer at once.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Optional

import numpy as np
import typer
from rich.text import Text

from revmed import config
from revmed.cli import output
from revmed.cli.root import app, check_dicom_geometry, dicom_geometry_option
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
    paths: list[Path] = typer.Argument(..., help="Volume files, DICOM folders or trees, or "
                                       "DICOMDIR files."),
    series: Optional[str] = typer.Option(  # noqa: UP007
        None, "--series", help="SeriesInstanceUID (UID:echo2 and the like for one volume of a "
        "split series): read and describe that volume of a DICOM folder or tree."),
    dicom_geometry: str = dicom_geometry_option(),
    json_: bool = typer.Option(False, "--json", help="Print JSON on stdout."),
) -> None:
    """Show shape, channels, spacing, origin, direction, axis codes (RAS, LPS, ...), stored
    voxel type and value range of volumes.

    A DICOM folder, tree or DICOMDIR (without --series) is listed series by series from the
    headers alone: UID, number, description, modality, size, slices, spacing, gantry tilt and
    what revmed does with it (read; resample onto a regular grid; split into volumes; pass
    over a localizer, exam summary or report; refuse, and why).

    A path that cannot be read gets its error line (with --json, also an entry holding its
    "error"); the others are shown, and the command then exits 2. Values are printed whole
    (a DICOM SeriesInstanceUID is never cut).

    Example: revmed info scan.nii.gz dicom/study/
    """
    from revmed.errors import RevmedError

    check_dicom_geometry(dicom_geometry)
    rows, failed = [], 0
    for path in paths:
        try:
            rows.extend(_describe(path, series, dicom_geometry))
        except RevmedError as exc:
            output.error(output.describe(exc))
            rows.append({"path": str(path), "error": output.describe(exc)})
            failed += 1
    if json_:
        output.emit_json(rows)
    else:
        _print_info([row for row in rows if "error" not in row])
    if failed:
        raise typer.Exit(2)


def _describe(path: Path, series: Optional[str], geometry: str) -> list[dict]:  # noqa: UP007
    """The ``revmed info`` entries of one path: one volume, or a DICOM tree's listing."""
    from revmed.io import read_volume
    from revmed.io.dicom import is_dicomdir
    from revmed.io.dicom.listing import list_volumes

    if series is None and (_is_dir(path) or is_dicomdir(path)):
        return list_volumes(path, geometry)
    volume = read_volume(path, series=series, dicom_geometry=geometry)
    low, high, nonfinite = _range(volume.array)
    return [{
        "path": str(path), "shape": list(volume.shape), "channels": volume.channels,
        "spacing_mm": [round(float(v), 6) for v in volume.spacing],
        "origin_mm_ras": [round(float(v), 6) for v in volume.origin],
        "direction_ras": [[round(float(v), 6) for v in row] for row in volume.direction],
        "axes": volume.axis_codes,
        "min": low, "max": high, "nonfinite_voxels": nonfinite,
        **{k: v for k, v in volume.meta.items() if isinstance(v, str | int | float)},
    }]


def _range(array: np.ndarray) -> tuple[float | None, float | None, int]:
    """``(min, max, count)`` of the finite values of ``array`` and how many are not finite,
    a slab at a time (no copy of the volume: reading it is the command's peak)."""
    low, high, nonfinite = np.inf, -np.inf, 0
    for slab in array.reshape(array.shape[0] * array.shape[1], -1):  # (C * I, J * K)
        finite = np.isfinite(slab)
        nonfinite += int(finite.size - np.count_nonzero(finite))
        if finite.any():
            values = slab[finite] if not finite.all() else slab
            low, high = min(low, float(values.min())), max(high, float(values.max()))
    if not np.isfinite(low):
        return None, None, nonfinite
    return low, high, nonfinite


def _is_dir(path: Path) -> bool:
    """Whether ``path`` is a folder (``InputError`` when it cannot even be looked at)."""
    try:
        return path.stat() is not None and path.is_dir()
    except OSError as exc:
        from revmed.errors import InputError
        from revmed.io.messages import link_problem

        if link_problem(path) or exc.errno == errno.ENOENT:
            return False  # the reader says what is wrong
        raise InputError(f"{path}: {exc.strerror or exc}") from None


def _print_info(rows: list[dict]) -> None:
    """Each entry as its path, then one ``key  value`` line per field, never cut or wrapped
    (a SeriesInstanceUID must be copied whole into --series)."""
    console = output.stdout()
    for row in rows:
        console.print(Text(row["path"], style="bold"))
        width = max(len(key) for key in row)
        for key, value in row.items():
            if key != "path":
                shown = shape_text(value) if key == "shape" else str(value)
                console.print(Text(f"  {key:<{width}}  {shown}"), overflow="ignore", crop=False)


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
    shards = out_dir / "shards"
    before = ({p.name for p in shards.glob("*.npz")} if shards.is_dir() and not overwrite
              else set())
    with output.progress(f"patchify {data_dir}", None, quiet or json_) as update:
        manifest = run_patchify(data_dir, out_dir, resolved, split=split, seed=seed,
                                overwrite=overwrite,
                                progress=lambda done, total, name: update(done, total, name))
    if json_:
        output.emit_json(manifest)
        return
    cases = len(manifest["shards"])
    kept = sum(Path(s["file"]).name in before for s in manifest["shards"])
    done = ("" if not kept else f"; {kept} case(s) were already done, "
            f"{cases - kept} cut now" if kept < cases else "; every case was already done")
    output.stdout().print(f"{manifest['patches']} patches of "
                          f"{shape_text(manifest['patch_size'])} from {cases} cases in "
                          f"{out_dir}{done}")
