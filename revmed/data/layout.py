"""The dataset folder layout: find the cases of a dataset and check that they fit together.

A dataset is a folder with a ``dataset.toml`` and one folder per split::

    ROOT/
      dataset.toml       kind = "paired" | "unpaired" | "hr-only" | "segmentation"
                         channels = [...]   (optional, default ["image"])
                         units = "..."      (optional)
                         description = "..." (optional)
                         [labels] [regions] (segmentation, optional: see revmed.regions)
      train/ val/ test/  train required, val and test optional
        X/<case>.nii.gz       source domain        (paired, unpaired)
        Y/<case>.nii.gz       target domain        (paired, unpaired, hr-only)
        images/<case>.nii.gz  segmentation images  (a 4D file, or images/<case>/<channel>.nii.gz)
        labels/<case>.nii.gz  segmentation label maps
        masks/<case>.nii.gz   optional body / brain masks

A volume is any file ``read_volume`` reads (``.nii``, ``.nii.gz``, ``.nrrd``, ``.mha``) or a
DICOM folder; a case is named after its file without the format suffix. ``load_dataset`` checks
the structure (names, partners, channel files) without reading voxels; ``validate_geometry``
then checks shapes, spacings and channel counts, from NIfTI headers where it can.

Every problem is an ``InputError`` whose message names the offending path.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from revmed.errors import InputError
from revmed.io.cases import Entry, list_folder
from revmed.io.formats import DICOM_SUFFIXES, VOLUME_SUFFIXES
from revmed.io.geometry import Geometry, read_geometry
from revmed.regions import BRATS, LabelSet

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

KINDS = ("paired", "unpaired", "hr-only", "segmentation")
SPLITS = ("train", "val", "test")
MANIFEST = "dataset.toml"
#: Keys ``dataset.toml`` may hold (anything else is an error, to catch typos).
MANIFEST_KEYS = ("kind", "channels", "units", "description", "labels", "regions")
DEFAULT_CHANNELS = ("image",)
#: Sub-folders of a split per kind (masks/ is always optional).
FOLDERS = {
    "paired": ("X", "Y", "masks"),
    "unpaired": ("X", "Y", "masks"),
    "hr-only": ("Y", "masks"),
    "segmentation": ("images", "labels", "masks"),
}
_CHANNEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_+\-]*$")


@dataclass
class Case:
    """One case of a split.

    Attributes:
        name: the case name (file name without its format suffix, or the folder name).
        inputs: the network input: one file (possibly 4D, or a DICOM folder) or, for a
            per-channel segmentation case, one file per channel in ``dataset.channels`` order.
            X/ for paired and unpaired, images/ for segmentation; empty for hr-only (whose
            inputs are simulated from the target) and for a Y-only case of an unpaired dataset.
        target: Y/ file (paired, hr-only, and unpaired cases that have one), else None.
        label: labels/ file (segmentation), else None.
        mask: masks/ file when there is one, else None.
    """

    name: str
    inputs: list[Path] = field(default_factory=list)
    target: Path | None = None
    label: Path | None = None
    mask: Path | None = None

    @property
    def reference(self) -> Path:
        """The file whose grid the case is on (first input, else the target)."""
        if self.inputs:
            return self.inputs[0]
        assert self.target is not None
        return self.target


@dataclass
class Dataset:
    """A dataset folder, checked by ``load_dataset``.

    Attributes:
        root: the dataset folder.
        kind: one of ``KINDS``.
        channels: names of the input channels (``["image"]`` unless dataset.toml says otherwise).
        splits: cases per split; always has the keys ``train``, ``val`` and ``test`` (a split
            whose folder is absent has no cases), cases sorted by name.
        units: informative unit string from dataset.toml, or None.
        labels: the label set of a segmentation dataset (``revmed.regions.LabelSet``; BraTS
            unless dataset.toml declares ``[labels]``), None for other kinds.
        description: free text from dataset.toml, or None.
    """

    root: Path
    kind: str
    channels: list[str]
    splits: dict[str, list[Case]]
    units: str | None = None
    description: str | None = None
    labels: LabelSet | None = None

    def cases(self, split: str) -> list[Case]:
        """The cases of ``split`` (an empty list for an absent split)."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        return self.splits.get(split, [])

    def counts(self) -> dict[str, int]:
        """Number of cases per split."""
        return {s: len(self.cases(s)) for s in SPLITS}


