"""Cut a dataset into patches once, so training reads shards instead of whole volumes.

``patchify`` writes ``OUT_DIR/shards/<case>.npz`` (one per case, arrays ``(N, C, *size)`` for
each sample key) and ``OUT_DIR/manifest.json`` describing them. Every shard is written
atomically, so a killed run leaves no half-written shard; re-running with the same settings
skips the cases that already have one and finishes the rest. The manifest is written last, with
``"complete": true``; ``read_shards`` refuses an incomplete folder.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
from monai.transforms import (GridPatchd, RandCropByLabelClassesd, RandCropByPosNegLabeld,
                              RandSpatialCropSamplesd, SpatialPadd)

import revmed
from revmed.io.atomic import atomic_path, check_output_folder
from revmed.data.layout import load_dataset
from revmed.data.samples import load_sample
from revmed.data.statistics import STATISTICS_KEYS, with_dataset_statistics
from revmed.errors import InputError, OutputError
from revmed.preset import DataSection, PatchSection, Preset, check_seed, plain
from revmed.sizes import shape_text

MANIFEST = "manifest.json"
FORMAT = "revmed-patches"
FORMAT_VERSION = 1
#: Random crops tried per wanted patch before giving up on a case with little foreground.
CANDIDATES_PER_PATCH = 4


def extract_patches(sample: dict[str, np.ndarray], size: Sequence[int], sampler: str,
                    per_volume: int = 8, overlap: float = 0.0, min_foreground: float = 0.0,
                    seed: int = 0) -> dict[str, np.ndarray]:
    """Cut ``sample`` (arrays ``(C, I, J, K)``, with a ``mask``) into patches of ``size``.

    A volume smaller than ``size`` is padded (with each line's minimum: air for CT, background
    for MRI and labels). ``random`` draws crops and keeps the first ``per_volume`` whose
    foreground fraction (mean of ``mask``) is at least ``min_foreground``; with a threshold the
    crops are centred on foreground voxels (MONAI's ``RandCropByPosNegLabeld``), without one
    they are uniform (``RandSpatialCropSamplesd``). ``labels`` (segmentation) centres each crop
    on a voxel of a label drawn with equal odds among the background and the labels the volume
    holds (MONAI's ``RandCropByLabelClassesd``), so a small region such as the tumour core is
    the centre of as many crops as the background. ``grid`` tiles the volume with MONAI's
    ``GridPatchd`` and keeps the tiles that pass the same rule.

    Returns ``{key: (N, C, *size)}`` with the same ``N`` for every key (``N`` may be 0).
    """
    keys = list(sample)
    padded = SpatialPadd(keys, spatial_size=list(size), mode="minimum")(sample)
    if sampler == "labels":
        candidates = _label_balanced_crops(padded, size, per_volume * CANDIDATES_PER_PATCH, seed)
        wanted = per_volume
    elif sampler == "random":
        tries = per_volume * CANDIDATES_PER_PATCH
        if min_foreground <= 0:
            crop = RandSpatialCropSamplesd(keys, roi_size=list(size), random_size=False,
                                           num_samples=tries)
        else:
            crop = RandCropByPosNegLabeld(keys, label_key="mask", spatial_size=list(size),
                                          pos=1.0, neg=0.0, num_samples=tries)
        crop.set_random_state(seed)
        has_foreground = min_foreground <= 0 or bool(np.asarray(padded["mask"]).any())
        candidates = ([{k: np.asarray(v) for k, v in c.items()} for c in crop(padded)]
                      if has_foreground else [])
        wanted = per_volume
    elif sampler == "grid":
        tiles = GridPatchd(keys, patch_size=list(size), overlap=overlap)(padded)
        count = int(tiles[keys[0]].shape[0])
        candidates = [{k: np.asarray(tiles[k][i]) for k in keys} for i in range(count)]
        wanted = count
    else:
        raise ValueError(f"sampler must be 'random', 'labels' or 'grid', got {sampler!r}")
    kept = [c for c in candidates if float(c["mask"].mean()) >= min_foreground][:wanted]
    return {k: (np.stack([c[k] for c in kept]) if kept else
                np.zeros((0, padded[k].shape[0], *size), dtype=np.asarray(padded[k]).dtype))
            for k in keys}


def _label_balanced_crops(padded: dict, size: Sequence[int], count: int,
                          seed: int) -> list[dict[str, np.ndarray]]:
    """``count`` crops centred on voxels of the classes of ``padded["label"]`` (0 and each
    label value it holds), the classes drawn with equal odds."""
    if "label" not in padded:
        raise InputError("patch.sampler = 'labels' needs label maps (a segmentation dataset)")
    label = np.asarray(padded["label"])
    values = np.unique(label)
    keys = list(padded)
    classes = np.searchsorted(values, label).astype(np.int16)  # 0 .. len(values) - 1
    crop = RandCropByLabelClassesd([*keys, "classes"], label_key="classes",
                                   spatial_size=list(size), num_classes=len(values),
                                   num_samples=count, warn=False)
    crop.set_random_state(seed)
    crops = crop({**padded, "classes": classes})
    return [{k: np.asarray(c[k]) for k in keys} for c in crops]


def preset_patches(sample: dict[str, np.ndarray], patch: PatchSection, min_foreground: float,
                   seed: int) -> dict[str, np.ndarray]:
    """``extract_patches`` of ``sample`` as a preset's ``[patch]`` section and
    ``data.min_foreground`` say."""
    return extract_patches(sample, patch.size, patch.sampler, per_volume=patch.per_volume,
                           overlap=patch.overlap, min_foreground=min_foreground, seed=seed)


def patch_settings(data: DataSection, patch: PatchSection, split: str,
                   seed: int) -> dict[str, Any]:
    """What the shards depend on; a folder made with other settings is not reused."""
    return {"data": plain(asdict(data)), "patch": plain(asdict(patch)), "split": split,
            "seed": seed}


def _shard_path(out_dir: Path, case_name: str) -> Path:
    return out_dir / "shards" / f"{case_name}.npz"


def _check_reuse(out_dir: Path, settings: dict[str, Any], overwrite: bool) -> None:
    manifest = out_dir / MANIFEST
    if not out_dir.exists():
        return
    if overwrite:
        shutil.rmtree(out_dir / "shards", ignore_errors=True)
        manifest.unlink(missing_ok=True)
        return
    if manifest.exists():
        try:
            old = json.loads(manifest.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise OutputError(f"{manifest}: unreadable manifest ({exc})",
                              fix="overwrite") from exc
        if old.get("settings") != json.loads(json.dumps(settings)):
            raise OutputError(f"{out_dir}: holds patches made with other settings",
                              fix="overwrite")
    elif any(p for p in out_dir.iterdir() if p.name != "shards"):
        raise OutputError(f"{out_dir}: folder exists and is not a patch folder",
                          fix="overwrite")


def _write_manifest(out_dir: Path, payload: dict[str, Any]) -> None:
    with atomic_path(out_dir / MANIFEST) as tmp:
        tmp.write_text(json.dumps(payload, indent=2))


def require_dataset(data_dir: str | Path, synth: str = "") -> None:
    """Raise ``InputError`` saying how to get data when ``data_dir`` does not exist (``synth``:
    the ``revmed synth`` task that makes matching data, if any)."""
    if Path(data_dir).exists():
        return
    how = "arrange your scans as docs/data.md describes"
    if synth:
        how = f"make a synthetic one with `revmed synth {synth} {data_dir}`, or " + how
    raise InputError(f"{data_dir}: no such dataset folder; {how}")


def _check_grid_fits(case, sample: dict[str, np.ndarray], patch: PatchSection) -> None:
    """A grid of tiles larger than the volume is a mistake in the preset, not a padding job."""
    if patch.sampler != "grid":
        return
    shape = next(iter(sample.values())).shape[1:]
    if any(p > s for p, s in zip(patch.size, shape)):
        source = (case.inputs or [case.target])[0]
        raise InputError(
            f"{source}: the volume on the training grid is {shape_text(shape)}, smaller "
            f"than patch.size {shape_text(patch.size)} of the grid sampler; use a "
            "smaller patch.size or patch.sampler='random' (which pads)")


def patchify(data_dir: str | Path, out_dir: str | Path, preset: Preset,
             split: str = "train", seed: int | None = None, overwrite: bool = False,
             progress: Callable[[int, int, str], None] | None = None) -> dict[str, Any]:
    """Write the patches of ``split`` of the dataset at ``data_dir`` into ``out_dir``.

    ``progress(done, total, case_name)`` is called after each case. Returns the manifest.
    """
    out_dir = Path(out_dir)
    if seed is not None:
        check_seed(seed)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"{out_dir}: is a file, not a folder for patches")
    check_output_folder(out_dir)  # a file above it, a read-only mount: one line, before work
    require_dataset(data_dir, preset.synth)
    dataset = load_dataset(data_dir)
    if split not in dataset.splits or not dataset.splits[split]:
        raise InputError(f"{data_dir}: has no cases in split {split!r} "
                         f"(splits: {', '.join(sorted(dataset.splits)) or 'none'})")
    seed = preset.train.seed if seed is None else seed
    # z-scoring statistics come from the train split, whichever split is cut
    preset = replace(preset, data=with_dataset_statistics(preset.data, dataset.splits["train"],
                                                          dataset.kind))
    settings = patch_settings(preset.data, preset.patch, split, seed)
    _check_reuse(out_dir, settings, overwrite)
    (out_dir / "shards").mkdir(parents=True, exist_ok=True)
    header = {"format": FORMAT, "version": FORMAT_VERSION, "revmed": revmed.__version__,
              "settings": settings}
    if not (out_dir / MANIFEST).exists():  # records the settings the shards are made with
        _write_manifest(out_dir, {**header, "complete": False})
    patch = preset.patch
    cases = dataset.splits[split]
    shards = []
    for index, case in enumerate(cases):
        shard = _shard_path(out_dir, case.name)
        if not shard.exists():
            sample = load_sample(case, dataset.kind, preset.data, *_labels(dataset))
            _check_grid_fits(case, sample, patch)
            patches = preset_patches(sample, patch, preset.data.min_foreground,
                                     seed=seed * 1_000_003 + index)
            with atomic_path(shard) as tmp:
                np.savez(tmp, **patches)
        with np.load(shard) as stored:
            count = int(stored[stored.files[0]].shape[0])
            keys = sorted(stored.files)
        shards.append({"case": case.name, "file": str(shard.relative_to(out_dir)),
                       "patches": count, "keys": keys})
        if progress is not None:
            progress(index + 1, len(cases), case.name)
    manifest = {
        **header, "preset": preset.name, "dataset": str(Path(data_dir).resolve()),
        "kind": dataset.kind, "channels": list(dataset.channels),
        **({"labels": dataset.labels.to_dict()} if dataset.labels is not None else {}),
        **({"statistics": {k: list(getattr(preset.data, k)) for k in STATISTICS_KEYS}}
           if preset.data.intensity == "zscore-dataset" else {}),
        "patch_size": list(patch.size), "patches": sum(s["patches"] for s in shards),
        "shards": shards, "complete": True,
    }
    _write_manifest(out_dir, manifest)
    return manifest


def _labels(dataset) -> tuple:
    """``load_sample``'s label-set argument for ``dataset`` (none for other kinds)."""
    return (dataset.labels,) if dataset.labels is not None else ()


def read_manifest(out_dir: str | Path) -> dict[str, Any]:
    """The manifest of a finished ``patchify`` folder (``InputError`` if missing or unfinished)."""
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        raise InputError(f"{out_dir}: not a patch folder (no {MANIFEST}); run `revmed patchify` "
                         "first, or finish an interrupted run by running it again")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: unreadable manifest ({exc})") from exc
    if manifest.get("format") != FORMAT or not manifest.get("complete"):
        raise InputError(f"{path}: not a complete {FORMAT} manifest")
    if manifest.get("version", 0) > FORMAT_VERSION:
        raise InputError(f"{path}: made by a newer revmed ({manifest.get('revmed')}); upgrade")
    return manifest


def read_shards(out_dir: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The manifest of a finished patch folder and all its patches, ``{key: (N, C, *size)}``
    (shards concatenated in manifest order); ``InputError`` for an unfinished folder or an
    unreadable shard."""
    manifest = read_manifest(out_dir)
    return manifest, load_shards(out_dir, manifest)


def load_shards(out_dir: str | Path, manifest: dict[str, Any]) -> dict[str, np.ndarray]:
    """The patches of the shards ``manifest`` (``read_manifest``) lists, ``{key: (N, C,
    *size)}``, concatenated in its order; ``InputError`` naming an unreadable shard."""
    parts: dict[str, list[np.ndarray]] = {}
    for shard in manifest["shards"]:
        path = Path(out_dir) / shard["file"]
        try:
            with np.load(path, allow_pickle=False) as stored:
                for key in stored.files:
                    parts.setdefault(key, []).append(stored[key])
        except (OSError, ValueError) as exc:
            raise InputError(f"{path}: unreadable patch shard ({exc})") from exc
    return {key: np.concatenate(arrays) for key, arrays in parts.items()}
