"""``revmed.data.layout``: dataset folders are found, checked, and their errors name the path."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from revmed.data.layout import describe_dataset, load_dataset, validate_geometry
from revmed.errors import InputError
from revmed.io import Volume, make_affine, write_volume
from revmed.regions import BRATS


def vol(path: Path, shape=(8, 8, 6), channels=1, spacing=(1.0, 1.0, 2.0), value=0.0) -> Path:
    """Write a small volume (any format write_volume knows) and return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.full((channels,) + tuple(shape), value, dtype=np.float32)
    write_volume(Volume(array, make_affine(spacing)), path)
    return path


def manifest(root: Path, text: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.toml").write_text(text)
    return root


def raises_naming(path, func, *args):
    """Call ``func`` and check it raises an InputError whose message names ``path``."""
    with pytest.raises(InputError) as info:
        func(*args)
    assert str(path) in str(info.value), str(info.value)
    return str(info.value)


@pytest.fixture
def paired(tmp_path):
    root = manifest(tmp_path / "ds", 'kind = "paired"\nunits = "HU"\n')
    for split, names in {"train": ["a", "b"], "test": ["c"]}.items():
        for name in names:
            vol(root / split / "X" / f"{name}.nii.gz")
            vol(root / split / "Y" / f"{name}.nii.gz")
    vol(root / "train" / "masks" / "a.nii.gz")
    return root


def test_paired_dataset_loads(paired):
    ds = load_dataset(paired)
    assert ds.kind == "paired" and ds.channels == ["image"] and ds.units == "HU"
    assert ds.counts() == {"train": 2, "val": 0, "test": 1}
    a, b = ds.cases("train")
    assert (a.name, b.name) == ("a", "b")
    assert a.inputs == [paired / "train" / "X" / "a.nii.gz"]
    assert a.target == paired / "train" / "Y" / "a.nii.gz"
    assert a.mask == paired / "train" / "masks" / "a.nii.gz" and b.mask is None
    assert [c.inputs[0] for c in ds.cases("test")] == [paired / "test" / "X" / "c.nii.gz"]
    validate_geometry(ds)
    text = describe_dataset(ds)
    assert "paired" in text and "train 2" in text and "test 1" in text and "HU" in text


def test_missing_root(tmp_path):
    msg = raises_naming(tmp_path / "nope", load_dataset, tmp_path / "nope")
    assert "no such dataset folder" in msg


def test_missing_manifest(tmp_path):
    (tmp_path / "ds" / "train").mkdir(parents=True)
    raises_naming(tmp_path / "ds" / "dataset.toml", load_dataset, tmp_path / "ds")


def test_invalid_toml(tmp_path):
    root = manifest(tmp_path / "ds", "kind = paired\n")
    raises_naming(root / "dataset.toml", load_dataset, root)


def test_unknown_key(paired):
    (paired / "dataset.toml").write_text('kind = "paired"\nchanels = ["t1"]\n')
    msg = raises_naming(paired / "dataset.toml", load_dataset, paired)
    assert "chanels" in msg


@pytest.mark.parametrize("text, word", [
    ('units = "HU"\n', "kind"),
    ('kind = "pairs"\n', "pairs"),
    ('kind = "paired"\nchannels = []\n', "channels"),
    ('kind = "paired"\nchannels = ["t1", "t1"]\n', "twice"),
    ('kind = "paired"\nchannels = ["../t1"]\n', "../t1"),
    ('kind = "paired"\nunits = 3\n', "units"),
])
def test_bad_manifest_values(paired, text, word):
    (paired / "dataset.toml").write_text(text)
    msg = raises_naming(paired / "dataset.toml", load_dataset, paired)
    assert word in msg


def test_missing_partner(paired):
    (paired / "train" / "Y" / "b.nii.gz").unlink()
    msg = raises_naming(paired / "train" / "Y" / "b.nii.gz", load_dataset, paired)
    assert str(paired / "train" / "X" / "b.nii.gz") in msg


def test_missing_partner_other_way(paired):
    vol(paired / "test" / "Y" / "d.nii.gz")
    raises_naming(paired / "test" / "X" / "d.nii.gz", load_dataset, paired)


def test_several_problems_reported_together(paired):
    (paired / "train" / "Y" / "b.nii.gz").unlink()
    (paired / "test" / "X" / "c.nii.gz").unlink()
    msg = raises_naming(paired / "train" / "Y" / "b.nii.gz", load_dataset, paired)
    assert str(paired / "test" / "X" / "c.nii.gz") in msg and "2 problems" in msg


def test_missing_train_split(tmp_path):
    root = manifest(tmp_path / "ds", 'kind = "hr-only"\n')
    vol(root / "test" / "Y" / "a.nii.gz")
    raises_naming(root / "train", load_dataset, root)


def test_missing_domain_folder(paired):
    for f in (paired / "test" / "Y").iterdir():
        f.unlink()
    (paired / "test" / "Y").rmdir()
    raises_naming(paired / "test" / "Y", load_dataset, paired)


def test_unexpected_folder_and_stray_file(paired):
    (paired / "train" / "Z").mkdir()
    raises_naming(paired / "train" / "Z", load_dataset, paired)
    (paired / "train" / "Z").rmdir()
    (paired / "train" / "X" / "notes.docx").write_text("x")
    raises_naming(paired / "train" / "X" / "notes.docx", load_dataset, paired)


def test_sidecars_and_hidden_files_are_skipped(paired):
    (paired / "train" / "X" / "a.json").write_text("{}")
    (paired / "train" / "X" / ".a.nii.gz.tmp-123.nii.gz").write_text("")
    assert load_dataset(paired).counts()["train"] == 2


def test_loose_dicom_file(paired):
    (paired / "train" / "X" / "IM0001.dcm").write_bytes(b"")
    msg = raises_naming(paired / "train" / "X" / "IM0001.dcm", load_dataset, paired)
    assert "folder" in msg


def test_dicom_folder_is_a_case(paired):
    series = paired / "train" / "X" / "d"
    series.mkdir()
    (series / "IM0001.dcm").write_bytes(b"")
    vol(paired / "train" / "Y" / "d.nii.gz")
    case = {c.name: c for c in load_dataset(paired).cases("train")}["d"]
    assert case.inputs == [series]


def test_orphan_mask(paired):
    vol(paired / "train" / "masks" / "zz.nii.gz")
    raises_naming(paired / "train" / "masks" / "zz.nii.gz", load_dataset, paired)


def test_duplicate_case_in_two_formats(paired):
    vol(paired / "train" / "X" / "a.nrrd")
    raises_naming(paired / "train" / "X" / "a.nrrd", load_dataset, paired)


def test_mismatched_shapes(paired):
    vol(paired / "train" / "Y" / "b.nii.gz", shape=(8, 8, 5))
    ds = load_dataset(paired)  # structure is fine; geometry is not
    msg = raises_naming(paired / "train" / "Y" / "b.nii.gz", validate_geometry, ds)
    assert str(paired / "train" / "X" / "b.nii.gz") in msg
    assert "8x8x6" in msg and "8x8x5" in msg


def test_mismatched_spacing(paired):
    vol(paired / "test" / "Y" / "c.nii.gz", spacing=(1.0, 1.0, 2.5))
    msg = raises_naming(paired / "test" / "X" / "c.nii.gz", validate_geometry, load_dataset(paired))
    assert "2.5" in msg


def test_mask_on_another_grid(paired):
    vol(paired / "train" / "masks" / "a.nii.gz", shape=(4, 4, 4))
    raises_naming(paired / "train" / "masks" / "a.nii.gz", validate_geometry, load_dataset(paired))


def test_unpaired_names_need_not_match(tmp_path):
    root = manifest(tmp_path / "ds", 'kind = "unpaired"\n')
    vol(root / "train" / "X" / "p1.nii.gz")
    vol(root / "train" / "X" / "p2.nii.gz")
    vol(root / "train" / "Y" / "q1.nii.gz", shape=(10, 9, 8))  # other grids are fine
    ds = load_dataset(root)
    validate_geometry(ds)
    assert [c.inputs[0].name for c in ds.cases("train") if c.inputs] == ["p1.nii.gz", "p2.nii.gz"]
    assert [c.target.name for c in ds.cases("train") if c.target] == ["q1.nii.gz"]


def test_hr_only_wrong_channel_count(tmp_path):
    root = manifest(tmp_path / "ds", 'kind = "hr-only"\nchannels = ["Dxx", "Dxy", "Dxz", "Dyy", '
                    '"Dyz", "Dzz"]\n')
    vol(root / "train" / "Y" / "a.nii.gz", channels=6)
    vol(root / "train" / "Y" / "b.nii.gz", channels=3)
    ds = load_dataset(root)
    assert ds.cases("train")[0].inputs == [] and ds.cases("train")[0].target.name == "a.nii.gz"
    msg = raises_naming(root / "train" / "Y" / "b.nii.gz", validate_geometry, ds)
    assert "3 channels" in msg and "expected 6" in msg


def test_hr_only_rejects_x_folder(tmp_path):
    root = manifest(tmp_path / "ds", 'kind = "hr-only"\n')
    vol(root / "train" / "Y" / "a.nii.gz")
    vol(root / "train" / "X" / "a.nii.gz")
    raises_naming(root / "train" / "X", load_dataset, root)


def test_other_formats_are_checked_too(tmp_path):
    root = manifest(tmp_path / "ds", 'kind = "paired"\n')
    vol(root / "train" / "X" / "a.nrrd")
    vol(root / "train" / "Y" / "a.mha", shape=(8, 8, 7))
    ds = load_dataset(root)
    assert ds.cases("train")[0].name == "a"
    msg = raises_naming(root / "train" / "Y" / "a.mha", validate_geometry, ds)
    assert "8x8x7" in msg


SEG = 'kind = "segmentation"\nchannels = ["t1", "t1ce", "t2", "flair"]\nlabels = "brats"\n'


@pytest.fixture
def seg(tmp_path):
    root = manifest(tmp_path / "seg", SEG)
    for c in ("t1", "t1ce", "t2", "flair"):
        vol(root / "train" / "images" / "a" / f"{c}.nii.gz")
    vol(root / "train" / "images" / "b.nii.gz", channels=4)  # a 4D file works too
    vol(root / "train" / "labels" / "a.nii.gz")
    vol(root / "train" / "labels" / "b.nii.gz")
    return root


def test_segmentation_dataset_loads(seg):
    ds = load_dataset(seg)
    a, b = ds.cases("train")
    assert [p.name for p in a.inputs] == ["t1.nii.gz", "t1ce.nii.gz", "t2.nii.gz", "flair.nii.gz"]
    assert b.inputs == [seg / "train" / "images" / "b.nii.gz"]
    assert a.label == seg / "train" / "labels" / "a.nii.gz"
    validate_geometry(ds)


def test_the_labels_are_declared_never_guessed(seg):
    """``labels = "brats"`` names the BraTS set; a segmentation dataset that declares nothing
    is refused naming its dataset.toml (it used to be taken for BraTS silently)."""
    assert load_dataset(seg).labels == BRATS
    toml = seg / "dataset.toml"
    for text, said in ((SEG.replace('labels = "brats"\n', ""), "declares no labels"),
                       (SEG.replace('"brats"', '"brats2023"'), "names a label set"),
                       (SEG + '[regions]\nWT = ["ET"]\n', "names a label set")):
        toml.write_text(text)
        assert said in raises_naming(toml, load_dataset, seg)


def test_missing_channel_file(seg):
    (seg / "train" / "images" / "a" / "flair.nii.gz").unlink()
    msg = raises_naming(seg / "train" / "images" / "a" / "flair.nii.gz", load_dataset, seg)
    assert "flair" in msg


def test_channel_file_not_in_channels(seg):
    vol(seg / "train" / "images" / "a" / "dwi.nii.gz")
    raises_naming(seg / "train" / "images" / "a" / "dwi.nii.gz", load_dataset, seg)


def test_image_without_label(seg):
    (seg / "train" / "labels" / "a.nii.gz").unlink()
    raises_naming(seg / "train" / "labels" / "a.nii.gz", load_dataset, seg)


def test_label_without_image(seg):
    vol(seg / "train" / "labels" / "c.nii.gz")
    raises_naming(seg / "train" / "labels" / "c.nii.gz", load_dataset, seg)


def test_4d_image_wrong_channel_count(seg):
    vol(seg / "train" / "images" / "b.nii.gz", channels=3)
    msg = raises_naming(seg / "train" / "images" / "b.nii.gz", validate_geometry, load_dataset(seg))
    assert "expected 4" in msg


def test_channel_file_with_channels(seg):
    vol(seg / "train" / "images" / "a" / "t2.nii.gz", channels=2)
    t2 = seg / "train" / "images" / "a" / "t2.nii.gz"
    raises_naming(t2, validate_geometry, load_dataset(seg))


def test_label_on_another_grid(seg):
    vol(seg / "train" / "labels" / "b.nii.gz", shape=(8, 7, 6))
    msg = raises_naming(seg / "train" / "labels" / "b.nii.gz", validate_geometry, load_dataset(seg))
    assert re.search(r"8x7x6", msg)


def test_corrupt_header_is_an_input_error(paired):
    (paired / "train" / "Y" / "a.nii.gz").write_bytes(b"not a nifti")
    raises_naming(paired / "train" / "Y" / "a.nii.gz", validate_geometry, load_dataset(paired))


def test_progress_of_validation(paired):
    calls = []
    validate_geometry(load_dataset(paired), progress=lambda d, t: calls.append((d, t)))
    assert calls == [(1, 3), (2, 3), (3, 3)]