# --------------------------------------------------------------------------------------------
# dataset.toml


def _read_manifest(root: Path) -> dict:
    path = root / MANIFEST
    if not path.is_file():
        raise InputError(f"{path}: missing; every dataset folder needs a {MANIFEST} "
                         f"with at least kind = \"{KINDS[0]}\" (see docs/data.md)")
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: invalid TOML ({exc})") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read ({exc})") from exc

    unknown = sorted(set(data) - set(MANIFEST_KEYS))
    if unknown:
        raise InputError(f"{path}: unknown key {unknown[0]!r} "
                         f"(known keys: {', '.join(MANIFEST_KEYS)})")
    if "kind" not in data:
        raise InputError(f"{path}: missing key 'kind' (one of {', '.join(KINDS)})")
    kind = data["kind"]
    if kind not in KINDS:
        raise InputError(f"{path}: key 'kind' is {kind!r}; expected one of {', '.join(KINDS)}")
    channels = data.get("channels", list(DEFAULT_CHANNELS))
    if (not isinstance(channels, list) or not channels
            or not all(isinstance(c, str) for c in channels)):
        raise InputError(f"{path}: key 'channels' must be a non-empty list of names, "
                         f"got {channels!r}")
    for c in channels:
        if not _CHANNEL_NAME.match(c):
            raise InputError(f"{path}: key 'channels': {c!r} is not a usable file stem "
                             "(letters, digits, _, + and -; not starting with a symbol)")
    if len(set(channels)) != len(channels):
        raise InputError(f"{path}: key 'channels' lists a name twice: {channels!r}")
    for key in ("units", "description"):
        if key in data and not isinstance(data[key], str):
            raise InputError(f"{path}: key {key!r} must be a string, got {data[key]!r}")
    return {"kind": kind, "channels": list(channels), "units": data.get("units"),
            "labels": _label_set(path, kind, data),
            "description": data.get("description")}


def _label_set(path: Path, kind: str, data: dict) -> LabelSet | None:
    """The label set ``dataset.toml`` declares: ``labels = "brats"`` (the BraTS coding), or
    ``[labels]`` and ``[regions]`` tables; None for datasets that are not for segmentation,
    which must not declare one. A segmentation dataset that declares none is refused: what its
    label maps hold is not guessed."""
    given = {k: data[k] for k in ("labels", "regions") if k in data}
    if kind != "segmentation":
        if given:
            raise InputError(f"{path}: key {next(iter(given))!r} only applies to segmentation "
                             "datasets")
        return None
    if not given:
        raise InputError(f"{path}: declares no labels; a segmentation dataset says what its "
                         "label maps hold: labels = \"brats\" for the BraTS coding (1 NCR, "
                         "2 ED, 4 ET), or [labels] and [regions] tables (docs/data.md)")
    if isinstance(given.get("labels"), str):
        if given["labels"] != "brats" or "regions" in given:
            raise InputError(f"{path}: key 'labels' names a label set: \"brats\" (alone), or "
                             "give [labels] and [regions] tables")
        return BRATS
    if "labels" not in given:
        raise InputError(f"{path}: [regions] needs a [labels] table naming the label values")
    try:
        return LabelSet.from_dict(given)
    except ValueError as exc:
        raise InputError(f"{path}: {exc}") from None


# --------------------------------------------------------------------------------------------
# Folder scanning


def _not_a_volume(entry: Path) -> str:
    if entry.name.lower().endswith(DICOM_SUFFIXES):
        return (f"{entry}: a loose DICOM file; put each DICOM series in its own folder, "
                f"{entry.parent}/<case>/")
    return f"{entry}: not a volume (expected {', '.join(VOLUME_SUFFIXES)} or a DICOM folder)"


