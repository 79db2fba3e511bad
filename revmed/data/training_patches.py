"""Patches for training, epoch by epoch, from a dataset folder or a ``patchify`` folder.

A dataset folder is read once (volumes normalised and kept in memory) and new random patches
are cut every epoch, seeded by ``(seed, epoch, case)``; a patch folder gives the same patches
every epoch. Either way ``epoch_patches(e)`` returns ``{key: (N, C, *size)}`` arrays; for
unpaired data ``X`` and ``Y`` may hold different numbers of patches.

For large datasets, ``revmed patchify`` first: it reads each volume once and keeps nothing in
memory but the patches.
"""

from __future__ import annotations

import numpy as np

from revmed.data.patchify import load_shards, preset_patches
from revmed.data.samples import load_sample
from revmed.data.training_data import TrainingData
from revmed.errors import InputError
from revmed.preset import DataSection, PatchSection

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

    Args:
        training: the run's data (``revmed.data.training_data.open_training_data``).
        patch: the ``[patch]`` section (size, sampler, patches per volume).
        data: the ``[data]`` section (intensity mapping, statistics, foreground rule).
        seed: the run's seed (``train.seed``).
    """

    def __init__(self, training: TrainingData, patch: PatchSection, data: DataSection,
                 seed: int) -> None:
        self.patch, self.data, self.seed = patch, data, seed
        self.kind = training.kind
        self._fixed: dict[str, np.ndarray] | None = None
        self._samples: list[dict[str, np.ndarray]] = []
        if training.manifest is not None:
            manifest = training.manifest
            if manifest["patch_size"] != list(patch.size):
                raise InputError(f"{training.folder}: patches are {manifest['patch_size']}, "
                                 f"the preset wants {list(patch.size)}; run patchify again")
            self._fixed = _stack([load_shards(training.folder, manifest)])
        else:
            extra = (training.labels,) if training.labels is not None else ()
            self._samples = [load_sample(case, training.kind, data, *extra)
                             for case in training.train_cases]

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
