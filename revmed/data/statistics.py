"""Per-channel intensity statistics of a training split, for ``data.intensity = "zscore-dataset"``.

With ``zscore-dataset`` every volume is mapped into the network by the same affine map per
channel, ``(value - mean) / std``, with the mean and standard deviation measured once over the
training split (inside the dataset's masks where it has them, else over every voxel). Because the
map is the same for every volume, the network's outputs map back to the files' units exactly
(``value * std + mean``, no clipping): what diffusion-tensor data needs, whose six components
differ in range by two orders of magnitude, so that one window would squeeze the off-diagonal
components into a sliver of it.

The statistics become ``[data]`` values (``data.input_mean``, ``data.input_std``,
``data.output_mean``, ``data.output_std``): ``with_dataset_statistics`` measures the ones a
preset leaves empty (``with_saved_statistics`` reads them from a patch folder's manifest), so
they are saved with the run's preset and in its checkpoints, and a preset may also fix them by
hand. Inputs (``X``) and targets (``Y``) have their own; for
super-resolution (``hr-only`` data, whose inputs are made from the targets) both are the
targets'.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from revmed.data.layout import Case
from revmed.errors import InputError
from revmed.io import read_volume
from revmed.preset import DataSection

#: The ``[data]`` keys that hold the statistics.
STATISTICS_KEYS = ("input_mean", "input_std", "output_mean", "output_std")
#: A channel whose standard deviation is below this is constant: it cannot be z-scored.
MIN_STD = 1e-12


def channel_statistics(volumes: Iterable[tuple[Path, Path | None]]) -> tuple[list[float],
                                                                               list[float]]:
    """Mean and standard deviation per channel over the voxels of ``(volume, mask)`` files
    (every voxel where ``mask`` is None; float64 sums, so long lists stay exact enough).

    ``InputError`` naming the file for a channel count that differs from the first volume's,
    and naming the channel for one that is constant over all of them.
    """
    total = total_sq = None
    count = 0
    first = None
    for path, mask_path in volumes:
        array = read_volume(path).array.astype(np.float64)
        if total is None:
            total, total_sq, first = np.zeros(len(array)), np.zeros(len(array)), path
        elif len(array) != len(total):
            raise InputError(f"{path}: has {len(array)} channel(s), {first} has {len(total)}")
        if mask_path is not None:
            inside = read_volume(mask_path).array[0] > 0
            array = array[:, inside]
        else:
            array = array.reshape(len(array), -1)
        total += array.sum(axis=1)
        total_sq += (array * array).sum(axis=1)
        count += array.shape[1]
    if total is None or count == 0:
        raise InputError("no voxels to measure intensity statistics on (empty split or masks)")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean * mean, 0.0))
    for channel, value in enumerate(std):
        if value < MIN_STD:
            raise InputError(f"{first}: channel {channel} is constant over the training split; "
                             "it cannot be z-scored (data.intensity = 'zscore-dataset')")
    return [float(v) for v in mean], [float(v) for v in std]


def dataset_statistics(cases: list[Case], kind: str) -> dict[str, list[float]]:
    """The four statistics keys measured over ``cases`` of a dataset of ``kind``."""
    targets = [(c.target, c.mask) for c in cases if c.target is not None]
    if kind == "hr-only":
        mean, std = channel_statistics(targets)
        return {"input_mean": mean, "input_std": std, "output_mean": mean, "output_std": std}
    inputs = [(c.inputs[0], c.mask) for c in cases if len(c.inputs) == 1]
    if len(inputs) != sum(1 for c in cases if c.inputs):
        raise InputError("zscore-dataset needs one file per input volume (channels in one file)")
    in_mean, in_std = channel_statistics(inputs)
    out_mean, out_std = channel_statistics(targets)
    return {"input_mean": in_mean, "input_std": in_std,
            "output_mean": out_mean, "output_std": out_std}


def needs_statistics(data: DataSection) -> bool:
    """Whether a ``[data]`` section z-scores with dataset statistics and leaves some empty."""
    return (data.intensity == "zscore-dataset"
            and any(len(getattr(data, k)) == 0 for k in STATISTICS_KEYS))


def with_statistics(data: DataSection, statistics: dict[str, list[float]]) -> DataSection:
    """``data`` with the statistics keys it left empty set from ``statistics``."""
    values = {k: tuple(statistics[k]) for k in STATISTICS_KEYS if len(getattr(data, k)) == 0}
    return dataclasses.replace(data, **values)


def with_dataset_statistics(data: DataSection, cases: Sequence[Case], kind: str) -> DataSection:
    """``data`` with its empty statistics keys measured over ``cases`` (a train split of a
    dataset of ``kind``); ``data`` itself when it does not use ``zscore-dataset`` or sets them
    all."""
    if not needs_statistics(data):
        return data
    if not cases:
        raise InputError("the train split has no cases to measure intensity statistics on")
    return with_statistics(data, dataset_statistics(list(cases), kind))


def with_saved_statistics(data: DataSection, manifest: dict[str, Any],
                          folder: Path) -> DataSection:
    """``data`` with its empty statistics keys read from the ``manifest`` of the patch folder
    ``folder`` (``InputError`` when its patches were not z-scored with dataset statistics)."""
    if not needs_statistics(data):
        return data
    saved = manifest.get("statistics")
    if not saved:
        raise InputError(f"{folder}: its patches were not z-scored with dataset statistics; "
                         "run `revmed patchify` again with this preset")
    return with_statistics(data, saved)
