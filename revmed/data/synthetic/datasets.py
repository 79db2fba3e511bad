"""Synthetic datasets for every preset task, written in the dataset layout (``revmed synth``).

``synthesize(task, out_dir, cases=...)`` writes a complete dataset folder (``dataset.toml`` and
train/val/test splits) that ``load_dataset`` accepts, so every pipeline can run end to end
without real scans. The phantoms themselves live in ``chest_ct`` and ``brain``.

Determinism: case ``i`` of a task is drawn from a numpy ``Generator`` seeded with
``(seed, i, task)``, and all the maths is numpy (FFT smoothing included), so the same seed gives
byte-identical arrays, while every case (and every task) gets its own anatomy.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from revmed.data.layout import MANIFEST, Dataset, load_dataset
from revmed.data.synthetic.brain import MODALITIES, brats_phantom, dti_phantom
from revmed.data.synthetic.chest_ct import chest_ct_kernels, chest_ct_sr
from revmed.data.synthetic.fields import centred_affine
from revmed.errors import InputError, OutputError
from revmed.io import Volume, write_volume
from revmed.io.atomic import (DESTINATION_ERRORS, check_output_folder, new_folder_mode,
                              temporary_stem)
from revmed.preset import check_seed
from revmed.regions import BRATS
from revmed.sizes import shape_text


@dataclass(frozen=True)
class SynthTask:
    """What ``synthesize`` writes for one task."""

    name: str
    kind: str
    channels: tuple[str, ...]
    units: str
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    description: str


TASKS: dict[str, SynthTask] = {
    t.name: t
    for t in (
        SynthTask("chestct-sr", "hr-only", ("image",), "HU", (128, 128, 96), (0.7, 0.7, 1.0),
                  "Synthetic chest CT phantoms (high resolution) for super-resolution"),
        SynthTask("chestct-da", "paired", ("image",), "HU", (96, 96, 64), (0.7, 0.7, 1.0),
                  "Synthetic chest CT phantoms, sharp B50f-like kernel (X) and smooth "
                  "B30f-like kernel (Y)"),
        SynthTask("hcp-sr", "hr-only", ("Dxx", "Dxy", "Dxz", "Dyy", "Dyz", "Dzz"), "1e-3 mm^2/s",
                  (64, 64, 64), (1.25, 1.25, 1.25),
                  "Synthetic diffusion-tensor brain phantoms for super-resolution"),
        SynthTask("brats-seg", "segmentation", MODALITIES, "a.u.", (96, 112, 80), (1.0, 1.0, 1.0),
                  "Synthetic brain-tumour MRI (T1, T1ce, T2, FLAIR) with BraTS labels "
                  "1 necrosis, 2 oedema, 4 enhancing"),
    )
}

#: Smallest grid edge ``synthesize`` accepts (the anatomy needs a few voxels).
MIN_EDGE = 8


def split_counts(cases: int) -> dict[str, int]:
    """Cases per split: test ``max(1, round(cases / 5))``, val 1 from 3 cases on, the rest train."""
    test = max(1, round(cases / 5))
    val = 1 if cases >= 3 else 0
    return {"train": cases - test - val, "val": val, "test": test}


def case_rng(seed: int, index: int, task: str) -> np.random.Generator:
    """The random generator of case ``index`` of ``task`` for ``seed``."""
    return np.random.default_rng(np.random.SeedSequence([seed, index, zlib.crc32(task.encode())]))


def _check_args(task: str, cases: int, seed: int, shape) -> tuple[SynthTask, tuple[int, int, int]]:
    if task not in TASKS:
        raise InputError(f"unknown synthetic task {task!r}; expected one of {', '.join(TASKS)}")
    spec = TASKS[task]
    if isinstance(cases, bool) or not isinstance(cases, (int, np.integer)) or cases < 2:
        raise InputError(f"cases must be an integer >= 2 (one train and one test case), "
                         f"got {cases!r}")
    check_seed(seed)
    if shape is None:
        return spec, spec.shape
    try:
        grid = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise InputError(f"shape must be three integers, got {shape!r}") from None
    if len(grid) != 3 or any(s < MIN_EDGE for s in grid) or any(
            float(s) != float(g) for s, g in zip(shape, grid)):
        raise InputError(f"shape must be three integers >= {MIN_EDGE}, got {shape!r}")
    return spec, grid  # type: ignore[return-value]


def _manifest_text(spec: SynthTask, seed: int, cases: int, shape) -> str:
    """``dataset.toml`` contents (JSON strings are valid TOML basic strings for ASCII text)."""
    description = (f"{spec.description}; written by `revmed synth {spec.name}` "
                   f"(seed {seed}, {cases} cases, grid {shape_text(shape)})")
    channels = ", ".join(json.dumps(c) for c in spec.channels)
    text = (f"kind = {json.dumps(spec.kind)}\n"
            f"channels = [{channels}]\n"
            f"units = {json.dumps(spec.units)}\n"
            f"description = {json.dumps(description)}\n")
    if spec.kind == "segmentation":  # the BraTS label set, written out so it can be edited
        labels = BRATS.to_dict()
        text += "\n[labels]\n" + "".join(f"{k} = {v}\n" for k, v in labels["labels"].items())
        text += "\n[regions]\n" + "".join(
            f"{k} = [{', '.join(json.dumps(m) for m in v)}]\n"
            for k, v in labels["regions"].items())
    return text


def _write_case(spec: SynthTask, split_dir: Path, name: str, rng: np.random.Generator,
                shape, affine: np.ndarray) -> None:
    def save(array: np.ndarray, sub: str, filename: str, dtype=np.float32) -> None:
        folder = split_dir / sub
        folder.mkdir(parents=True, exist_ok=True)
        data = array if array.ndim == 4 else array[None]
        write_volume(Volume(np.ascontiguousarray(data), affine, source=name),
                     folder / filename, dtype=dtype)

    if spec.name == "chestct-sr":
        hu, mask = chest_ct_sr(rng, shape, spec.spacing)
        save(hu, "Y", f"{name}.nii.gz")
        save(mask.astype(np.uint8), "masks", f"{name}.nii.gz", np.uint8)
    elif spec.name == "chestct-da":
        sharp, smooth, mask = chest_ct_kernels(rng, shape, spec.spacing)
        save(sharp, "X", f"{name}.nii.gz")
        save(smooth, "Y", f"{name}.nii.gz")
        save(mask.astype(np.uint8), "masks", f"{name}.nii.gz", np.uint8)
    elif spec.name == "hcp-sr":
        tensors, mask = dti_phantom(rng, shape, spec.spacing)
        save(tensors, "Y", f"{name}.nii.gz")
        save(mask.astype(np.uint8), "masks", f"{name}.nii.gz", np.uint8)
    elif spec.name == "brats-seg":
        hemisphere = float(rng.choice([-1.0, 1.0]))
        images, labels, mask = brats_phantom(rng, shape, spec.spacing, hemisphere=hemisphere)
        for channel, image in zip(spec.channels, images):
            save(image, f"images/{name}", f"{channel}.nii.gz")
        save(labels, "labels", f"{name}.nii.gz", np.uint8)
        save(mask.astype(np.uint8), "masks", f"{name}.nii.gz", np.uint8)
    else:  # pragma: no cover - TASKS and this function are kept in step
        raise AssertionError(spec.name)


def _prepare_output(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"{out_dir}: exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise OutputError(f"{out_dir}: folder exists and is not empty", fix="overwrite")
        if not (out_dir / MANIFEST).is_file():
            raise OutputError(f"{out_dir}: not empty and not a dataset (no {MANIFEST}); "
                              "refusing to overwrite it")
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{out_dir}: cannot create its parent folder ({exc})") from exc
    check_output_folder(out_dir.parent)


def synthesize(task: str, out_dir: str | os.PathLike, cases: int = 10, seed: int = 0,
               shape=None, progress: Callable[[int, int], None] | None = None,
               overwrite: bool = False) -> Dataset:
    """Write a synthetic dataset for ``task`` into ``out_dir`` and return it, loaded.

    Args:
        task: one of ``TASKS`` (``chestct-sr``, ``chestct-da``, ``hcp-sr``, ``brats-seg``).
        out_dir: the dataset folder to create (missing parents are created).
        cases: number of cases (>= 2), split by ``split_counts``.
        seed: non-negative integer; the same seed gives byte-identical volumes.
        shape: grid ``(I, J, K)``; default the task's ``TASKS[task].shape``.
        progress: optional ``progress(done, total)``, called with 0 first and after each case.
        overwrite: replace an existing dataset in ``out_dir``. Without it a non-empty
            ``out_dir`` is an ``OutputError``; with it, a non-empty folder that holds no
            ``dataset.toml`` is still refused (it is not a dataset).

    The dataset is written into a temporary folder beside ``out_dir`` and moved into place at
    the end, so an interrupted run leaves no half-written dataset behind.
    """
    spec, grid = _check_args(task, cases, seed, shape)
    out_dir = Path(out_dir)
    _prepare_output(out_dir, overwrite)
    counts = split_counts(int(cases))
    affine = centred_affine(grid, spec.spacing)
    total = int(cases)
    tmp = Path(tempfile.mkdtemp(prefix=f".{temporary_stem(out_dir)}.tmp-", dir=out_dir.parent))
    try:
        os.chmod(tmp, new_folder_mode())
        (tmp / MANIFEST).write_text(_manifest_text(spec, int(seed), total, grid), encoding="utf-8")
        if progress is not None:
            progress(0, total)
        index = 0
        for split in ("train", "val", "test"):
            for _ in range(counts[split]):
                name = f"case_{index:03d}"
                rng = case_rng(int(seed), index, spec.name)
                _write_case(spec, tmp / split, name, rng, grid, affine)
                index += 1
                if progress is not None:
                    progress(index, total)
        _move_into_place(tmp, out_dir)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OutputError) and str(tmp) in str(exc):  # a write in the hidden
            reason = str(exc).rsplit("(", 1)[-1].split(")")[0]    # folder: name the dataset
            raise OutputError(f"{out_dir}: cannot write the dataset ({reason}); nothing was "
                              "written") from None
        if isinstance(exc, OSError) and exc.errno in DESTINATION_ERRORS:
            raise OutputError(f"{out_dir}: cannot write the dataset ({exc.strerror or exc}); "
                              "nothing was written") from None
        raise
    return load_dataset(out_dir)


def _move_into_place(tmp: Path, out_dir: Path) -> None:
    """Rename ``tmp`` to ``out_dir``, replacing an existing ``out_dir`` (checked by the caller)."""
    old = None
    if out_dir.exists():
        if any(out_dir.iterdir()):
            old = Path(tempfile.mkdtemp(prefix=f".{temporary_stem(out_dir)}.old-",
                                        dir=out_dir.parent))
            os.replace(out_dir, old / "dataset")
        else:
            out_dir.rmdir()
    try:
        os.replace(tmp, out_dir)
    except OSError as exc:
        if old is not None:  # put the previous dataset back
            os.replace(old / "dataset", out_dir)
            old.rmdir()
        raise OutputError(f"{out_dir}: cannot move the new dataset into place ({exc})") from exc
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


__all__ = ["MIN_EDGE", "TASKS", "SynthTask", "case_rng", "split_counts", "synthesize"]
