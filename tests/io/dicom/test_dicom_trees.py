"""Finding the cases of a DICOM export: patient/study/series trees, folders of series, folders
holding several series, and what cannot be a case (said, never skipped)."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from pydicom.data import get_testdata_file

from revmed.errors import InputError
from revmed.evaluation.cases import match_cases
from revmed.io import find_cases, list_dicom_series, read_volume, write_volume


def test_every_image_series_of_a_tree_is_a_case_named_by_its_folders(export):
    cases = find_cases(export)

    assert sorted(cases) == ["P1__ST1__SCOUT", "P1__ST1__SE1", "P1__ST1__SE2", "P2__ST7__SE1"]
    assert cases["P1__ST1__SE2"].files == (export / "P1" / "ST1" / "SE2",)
    assert all(case.series is None and case.problem is None for case in cases.values())
    assert cases["P1__ST1__SCOUT"].skip and "localizer" in cases["P1__ST1__SCOUT"].skip
    assert [name for name, case in cases.items() if case.skip] == ["P1__ST1__SCOUT"]
    volume = read_volume(cases["P2__ST7__SE1"].files[0])
    assert volume.shape == (20, 16, 6) and volume.meta["units"] == "HU"


def test_a_folder_of_series_folders_works_like_a_folder_of_files(tmp_path, ct_series):
    ct_series(tmp_path / "in" / "case_a")
    ct_series(tmp_path / "in" / "case_b", slices=3)
    write_volume(read_volume(tmp_path / "in" / "case_a"), tmp_path / "in" / "case_c.nii.gz")
    cases = find_cases(tmp_path / "in")
    assert {n: c.files for n, c in cases.items()} == {
        "case_a": (tmp_path / "in" / "case_a",), "case_b": (tmp_path / "in" / "case_b",),
        "case_c": (tmp_path / "in" / "case_c.nii.gz",)}


def test_a_folder_holding_several_series_gives_one_case_per_series(tmp_path, ct_series):
    flat = tmp_path / "flat"
    ct_series(flat / "x", slices=4)
    ct_series(flat / "y", slices=3, step=5.0)
    for sub in ("x", "y"):  # all files in one folder, as some exports write them
        for f in (flat / sub).iterdir():
            f.rename(flat / f"{sub}_{f.name}")
        (flat / sub).rmdir()
    infos = {info.uid: len(info.files) for info in list_dicom_series(flat)}

    cases = find_cases(flat)
    assert {n: (c.files, c.series) for n, c in cases.items()} == {
        uid: ((flat,), uid) for uid in infos}
    for uid, count in infos.items():
        assert read_volume(flat, series=uid).shape[2] == count
    # below a folder of cases, the series of such a folder are named after it and their UID
    (tmp_path / "batch").mkdir()
    flat.rename(tmp_path / "batch" / "p7")
    assert sorted(find_cases(tmp_path / "batch")) == sorted(f"p7__{uid}" for uid in infos)


def test_one_series_folder_is_still_one_volume(tmp_path, ct_series):
    folder = ct_series(tmp_path / "ct")
    shutil.copy(get_testdata_file("rtstruct.dcm"), folder / "RS.dcm")  # no image: not a case
    assert find_cases(folder) is None


def test_what_cannot_be_read_is_a_failed_case_never_skipped(tmp_path, ct_series):
    folder = tmp_path / "in"
    folder.mkdir()
    write_volume(read_volume(ct_series(tmp_path / "ct")), folder / "c1.nii.gz")
    os.symlink(tmp_path / "gone.nii.gz", folder / "c4.nii.gz")
    os.symlink(tmp_path / "gone", folder / "c6")  # no suffix: a stray, yet a case too
    (folder / "c5.nii.gz").mkdir()
    (folder / "c7").mkdir()
    (folder / "c7" / "readme.md").write_text("nothing")

    cases = find_cases(folder)
    assert sorted(cases) == ["c1", "c4", "c5.nii.gz", "c6", "c7"]
    assert cases["c1"].problem is None
    assert "broken symbolic link" in cases["c4"].problem and "gone.nii.gz" in cases["c4"].problem
    assert "broken symbolic link" in cases["c6"].problem
    assert "named like a volume file" in cases["c5.nii.gz"].problem
    assert "holding no volume file and no DICOM image series" in cases["c7"].problem
    with pytest.raises(InputError, match="broken symbolic link"):
        find_cases(folder / "c4.nii.gz")


def test_evaluation_pairs_outputs_with_a_reference_tree(export, tmp_path):
    predictions = tmp_path / "pred"
    for name, case in find_cases(export).items():
        if not case.skip:
            write_volume(read_volume(case.files[0]), predictions / f"{name}.nii.gz")
    pairs = match_cases(predictions, export)
    assert [p.name for p in pairs] == ["P1__ST1__SE1", "P1__ST1__SE2", "P2__ST7__SE1"]
    assert pairs[0].reference == export / "P1" / "ST1" / "SE1"
    assert np.array_equal(read_volume(pairs[2].prediction).array,
                          read_volume(pairs[2].reference).array)


def test_symbolic_link_loops_inside_a_tree_are_no_cases_and_no_tracebacks(export):
    os.symlink("loop", export / "P1" / "ST1" / "loop")  # a link to itself
    os.symlink("..", export / "P1" / "ST1" / "SE1" / "up")  # a link back up the tree
    cases = find_cases(export)  # before: a RuntimeError from resolving the loop
    assert sorted(cases) == ["P1__ST1__SCOUT", "P1__ST1__SE1", "P1__ST1__SE2", "P2__ST7__SE1"]
    assert read_volume(cases["P1__ST1__SE1"].files[0]).shape == (20, 16, 5)
