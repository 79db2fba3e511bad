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
from revmed.transforms import normalise, simulate_low_resolution, statistics_of


def read_input(paths: Sequence) -> Volume:
    """One volume from a single file/folder, or one channel per file; NaN/Inf refused."""
    volume = read_volume(paths[0]) if len(paths) == 1 else read_channels(list(paths))
    check_finite(volume)
    return volume


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


def _read_case(case: Case, kind: str, data: DataSection,
               labels: LabelSet | None) -> tuple[dict[str, Volume], dict[str, np.ndarray]]:
    """The volumes of ``case`` in the files' units (``X`` and ``Y``, channels checked; for
    ``hr-only`` the target only) and its label map, as read."""
    volumes: dict[str, Volume] = {}
    if kind == "hr-only":
        volumes["Y"] = read_input([case.target])
        _check_channels(volumes["Y"], data.out_channels, "the volume")
        return volumes, {}
    if case.inputs:
        volumes["X"] = read_input(case.inputs)
        _check_channels(volumes["X"], data.in_channels, "the input")
    if case.target is not None:
        volumes["Y"] = read_input([case.target])
        _check_channels(volumes["Y"], data.out_channels, "the target")
    if case.label is None:
        return volumes, {}
    if labels is None:
        raise ValueError(f"case {case.name}: a label map needs the dataset's label set")
    return volumes, {"label": read_label_map(case.label, labels)}


def _network_arrays(volumes: dict[str, Volume], kind: str,
                    data: DataSection) -> dict[str, np.ndarray]:
    """``X`` and ``Y`` of ``volumes`` mapped into the network as ``data`` says (for ``hr-only``
    the input is simulated from the target: ``simulate_low_resolution``)."""
    stats_x, stats_y = statistics_of(data)
    out = {}
    if kind == "hr-only":
        low = simulate_low_resolution(volumes["Y"].array, data.sr_factors, data.sr_upsample)
        out["X"] = normalise(low, data.intensity, data.window, stats_x)
    elif "X" in volumes:
        out["X"] = normalise(volumes["X"].array, data.intensity, data.window, stats_x)
    if "Y" in volumes:
        out["Y"] = normalise(volumes["Y"].array, data.intensity, data.window, stats_y)
    return out


def load_sample(case: Case, kind: str, data: DataSection,
                labels: LabelSet | None = None) -> dict[str, np.ndarray]:
    """Read and prepare one case of a dataset of ``kind`` (see ``revmed.data.layout``) as the
    preset's ``[data]`` section says; label maps must hold only the values of ``labels`` (the
    dataset's label set, needed for a case with a label map)."""
    volumes, maps = _read_case(case, kind, data, labels)
    if not volumes:
        raise InputError(f"case {case.name}: no volume to read")
    sample = {**_network_arrays(volumes, kind, data), **maps}
    if case.mask is not None:
        sample["mask"] = (read_volume(case.mask).array[:1] > 0).astype(np.uint8)
    else:
        image = sample["Y"] if "Y" in sample else sample["X"]
        sample["mask"] = (image > data.foreground_above).any(axis=0, keepdims=True).astype(np.uint8)
    shapes = {key: value.shape[1:] for key, value in sample.items()}
    if len(set(shapes.values())) != 1:
        raise InputError(f"case {case.name}: volumes of different shapes {shapes}")
    return sample
