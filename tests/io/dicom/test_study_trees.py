"""Whole studies as scanners export them: the Philips head CT of the corpus is a DICOMDIR tree
with a localizer, exam-summary secondary captures, 5 mm and 1 mm reconstructions and two
gantry-tilted series. ``revmed info`` lists it, ``infer`` on it passes over what is no volume
and goes on, ``--series UID`` picks a series from the top of the tree.
"""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import pytest

from revmed.io import find_cases, read_volume

STUDY = "philips_ct_study"
#: (folder, series number, what revmed does) of every series in the trimmed study.
SERIES = [
    ("S21570/S1000", "100", "passed over: a localizer"),
    ("S21570/S2010", "201", "read"),
    ("S21570/S2020", "202", "read"),
    ("S21570/S2030", "203", "read"),
    ("S21570/S4010", "401", "passed over: a secondary capture"),
    ("S21610/S2010", "201", "read, slices step 18.5 degrees off their normal (gantry tilt)"),
    ("S21610/S3010", "301", "read, slices step 16.5 degrees off their normal (gantry tilt)"),
    ("S21610/S4010", "401", "passed over: a secondary capture"),
]


@pytest.mark.parametrize("entry", ["tree", "DICOMDIR"])
def test_info_lists_every_series_of_a_study_and_what_is_done_with_it(cli, corpus, entry):
    path = corpus / STUDY / ("DICOMDIR" if entry == "DICOMDIR" else "")
    result = cli("info", "--json", path)
    assert result.code == 0, result.err
    listed = json.loads(result.out)
    assert [(e["path"], e["series_number"], e["action"][:len(action)])
            for e, (_, _, action) in zip(listed, SERIES, strict=True)] == [
        (str(corpus / STUDY / folder), number, action) for folder, number, action in SERIES]
    tilted = listed[5]
    assert tilted["tilt_degrees"] == pytest.approx(18.5, abs=0.01)
    assert tilted["shape"] == [512, 521, 6] and tilted["units"] == "HU"
    assert listed[1]["spacing_mm"] == pytest.approx([0.451172, 0.451172, 5.0])
    text = cli("info", path)
    assert text.code == 0 and text.out.count("action") == len(SERIES)


def test_a_series_is_chosen_by_its_uid_from_the_top_of_the_tree(cli, corpus):
    listed = json.loads(cli("info", "--json", corpus / STUDY).out)
    uid = listed[2]["series_uid"]
    volume = read_volume(corpus / STUDY, series=uid)
    assert volume.shape == (512, 512, 6) and volume.meta["series_uid"] == uid
    result = cli("info", "--json", "--series", uid, corpus / STUDY / "DICOMDIR")
    assert result.code == 0, result.err
    (entry,) = json.loads(result.out)
    assert entry["shape"] == [512, 512, 6] and entry["min"] < -1000


def test_a_study_run_passes_over_what_is_no_volume_and_exits_0(cli, corpus, tmp_path,
                                                               tiny_model):
    study = tmp_path / "study"
    for folder in ("S21570/S1000", "S21570/S4010", "S21570/S2010", "S21610/S4010"):
        shutil.copytree(corpus / STUDY / folder, study / folder)
    shutil.copy(corpus / STUDY / "DICOMDIR", study / "DICOMDIR")

    result = cli("infer", study, "-o", tmp_path / "out", "--model", tiny_model)

    assert result.code == 0, result.err
    assert result.out.splitlines() == [f"wrote {tmp_path / 'out' / 'S21570__S2010.nii.gz'}"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["S21570__S2010.nii.gz"]
    passed = [line for line in result.err.splitlines() if line.startswith("passing over")]
    assert len(passed) == 3 and "localizer" in passed[0] and "secondary capture" in passed[1]


def test_a_corrected_series_says_so_in_its_output(cli, corpus, tmp_path, tiny_model):
    folder = corpus / STUDY / "S21610/S2010"
    listed = json.loads(cli("info", "--json", corpus / STUDY).out)
    uid = listed[5]["series_uid"]
    out = tmp_path / "tilted.nii.gz"
    result = cli("infer", corpus / STUDY, "--series", uid, "-o", out, "--model", tiny_model)
    assert result.code == 0, result.err
    warned = [line for line in result.err.splitlines() if line.startswith("warning:")]
    assert len(warned) == 1 and str(folder) in warned[0] and "largest correction" in warned[0]
    header = nib.load(out).header
    assert header["descrip"].tobytes().startswith(b"revmed: DICOM slices resampled")
    (comment,) = [e.get_content() for e in header.extensions]
    assert b"18.5 degrees off their normal (gantry tilt)" in comment


def test_strict_refuses_the_tilted_series_and_says_how_to_read_it(cli, corpus, tmp_path,
                                                                  tiny_model):
    folder = corpus / STUDY / "S21610/S2010"
    result = cli("infer", folder, "-o", tmp_path / "x.nii.gz", "--model", tiny_model,
                 "--dicom-geometry", "strict", "-q")
    assert result.code == 2 and not (tmp_path / "x.nii.gz").exists()
    (line,) = result.err.splitlines()
    assert line.startswith(f"error: {folder}: slices step 18.5 degrees off their normal")
    assert line.endswith("--dicom-geometry resample reads it onto a regular grid")
    assert cli("info", folder, "--dicom-geometry", "sheared").code == 2


def test_the_cases_of_a_study_tree_skip_what_is_no_volume(corpus):
    cases = find_cases(corpus / STUDY / "DICOMDIR")
    assert sorted(cases) == sorted(f.replace("/", "__") for f, _, _ in SERIES)
    skipped = sorted(name for name, case in cases.items() if case.skip)
    assert skipped == ["S21570__S1000", "S21570__S4010", "S21610__S4010"]
    assert all(case.problem is None for case in cases.values())


def test_a_split_series_gives_one_case_per_volume(corpus):
    cases = find_cases(corpus / "philips_mr_enhanced")
    assert sorted(cases) == sorted(f"{uid}__echo{n}" for uid in
                                   {c.series.split(":")[0] for c in cases.values()}
                                   for n in (1, 2))
    for case in cases.values():
        assert read_volume(case.files[0], case.series).shape == (64, 64, 32)
