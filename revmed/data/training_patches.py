"""Patches for training, epoch by epoch, from a dataset folder or a ``patchify`` folder.

A dataset folder is read once (volumes normalised and kept in memory) and new random patches
are cut every epoch, seeded by ``(seed, epoch, case)``; a patch folder gives the same patches
every epoch. Either way ``epoch_patches(e)`` returns ``{key: (N, C, *size)}`` arrays; for
unpaired data ``X`` and ``Y`` may hold different numbers of patches.

For large datasets, ``revmed patchify`` first: it reads each volume once and keeps nothing in
memory but the patches.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from revmed.data.layout import Case, load_dataset
from revmed.data.patchify import MANIFEST, preset_patches, read_shards, require_dataset
from revmed.data.samples import load_sample
from revmed.errors import InputError
from revmed.preset import Preset
from revmed.regions import BRATS, LabelSet

TRAINING_KEYS = ("X", "Y", "label")


def _stack(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for key in TRAINING_KEYS:
        arrays = [p[key] for p in parts if key in p and len(p[key])]
        if arrays:
            out[key] = np.concatenate(arrays)
    return out


class TrainingPatches:
    """Where training patches come from; see the module doc.

    Attributes:
        channels: the dataset's channel names (e.g. ``["t1", "t1ce", "t2", "flair"]``).
        kind: the dataset kind (``paired``, ``unpaired``, ``hr-only``, ``segmentation``).
        dataset_root: the dataset folder (for validation cases), or None when unknown.
        labels: the label set of segmentation data (BraTS for patch folders made before label
            sets were recorded), None for other kinds.
    """

    def __init__(self, data_dir: str | Path, preset: Preset) -> None:
        data_dir = Path(data_dir)
        self.patch, self.data, self.seed = preset.patch, preset.data, preset.train.seed
        self._fixed: dict[str, np.ndarray] | None = None
        self._samples: list[dict[str, np.ndarray]] = []
        if (data_dir / MANIFEST).is_file():
            manifest, patches = read_shards(data_dir)
            if manifest["patch_size"] != list(self.patch.size):
                raise InputError(f"{data_dir}: patches are {manifest['patch_size']}, the preset "
                                 f"wants {list(self.patch.size)}; run patchify again")
            self._fixed = _stack([patches])
            self.kind = manifest["kind"]
            self.channels = list(manifest["channels"])
            self.labels = _manifest_labels(manifest, data_dir)
            root = Path(manifest["dataset"])
            self.dataset_root = root if root.is_dir() else None
        else:
            require_dataset(data_dir, preset.synth)
            dataset = load_dataset(data_dir)
            cases = dataset.splits.get("train", [])
            if not cases:
                raise InputError(f"{data_dir}: the train split has no cases")
            self.labels = dataset.labels
            extra = (self.labels,) if self.labels is not None else ()
            self._samples = [load_sample(case, dataset.kind, preset.data, *extra)
                             for case in cases]
            self.kind = dataset.kind
            self.channels = list(dataset.channels)
            self.dataset_root = data_dir

    def epoch_patches(self, epoch: int) -> dict[str, np.ndarray]:
        """``{key: (N, C, *size)}`` for ``epoch`` (the same for every epoch of a patch folder)."""
        if self._fixed is not None:
            return self._fixed
        parts = [preset_patches(sample, self.patch, self.data.min_foreground,
                                seed=(self.seed * 1_000_003 + epoch) * 10_007 + index)
                 for index, sample in enumerate(self._samples)]
        patches = _stack(parts)
        if not patches:
            raise InputError("no training patch passed the foreground rule "
                             f"(data.min_foreground = {self.data.min_foreground})")
        return patches


def _manifest_labels(manifest: dict, folder: Path) -> LabelSet | None:
    if manifest["kind"] != "segmentation":
        return None
    if "labels" not in manifest:
        return BRATS
    try:
        return LabelSet.from_dict(manifest["labels"])
    except ValueError as exc:
        raise InputError(f"{folder}: the manifest's label set is not usable ({exc})") from None


def validation_cases(root: Path | None) -> tuple[str, list[Case]]:
    """The dataset kind and its ``val`` cases (empty when there is no dataset or no val split)."""
    if root is None:
        return "", []
    dataset = load_dataset(root)
    return dataset.kind, dataset.splits.get("val", [])
