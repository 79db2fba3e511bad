"""Multi-channel input from one 3D file per channel (e.g. T1, T2, FLAIR of one subject)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from revmed.errors import InputError
from revmed.io.dispatch import read_volume
from revmed.io.formats import full_suffix
from revmed.io.volume import Volume

#: Affines agree when no entry differs by more than this fraction of the largest entry
#: magnitude (at least 1 mm), e.g. 0.01 mm for an origin 100 mm from the isocentre.
AFFINE_REL_TOL = 1e-4


def read_channels(paths: Sequence[str | os.PathLike]) -> Volume:
    """Read one single-channel 3D volume per path and stack them as channels.

    Returns a ``Volume`` of shape ``(len(paths), I, J, K)`` with the first file's affine;
    ``meta`` holds ``channel_sources`` (the paths) and ``channel_names`` (file names without
    suffix). Raises ``InputError`` naming the offending file when a file has several channels
    or its shape or affine differs from the first file's.
    """
    if isinstance(paths, (str, os.PathLike)):
        raise TypeError("read_channels takes a list of paths, not one path")
    paths = [Path(p) for p in paths]
    if not paths:
        raise InputError("read_channels: no input files given")
    volumes = []
    for path in paths:
        volume = read_volume(path)
        if volume.channels != 1:
            raise InputError(
                f"{path}: has {volume.channels} channels; give one single-channel 3D volume per file"
            )
        if volumes:
            _check_same_grid(volumes[0], volume)
        volumes.append(volume)
    first = volumes[0]
    array = np.concatenate([v.array for v in volumes], axis=0)  # (C, I, J, K)
    meta = {
        "channel_sources": [str(p) for p in paths],
        "channel_names": [p.name[: len(p.name) - len(full_suffix(p))] or p.name for p in paths],
        "channel_meta": [v.meta for v in volumes],
    }
    return Volume(array, first.affine, source=", ".join(str(p) for p in paths), meta=meta)


def match_channel_files(paths: Sequence[Path], channels: Sequence[str]) -> list[Path] | None:
    """``paths`` in the order of the channel names ``channels``, or None when their names do
    not allow it. A file matches a channel when its name without the format suffix is the
    channel's name or ends with it after ``_``, ``-`` or ``.`` (``BraTS-0001_t1ce.nii.gz`` is
    channel ``t1ce``; case is ignored); every channel must match exactly one file and every
    file exactly one channel."""
    if not channels or len(paths) != len(channels):
        return None
    stems = [Path(p).name[: len(Path(p).name) - len(full_suffix(p))].lower() for p in paths]

    def fits(stem: str, channel: str) -> bool:
        channel = channel.lower()
        return stem == channel or any(stem.endswith(sep + channel) for sep in "_-.")

    ordered = []
    for channel in channels:
        matches = [p for p, stem in zip(paths, stems) if fits(stem, channel)]
        if len(matches) != 1:
            return None
        ordered.append(matches[0])
    return ordered if len(set(ordered)) == len(paths) else None


def _check_same_grid(first: Volume, other: Volume) -> None:
    if other.shape != first.shape:
        raise InputError(
            f"{other.source}: shape {other.shape} differs from {first.shape} of {first.source}"
        )
    tolerance = AFFINE_REL_TOL * max(1.0, float(np.abs(first.affine).max()))
    difference = float(np.abs(other.affine - first.affine).max())
    if difference > tolerance:
        raise InputError(
            f"{other.source}: affine differs from that of {first.source} by up to {difference:.3g} mm "
            f"(tolerance {tolerance:.3g}); resample the channels onto one grid first"
        )
