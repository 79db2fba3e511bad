"""Turn one case of a dataset into the arrays a network sees.

A *sample* is a dict of channel-first ``(C, I, J, K)`` arrays on one grid:

* ``X``: the network input, normalised (for super-resolution: the low-resolution volume put on
  the high-resolution grid by the preset's interpolation);
* ``Y``: the target, normalised (paired/unpaired/hr-only);
* ``label``: the integer label map ``(1, I, J, K)`` (segmentation);
* ``mask``: ``(1, I, J, K)`` uint8 foreground (the dataset's mask, or a threshold).

Keys a case does not have are absent (an unpaired case may hold only ``X`` or only ``Y``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from revmed.data.layout import Case
from revmed.errors import InputError
from revmed.io import Volume, check_finite, read_channels, read_volume
from revmed.preset import DataSection
from revmed.regions import LabelSet
from revmed.transforms import downsample, normalise, statistics_of, upsample


def read_input(paths: Sequence) -> Volume:
    """One volume from a single file/folder, or one channel per file; NaN/Inf refused."""
    volume = read_volume(paths[0]) if len(paths) == 1 else read_channels(list(paths))
    check_finite(volume)
    return volume


def simulate_low_resolution(volume: Volume, factors: Sequence[int], mode: str) -> np.ndarray:
    """Degrade ``volume`` by block means over ``factors``, then interpolate back to its grid.

    Returns ``(C, I, J, K)``: what a scanner with coarser voxels would show, on the fine grid.
    """
    coarse = downsample(volume.array, factors)
    return upsample(coarse, factors, mode, shape=volume.shape)


def _check_channels(volume: Volume, expected: int, role: str) -> None:
    if volume.channels != expected:
        raise InputError(f"{volume.source}: {role} has {volume.channels} channel(s), the preset "
                         f"expects {expected}")


def read_label_map(path, labels: LabelSet) -> np.ndarray:
    """The label map at ``path`` as uint8 ``(1, I, J, K)``; ``InputError`` naming the file for
    values that are not whole numbers of ``labels`` (or 0)."""
    array = read_volume(path).array[:1]
    rounded = np.rint(array)
    unknown = labels.unknown_values(rounded)
    if unknown or not np.array_equal(rounded, array):
        shown = ", ".join(f"{v:g}" for v in unknown[:8]) or "values that are not whole numbers"
        raise InputError(f"{path}: holds label(s) {shown} that the dataset does not declare "
                         f"(labels: 0 background, {labels.describe_values()}); declare its "
                         "labels under [labels] in dataset.toml (docs/data.md)")
    return rounded.astype(np.uint8)


def load_sample(case: Case, kind: str, data: DataSection,
                labels: LabelSet | None = None) -> dict[str, np.ndarray]:
    """Read and prepare one case of a dataset of ``kind`` (see ``revmed.data.layout``) as the
    preset's ``[data]`` section says; label maps must hold only the values of ``labels`` (the
    dataset's label set, needed for a case with a label map)."""
    sample: dict[str, np.ndarray] = {}
    reference: Volume | None = None
    stats_x, stats_y = statistics_of(data)
    if kind == "hr-only":
        target = read_input([case.target])
        _check_channels(target, data.out_channels, "the volume")
        low = simulate_low_resolution(target, data.sr_factors, data.sr_upsample)
        sample["X"] = normalise(low, data.intensity, data.window, stats_x)
        sample["Y"] = normalise(target.array, data.intensity, data.window, stats_y)
        reference = target
    else:
        if case.inputs:
            source = read_input(case.inputs)
            _check_channels(source, data.in_channels, "the input")
            sample["X"] = normalise(source.array, data.intensity, data.window, stats_x)
            reference = source
        if case.target is not None:
            target = read_input([case.target])
            _check_channels(target, data.out_channels, "the target")
            sample["Y"] = normalise(target.array, data.intensity, data.window, stats_y)
            reference = reference or target
        if case.label is not None:
            if labels is None:
                raise ValueError(f"case {case.name}: a label map needs the dataset's label set")
            sample["label"] = read_label_map(case.label, labels)
    if reference is None:
        raise InputError(f"case {case.name}: no volume to read")
    if case.mask is not None:
        sample["mask"] = (read_volume(case.mask).array[:1] > 0).astype(np.uint8)
    else:
        image = sample["Y"] if "Y" in sample else sample["X"]
        sample["mask"] = (image > data.foreground_above).any(axis=0, keepdims=True).astype(np.uint8)
    shapes = {key: value.shape[1:] for key, value in sample.items()}
    if len(set(shapes.values())) != 1:
        raise InputError(f"case {case.name}: volumes of different shapes {shapes}")
    return sample
