"""Label sets: the labels of a segmentation's label maps and the regions a network predicts.

A ``LabelSet`` names the non-zero values of a label map (``labels``: name -> value; 0 is the
background) and the regions a network predicts, one sigmoid channel each, in channel order
(``regions``: name -> the labels it unites). Regions may overlap when they nest, as BraTS's
do: ET = {4}, TC = {1, 4}, WT = {1, 2, 4} over the labels 1 (necrotic core, NCR), 2 (oedema,
ED) and 4 (enhancing tumour, ET). Any two regions must be disjoint or nested, and each region
must own exactly one label that no smaller region holds, so a prediction maps back to one label
per voxel. Without regions, each label is a region of its own.

A dataset declares its label set in ``dataset.toml`` (tables ``[labels]`` and ``[regions]``);
without them it is ``BRATS``. The set travels with the data into training (targets), the
checkpoint's model card (decoding predictions) and evaluation (``revmed eval --regions``).
Functions take numpy arrays or torch tensors alike.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from revmed.errors import ConfigError

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_+\-]*$")


@dataclass(frozen=True)
class LabelSet:
    """Labels (name -> value) and regions (name -> label names), see the module doc.

    Raises ``ValueError`` with the reason when the set is not usable (values outside 1..255,
    a value or name twice, a region of unknown labels, regions that overlap without nesting,
    a region that owns no label or several)."""

    labels: Mapping[str, int]
    regions: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        labels = dict(self.labels)
        regions = {k: tuple(v) for k, v in self.regions.items()} or {n: (n,) for n in labels}
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "regions", regions)
        _check_labels(labels)
        _check_regions(labels, regions)

    @property
    def names(self) -> tuple[str, ...]:
        """The regions, in the order of a network's output channels."""
        return tuple(self.regions)

    @property
    def codes(self) -> tuple[int, ...]:
        """Every value a label map of this set holds: 0 (the background), then the labels'
        values in increasing order (BraTS: 0, 1, 2, 4)."""
        return (0, *sorted(self.labels.values()))

    def values(self, region: str) -> tuple[int, ...]:
        """The label values ``region`` unites."""
        return tuple(self.labels[name] for name in self.regions[region])

    def unknown_values(self, label_map) -> list[float]:
        """The values of ``label_map`` that are neither 0 nor a declared label."""
        known = {0, *self.labels.values()}
        found = np.unique(np.asarray(label_map)).tolist()
        return [v for v in found if v not in known]

    def to_regions(self, labels):
        """``(B, 1, D, H, W)`` (or ``(1, I, J, K)``) label map -> float ``(B, R, ...)`` region
        channels, in the order of ``names``."""
        masks = [_isin(labels, self.values(r)) for r in self.regions]
        if isinstance(labels, torch.Tensor):
            return torch.cat(masks, dim=-4).float()
        return np.concatenate(masks, axis=-4).astype(np.float32)

    def masks(self, label_map: np.ndarray) -> dict[str, np.ndarray]:
        """Boolean ``(I, J, K)`` masks of each region of an ``(I, J, K)`` or ``(1, I, J, K)``
        label map; ``ValueError`` for values the set does not declare."""
        labels = np.asarray(label_map)
        if labels.ndim == 4 and labels.shape[0] == 1:
            labels = labels[0]
        if labels.ndim != 3:
            raise ValueError(f"expected an (I, J, K) label map, got shape {labels.shape}")
        unknown = self.unknown_values(labels)
        if unknown:
            raise ValueError(f"label map holds values other than the labels 0, "
                             f"{self.describe_values()}: {', '.join(f'{v:g}' for v in unknown[:8])}")
        return {r: np.isin(labels, self.values(r)) for r in self.regions}

    def to_labels(self, logits: np.ndarray) -> np.ndarray:
        """``(R, I, J, K)`` region logits -> ``(1, I, J, K)`` uint8 label map.

        A voxel gets the label its smallest predicted region (logit > 0) owns; of several
        predicted regions of one size, the one with the larger logit. For BraTS: WT voxels get
        2, those also in TC 1, those also in ET 4, and an ET voxel outside the predicted TC or
        WT still counts as enhancing tumour, as its label implies."""
        logits = np.asarray(logits)
        predicted = logits > 0.0
        out = np.zeros(logits.shape[1:], dtype=np.uint8)
        names, own = self.names, self.owned_labels()
        sizes = sorted({len(self.regions[n]) for n in names}, reverse=True)
        for size in sizes:  # largest first: smaller (inner) regions paint over larger ones
            group = [i for i, n in enumerate(names) if len(self.regions[n]) == size]
            hit = predicted[group].any(axis=0)
            best = np.argmax(np.where(predicted[group], logits[group], -np.inf), axis=0)
            values = np.array([self.labels[own[names[i]]] for i in group], dtype=np.uint8)
            out[hit] = values[best[hit]]
        return out[None]

    def owned_labels(self) -> dict[str, str]:
        """Region -> the one label it holds that no smaller region holds."""
        return {name: _owned(name, self.regions)[0] for name in self.regions}

    def describe_values(self) -> str:
        """``1 NCR, 2 ED, 4 ET``: the labels by value."""
        return ", ".join(f"{v} {n}" for n, v in sorted(self.labels.items(), key=lambda x: x[1]))

    def describe_regions(self) -> str:
        """``ET = 4, TC = 1 + 4, WT = 1 + 2 + 4``: each region by its label values."""
        return ", ".join(f"{r} = {' + '.join(str(v) for v in sorted(self.values(r)))}"
                         for r in self.regions)

    def to_dict(self) -> dict[str, Any]:
        """Plain values for TOML, JSON and checkpoints."""
        return {"labels": dict(self.labels), "regions": {k: list(v) for k, v in
                                                          self.regions.items()}}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> LabelSet:
        """The set of ``{"labels": {...}, "regions": {...}}`` (``ValueError`` when unusable)."""
        labels = values.get("labels")
        if not isinstance(labels, Mapping) or not labels:
            raise ValueError("'labels' must be a table of label names and values, e.g. "
                             "{ NCR = 1, ED = 2, ET = 4 }")
        regions = values.get("regions", {})
        if not isinstance(regions, Mapping):
            raise ValueError("'regions' must be a table of region names and lists of labels")
        for name, members in regions.items():
            if not isinstance(members, Sequence) or isinstance(members, str) or not members:
                raise ValueError(f"region {name!r} must list its labels, e.g. [\"NCR\", \"ET\"]")
        return cls(dict(labels), {k: tuple(v) for k, v in regions.items()})


