"""`revmed eval`'s output files never destroy anything: not an existing file (unless
--overwrite), never one of the volumes it evaluates, never its own other output; and --json is
the stdout flag it is on every other command (the file is --json-out)."""

from __future__ import annotations

import json
import os

import pytest

SPACING = (1.0, 1.0, 2.0)


def _refused(result, *needles):
    assert result.code == 2, (result.out, result.err)
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.err
    for needle in needles:
        assert str(needle) in lines[0], (needle, lines[0])
    assert result.out == ""


@pytest.fixture
def pair(write, smooth):
    ref = smooth((16, 16, 16))
    return write("pred.nii.gz", ref + 10.0, SPACING), write("ref.nii.gz", ref, SPACING)


@pytest.mark.parametrize("option", ["--json-out", "--csv", "--png"])
def test_an_existing_output_is_kept_unless_overwrite(cli, pair, tmp_path, option):
    pred, ref = pair
    target = tmp_path / ("out.png" if option == "--png" else "out.txt")
    target.write_bytes(b"someone's notes")
    _refused(cli("eval", pred, ref, option, target, "--quiet"), target, "exists",
             "--overwrite")
    assert target.read_bytes() == b"someone's notes"
    replaced = cli("eval", pred, ref, option, target, "--quiet", "--overwrite")
    assert replaced.code == 0, replaced.err
    assert target.read_bytes() != b"someone's notes"


@pytest.mark.parametrize("option", ["--json-out", "--csv", "--png"])
@pytest.mark.parametrize("which", ["prediction", "reference", "mask", "a link to the reference"])
def test_an_output_is_never_one_of_the_evaluated_files(cli, pair, write, smooth, tmp_path,
                                                       option, which):
    pred, ref = pair
    mask = write("mask.nii.gz", smooth((16, 16, 16)) > 0, SPACING)
    target = {"prediction": pred, "reference": ref, "mask": mask}.get(which)
    if target is None:
        target = tmp_path / "link.nii.gz"
        os.symlink(ref, target)
    before = {p: p.read_bytes() for p in (pred, ref, mask)}
    result = cli("eval", pred, ref, "--mask", mask, option, target, "--overwrite", "--quiet")
    role = "reference" if which.startswith("a link") else which
    _refused(result, target, f"is the {role}", "must not replace an input")
    assert {p: p.read_bytes() for p in (pred, ref, mask)} == before


def test_two_outputs_on_one_path_are_refused(cli, pair, tmp_path):
    pred, ref = pair
    same = tmp_path / "report.txt"
    _refused(cli("eval", pred, ref, "--json-out", same, "--csv", same, "--quiet"), same,
             "named for both the JSON report and the CSV table", "--csv")
    assert not same.exists()


def test_a_preview_in_a_folder_is_not_replaced_silently(cli, write, smooth, tmp_path):
    for i in range(2):
        volume = smooth((16, 16, 16), seed=i)
        write(f"ref/case_{i}.nii.gz", volume, SPACING)
        write(f"pred/case_{i}.nii.gz", volume + 1, SPACING)
    (tmp_path / "png").mkdir()
    (tmp_path / "png" / "case_1.png").write_bytes(b"kept")
    _refused(cli("eval", tmp_path / "pred", tmp_path / "ref", "--png", tmp_path / "png"),
             "case_1.png", "exists")
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == ["case_1.png"]


def test_json_is_a_flag_and_json_out_the_file(cli, pair, tmp_path):
    pred, ref = pair
    printed = cli("eval", pred, ref, "--json")
    assert printed.code == 0 and printed.err == ""
    assert json.loads(printed.out)["cases"][0]["prediction"]["mae"] == pytest.approx(10, 1e-5)
    written = cli("eval", pred, ref, "--json-out", tmp_path / "r.json", "--quiet")
    assert written.code == 0 and json.loads((tmp_path / "r.json").read_text())["cases"]
    # the stdout form of revmed 0.1, `--json -`, still works wherever the "-" stands
    for args in (("--json", "-", pred, ref), (pred, ref, "--json", "-")):
        old = cli("eval", *args)
        assert old.code == 0 and json.loads(old.out) == json.loads(printed.out)


@pytest.mark.parametrize("where", ["before", "after"])
def test_json_with_a_file_name_says_what_changed(cli, pair, tmp_path, where):
    pred, ref = pair
    report = tmp_path / "old-script.json"
    args = (("--json", report, pred, ref) if where == "before"
            else (pred, ref, "--json", report))
    _refused(cli("eval", *args), f"--json {report}", "no longer takes a file name",
             f"--json-out {report}")
    assert not report.exists()


def test_a_full_disk_while_the_png_is_written_is_one_line(cli, pair, tmp_path, monkeypatch):
    """ITK's PNG writer raises a RuntimeError on a full disk: before, a traceback."""
    import SimpleITK as sitk

    def full(image, path, *args, **kwargs):
        raise RuntimeError("Exception thrown in SimpleITK ImageFileWriter_Execute: x.cxx:567:"
                           f"\nITK ERROR: PNGImageIO(0x1): Error while writing Slice to file: "
                           f"{path}\nReason: No space left on device")

    monkeypatch.setattr(sitk, "WriteImage", full)
    png = tmp_path / "preview.png"
    result = cli("eval", *pair, "--png", png)
    assert result.code == 2 and not png.exists()
    (line,) = [x for x in result.err.splitlines() if x.startswith("error:")]
    assert line == (f"error: {png}: cannot write the PNG (No space left on device); the file "
                    "is unchanged")