def _scan_volumes(entries: Sequence[Entry], problems: list[str]) -> dict[str, Entry]:
    """Case name -> volume file or DICOM folder, one per entry (as ``revmed.io.scan_folder``
    sorts a folder); every stray file and repeated case name is a problem."""
    cases: dict[str, Entry] = {}
    for entry in entries:
        if not entry.is_dir and not entry.is_volume:
            problems.append(_not_a_volume(entry.path))
        elif entry.name in cases:
            problems.append(f"{entry.path}: case {entry.name!r} appears twice (also "
                            f"{cases[entry.name].path})")
        else:
            cases[entry.name] = entry
    return cases


def _is_channel_folder(folder: Entry, channels: list[str]) -> bool:
    """A folder of one file per channel (rather than one DICOM series)."""
    return any(e.is_volume or (e.is_dir and e.name in channels) for e in folder.entries)


def _channel_files(folder: Entry, channels: list[str], problems: list[str]) -> list[Path] | None:
    """The per-channel files of a case folder, in ``channels`` order (None if incomplete)."""
    by_name: dict[str, Path] = {}
    for entry in folder.entries:
        name = entry.name
        if not entry.is_dir and not entry.is_volume:
            problems.append(f"{entry.path}: not a volume (expected {', '.join(VOLUME_SUFFIXES)})")
        elif name not in channels:
            problems.append(f"{entry.path}: {name!r} is not one of the channels in "
                            f"dataset.toml ({', '.join(channels)})")
        elif name in by_name:
            problems.append(f"{entry.path}: channel {name!r} appears twice (also "
                            f"{by_name[name]})")
        else:
            by_name[name] = entry.path
    missing = [c for c in channels if c not in by_name]
    for c in missing:
        problems.append(f"{folder.path / (c + '.nii.gz')}: missing channel file for channel "
                        f"{c!r} (dataset.toml channels: {', '.join(channels)})")
    if missing:
        return None
    return [by_name[c] for c in channels]


def _split_folders(split: Sequence[Entry], kind: str, problems: list[str]) -> dict[str, Entry]:
    """The sub-folders of a split that its kind expects; anything else is a problem."""
    expected = FOLDERS[kind]
    subs: dict[str, Entry] = {}
    for entry in split:
        if entry.is_dir and entry.name in expected:
            subs[entry.name] = entry
        elif entry.is_dir:
            problems.append(f"{entry.path}: unexpected folder in a {kind} dataset "
                            f"(expected {', '.join(e + '/' for e in expected)})")
        else:
            problems.append(f"{entry.path}: unexpected file; volumes go in "
                            f"{', '.join(e + '/' for e in expected)}")
    return subs


def _require(folder: Path, subs: dict[str, Entry], need: tuple[str, ...], kind: str,
             problems: list[str]) -> None:
    for sub in need:
        if sub not in subs:
            problems.append(f"{folder / sub}: missing; a {kind} split needs "
                            f"{' and '.join(n + '/' for n in need)}")


def _partners(found: dict[str, Entry], others: dict[str, Entry], other_folder: Path,
              what: str) -> list[str]:
    """A problem for every case of ``found`` that has no partner in ``others`` (the same
    suffix expected: none for a folder)."""
    return [f"{other_folder / (name + entry.suffix)}: missing; {what} {entry.path}"
            for name, entry in found.items() if name not in others]


def _domain_cases(folder: Path, kind: str, subs: dict[str, Entry],
                  problems: list[str]) -> dict[str, Case]:
    """The cases of a paired, unpaired or hr-only split (X/ and Y/)."""
    _require(folder, subs, ("X", "Y") if kind != "hr-only" else ("Y",), kind, problems)
    xs = _scan_volumes(subs["X"].entries, problems) if "X" in subs else {}
    ys = _scan_volumes(subs["Y"].entries, problems) if "Y" in subs else {}
    if kind == "paired" and "X" in subs and "Y" in subs:
        problems += _partners(xs, ys, subs["Y"].path, "the paired partner of")
        problems += _partners(ys, xs, subs["X"].path, "the paired partner of")
    cases = {name: Case(name, inputs=[entry.path]) for name, entry in xs.items()}
    for name, entry in ys.items():
        if kind != "paired" or name in xs:
            cases.setdefault(name, Case(name)).target = entry.path
    return cases