def _isin(labels, values: tuple[int, ...]):
    if isinstance(labels, torch.Tensor):
        return torch.isin(labels, torch.tensor(values, dtype=labels.dtype, device=labels.device))
    return np.isin(labels, values)


def _check_labels(labels: dict[str, int]) -> None:
    for name, value in labels.items():
        if not _NAME.match(str(name)):
            raise ValueError(f"label name {name!r} is not usable (letters, digits, _, + and -)")
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 255:
            raise ValueError(f"label {name!r} must be an integer from 1 to 255, got {value!r}")
    if len(set(labels.values())) != len(labels):
        raise ValueError(f"two labels share a value: {labels}")


def _owned(name: str, regions: Mapping[str, tuple[str, ...]]) -> list[str]:
    members = set(regions[name])
    inner = set().union(*(set(v) for k, v in regions.items() if k != name and set(v) < members))
    return sorted(members - inner)


def _check_regions(labels: dict[str, int], regions: dict[str, tuple[str, ...]]) -> None:
    for name, members in regions.items():
        if not _NAME.match(str(name)):
            raise ValueError(f"region name {name!r} is not usable (letters, digits, _, + and -)")
        unknown = [m for m in members if m not in labels]
        if unknown:
            raise ValueError(f"region {name!r} names unknown labels {unknown}; labels: "
                             f"{', '.join(labels)}")
    sets = {k: set(v) for k, v in regions.items()}
    for a in sets:
        for b in sets:
            if a < b and sets[a] & sets[b] and not (sets[a] <= sets[b] or sets[b] <= sets[a]):
                raise ValueError(f"regions {a!r} and {b!r} overlap without one holding the other")
            if a < b and sets[a] == sets[b]:
                raise ValueError(f"regions {a!r} and {b!r} hold the same labels")
    for name in regions:
        owned = _owned(name, regions)
        if len(owned) != 1:
            raise ValueError(f"region {name!r} must hold exactly one label that no smaller region "
                             f"holds, so predictions map back to labels; it holds {owned or 'none'}")


def read_label_set(name: str) -> LabelSet:
    """``"brats"``, or the label set of a TOML file with ``[labels]`` (and ``[regions]``)
    tables, such as a dataset's ``dataset.toml``; ``ConfigError`` naming the file otherwise."""
    if name == "brats":
        return BRATS
    path = Path(name)
    if not path.is_file():
        raise ConfigError(f"regions {name}: neither 'brats' nor a TOML file with [labels]",
                          option="regions")
    try:
        values = tomllib.loads(path.read_text(encoding="utf-8"))
        return LabelSet.from_dict(values)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, ValueError) as exc:
        raise ConfigError(f"{path}: no usable label set ({exc})", option="regions") from None


#: The BraTS label set: ET = {4}, TC = {1, 4}, WT = {1, 2, 4}.
BRATS = LabelSet(labels={"NCR": 1, "ED": 2, "ET": 4},
                 regions={"ET": ("ET",), "TC": ("NCR", "ET"), "WT": ("NCR", "ED", "ET")})
