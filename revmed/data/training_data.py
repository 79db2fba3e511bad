"""What a training run reads, opened once: a dataset folder or a ``revmed patchify`` folder.

``open_training_data(folder)`` reads the folder's description once (``dataset.toml`` and the
listing of its splits, or a patch folder's ``manifest.json``) into a ``TrainingData``: the kind
of data, its channels and label set, where the training patches come from (the ``train``
cases, or the patch folder's shards), and the ``val`` cases that score each epoch (a patch
folder's come from the dataset it was cut from, when that is still there). Everything a run
builds afterwards (statistics, patches, the network's card, the validator) reads this object,
never the folder again; voxels are read later, by whoever needs them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from revmed.data.layout import Case, load_dataset
from revmed.data.patchify import MANIFEST, read_manifest, require_dataset
from revmed.errors import InputError
from revmed.regions import BRATS, LabelSet


@dataclass(frozen=True)
class TrainingData:
    """A training run's data, as ``open_training_data`` found it.

    Attributes:
        folder: the folder given (a dataset, or a patch folder).
        kind: ``paired``, ``unpaired``, ``hr-only`` or ``segmentation``.
        channels: the input channels' names (e.g. ``("t1", "t1ce", "t2", "flair")``).
        labels: the label set of segmentation data, None for other kinds.
        train_cases: the ``train`` cases of a dataset folder (empty for a patch folder).
        manifest: a patch folder's manifest (None for a dataset folder).
        validation_cases: the ``val`` cases that score each epoch (may be empty).
        validation_kind: the kind of the dataset they belong to ("" when there is none).
        dataset_root: the dataset folder the cases come from (None when it is unknown: a patch
            folder whose dataset moved).
    """

    folder: Path
    kind: str
    channels: tuple[str, ...]
    labels: LabelSet | None
    train_cases: tuple[Case, ...] = ()
    manifest: dict[str, Any] | None = None
    validation_cases: tuple[Case, ...] = ()
    validation_kind: str = ""
    dataset_root: Path | None = None

    @property
    def is_patch_folder(self) -> bool:
        return self.manifest is not None


def open_training_data(folder: str | Path, synth: str = "") -> TrainingData:
    """Open ``folder`` (a dataset or a patch folder) for training; see the module doc.

    ``InputError`` when it does not exist (``synth``: the ``revmed synth`` task that makes
    matching data, named in the message), is neither, or its train split has no cases.
    """
    require_dataset(folder, synth)
    folder = Path(folder)
    if (folder / MANIFEST).is_file():
        return _patch_folder(folder)
    dataset = load_dataset(folder)
    train = dataset.splits.get("train", [])
    if not train:
        raise InputError(f"{folder}: the train split has no cases")
    return TrainingData(folder, dataset.kind, tuple(dataset.channels), dataset.labels,
                        train_cases=tuple(train),
                        validation_cases=tuple(dataset.splits.get("val", [])),
                        validation_kind=dataset.kind, dataset_root=folder)


def _patch_folder(folder: Path) -> TrainingData:
    manifest = read_manifest(folder)
    root = Path(manifest["dataset"])
    kind, cases = "", ()
    if root.is_dir():  # the dataset the patches were cut from: its val split scores epochs
        dataset = load_dataset(root)
        kind, cases = dataset.kind, tuple(dataset.splits.get("val", []))
    return TrainingData(folder, manifest["kind"], tuple(manifest["channels"]),
                        _manifest_labels(manifest, folder), manifest=manifest,
                        validation_cases=cases, validation_kind=kind,
                        dataset_root=root if root.is_dir() else None)


def _manifest_labels(manifest: dict, folder: Path) -> LabelSet | None:
    """The label set a patch folder's manifest records (BraTS for folders made before label
    sets were recorded, which were BraTS), None for other kinds."""
    if manifest["kind"] != "segmentation":
        return None
    if "labels" not in manifest:
        return BRATS
    try:
        return LabelSet.from_dict(manifest["labels"])
    except ValueError as exc:
        raise InputError(f"{folder}: the manifest's label set is not usable ({exc})") from None