def _image_cases(images: Entry, channels: list[str],
                 problems: list[str]) -> dict[str, list[Path]]:
    """Case name -> image files of a segmentation split's images/ (one 4D file, a DICOM
    folder, or one file per channel; an incomplete channel folder maps to no files)."""
    found: dict[str, list[Path]] = {}
    for entry in images.entries:
        if entry.is_dir and _is_channel_folder(entry, channels):
            # an incomplete folder stays listed (empty) so that its label is not an orphan
            found[entry.name] = _channel_files(entry, channels, problems) or []
        elif not entry.is_dir and not entry.is_volume:
            problems.append(_not_a_volume(entry.path))
        elif entry.name in found:
            problems.append(f"{entry.path}: case {entry.name!r} appears twice")
        else:
            found[entry.name] = [entry.path]
    return found


def _segmentation_cases(folder: Path, channels: list[str], subs: dict[str, Entry],
                        problems: list[str]) -> dict[str, Case]:
    """The cases of a segmentation split (images/ and labels/)."""
    _require(folder, subs, ("images", "labels"), "segmentation", problems)
    images = _image_cases(subs["images"], channels, problems) if "images" in subs else {}
    labels = _scan_volumes(subs["labels"].entries, problems) if "labels" in subs else {}
    if "images" in subs and "labels" in subs:
        labels_folder, images_folder = subs["labels"].path, subs["images"].path
        for name, files in images.items():
            if name not in labels:
                ref = files[0] if files else images_folder / name
                problems.append(f"{labels_folder / (name + '.nii.gz')}: missing; "
                                f"the label map of {ref if len(files) <= 1 else ref.parent}")
        problems += [f"{images_folder / (name + entry.suffix)}: missing; the image of "
                     f"label map {entry.path}" for name, entry in labels.items()
                     if name not in images]
    return {name: Case(name, inputs=files, label=labels[name].path)
            for name, files in images.items() if files and name in labels}


def _load_split(folder: Path, split: Sequence[Entry], kind: str, channels: list[str],
                problems: list[str]) -> list[Case]:
    """The cases of the split at ``folder``, whose listing is ``split``."""
    subs = _split_folders(split, kind, problems)
    if kind == "segmentation":
        cases = _segmentation_cases(folder, channels, subs, problems)
    else:
        cases = _domain_cases(folder, kind, subs, problems)
    if "masks" in subs:
        for name, entry in _scan_volumes(subs["masks"].entries, problems).items():
            if name in cases:
                cases[name].mask = entry.path
            else:
                problems.append(f"{entry.path}: mask of no case (no case named {name!r} in "
                                f"{folder})")
    return [cases[n] for n in sorted(cases)]


def _raise(problems: list[str], root: Path) -> None:
    if not problems:
        return
    if len(problems) == 1:
        raise InputError(problems[0])
    shown = problems[:20]
    more = f"\n  ... and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
    raise InputError(f"{root}: {len(problems)} problems in the dataset:\n  "
                     + "\n  ".join(shown) + more)


def load_dataset(root: str | os.PathLike) -> Dataset:
    """Read ``root/dataset.toml`` and list the cases of every split, checking the layout.

    Checks that the folder and its manifest exist and are valid, that ``train/`` exists and has
    cases, that every split holds the folders its kind needs (and no others), that paired X and
    Y cases come in partners, that every segmentation image has a label map (and vice versa),
    that per-channel image folders hold one file per channel, and that every mask belongs to a
    case. Voxels and headers are not read (see ``validate_geometry``).

    Raises ``InputError`` naming the offending path (all problems at once when there are several).
    """
    root = Path(root)
    if not root.is_dir():
        if root.exists():
            raise InputError(f"{root}: not a folder; a dataset is a folder with a {MANIFEST}")
        raise InputError(f"{root}: no such dataset folder")
    manifest = _read_manifest(root)
    kind, channels = manifest["kind"], manifest["channels"]
    problems: list[str] = []
    splits: dict[str, list[Case]] = {s: [] for s in SPLITS}
    if not (root / "train").is_dir():
        problems.append(f"{root / 'train'}: missing; every dataset needs a train/ split")
    for split in SPLITS:
        folder = root / split
        if folder.is_dir():  # sub-folders, their cases, per-channel files: listed once
            splits[split] = _load_split(folder, list_folder(folder, depth=3), kind, channels,
                                        problems)
    if not problems and not splits["train"]:
        problems.append(f"{root / 'train'}: no cases")
    _raise(problems, root)
    return Dataset(root=root, kind=kind, channels=channels, splits=splits,
                   labels=manifest["labels"],
                   units=manifest["units"], description=manifest["description"])


# --------------------------------------------------------------------------------------------
# Geometry


def validate_geometry(dataset: Dataset,
                      progress: Callable[[int, int], None] | None = None) -> None:
    """Check shapes, spacings and channel counts of every case of ``dataset``.

    * every X, Y and image volume has ``len(dataset.channels)`` channels (a per-channel image
      folder: one channel per file, all files on one grid);
    * paired X and Y, image and label map, and a case and its mask have the same shape and
      voxel spacing; label maps and masks have one channel.

    Reads NIfTI headers only (other formats are read whole). ``progress(done, total)`` is
    called after each case. Raises ``InputError`` naming both files and their geometries.
    """
    problems: list[str] = []
    n_channels = len(dataset.channels)
    all_cases = [c for s in SPLITS for c in dataset.cases(s)]
    cache: dict[Path, Geometry] = {}

    def geo(path: Path) -> Geometry | None:
        if path not in cache:
            try:
                cache[path] = read_geometry(path)
            except InputError as exc:
                problems.append(str(exc))
                return None
        return cache[path]

    def same(a: Path, b: Path, what: str) -> None:
        ga, gb = geo(a), geo(b)
        if ga is not None and gb is not None and not ga.same_grid(gb):
            problems.append(f"{a} ({ga.describe()}) and {b} ({gb.describe()}): {what} must "
                            "have the same shape and spacing")

    def channels(path: Path, expected: int, why: str) -> None:
        g = geo(path)
        if g is not None and g.channels != expected:
            problems.append(f"{path}: {g.channels} channel{'s' if g.channels != 1 else ''}, "
                            f"expected {expected} ({why})")

    why_channels = f"dataset.toml channels: {', '.join(dataset.channels)}"
    for done, case in enumerate(all_cases, 1):
        if len(case.inputs) > 1:  # per-channel files
            for f in case.inputs:
                channels(f, 1, "one file per channel")
            for f in case.inputs[1:]:
                same(case.inputs[0], f, "the channel files of a case")
        elif case.inputs:
            channels(case.inputs[0], n_channels, why_channels)
        if case.target is not None:
            channels(case.target, n_channels, why_channels)
        if dataset.kind == "paired" and case.inputs and case.target is not None:
            same(case.inputs[0], case.target, "paired X and Y volumes")
        if case.label is not None:
            channels(case.label, 1, "a label map")
            if case.inputs:
                same(case.inputs[0], case.label, "an image and its label map")
        if case.mask is not None:
            channels(case.mask, 1, "a mask")
            for ref in (case.inputs[:1] or []) + ([case.target] if case.target else []):
                same(ref, case.mask, "a volume and its mask")
        if progress is not None:
            progress(done, len(all_cases))
    _raise(problems, dataset.root)


def describe_dataset(dataset: Dataset) -> str:
    """A one-line summary for the CLI, e.g.
    ``data/chestct-da: paired, 1 channel (image), HU; train 7, val 1, test 2 cases``."""
    n = len(dataset.channels)
    parts = [f"{dataset.root}: {dataset.kind}",
             f"{n} channel{'s' if n != 1 else ''} ({', '.join(dataset.channels)})"]
    if dataset.units:
        parts.append(dataset.units)
    counts = dataset.counts()
    split_text = ", ".join(f"{s} {counts[s]}" for s in SPLITS if counts[s] or s == "train")
    total = sum(counts.values())
    return f"{', '.join(parts)}; {split_text} case{'s' if total != 1 else ''}"


__all__ = ["Case", "Dataset", "FOLDERS", "KINDS", "SPLITS", "describe_dataset", "load_dataset",
           "validate_geometry"]
