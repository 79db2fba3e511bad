"""Small promises the command line keeps: one line per error, the path the user typed in the
message, outputs where the user asked for them, one rule for seeds, plans within what a preset
may state, cases that are cases, resumed runs on their own data, DICOM values kept."""

from __future__ import annotations

import errno
import json
import os
import warnings

import numpy as np
import pytest

from revmed.io import Volume, make_affine, read_volume, write_volume


def _volume(path, seed=0, shape=(12, 12, 10)):
    array = np.random.default_rng(seed).uniform(-1000, 300, (1, *shape)).astype(np.float32)
    return write_volume(Volume(array, make_affine([1.0, 1.0, 2.0])), path)


@pytest.mark.parametrize(("args", "start"), [
    (["infer", "x", "-o", "y", "--num-parts", "0"], "invalid value for --num-parts: "),
    (["infer", "x", "-o", "y", "--overlap", "1.5"], "invalid value for --overlap: "),
    (["selfsr", "x", "-o", "y", "--steps", "0"], "invalid value for --steps: "),
    (["selfsr", "x", "-o", "y", "--orientations", "3"], "invalid value for --orientations: "),
    (["infer", "x", "-o", "y", "--bogus"], "no such option: --bogus"),
    (["infer"], "missing argument INPUT..."),
])
def test_a_usage_error_is_one_line(cli, args, start):
    result = cli(*args)
    assert result.code == 2
    (line,) = result.err.splitlines()  # before: click's four-line usage block
    assert line.startswith(f"error: {start}") and line.endswith(f"(see revmed {args[0]} --help)")


@pytest.mark.parametrize("typed", ["report", "r.txt", "r.json"])
def test_json_with_a_file_names_the_file_typed(cli, tmp_path, typed):
    volume = _volume(tmp_path / "v.nii.gz")
    result = cli("eval", volume, volume, "--json", typed)
    assert result.code == 2
    assert result.err.strip() == (f"error: --json {typed}: --json no longer takes a file name, "
                                  "it prints the report on stdout; to write a file use "
                                  f"--json-out {typed}")  # before: "FILE" for some names


def test_a_trailing_slash_names_a_folder(cli, tmp_path):
    volume = _volume(tmp_path / "v.nii.gz")
    png = f"{tmp_path / 'previews'}/"
    result = cli("eval", volume, volume, "--png", png, "--data-range", "1300")
    assert result.code == 0, result.err
    assert sorted(p.name for p in (tmp_path / "previews").iterdir()) == ["v.png"]
    for option in ("--json-out", "--csv"):
        result = cli("eval", volume, volume, option, f"{tmp_path / 'j'}/")
        assert result.code == 2 and "names a folder; give a file name" in result.err
    assert not (tmp_path / "j").exists()  # before: a plain file named j


def test_a_file_where_a_folder_should_be_is_named(cli, tmp_path):
    volume = _volume(tmp_path / "v.nii.gz")
    (tmp_path / "notes.txt").write_text("mine")
    result = cli("eval", volume, volume, "--csv", tmp_path / "notes.txt" / "x.csv")
    assert result.code == 2
    assert f"cannot write there: {tmp_path / 'notes.txt'} is a file, not a folder" in result.err


def test_synth_on_a_full_disk_names_the_dataset_not_its_hidden_folder(cli, tmp_path,
                                                                      monkeypatch):
    from revmed.io import atomic

    def full(path):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(atomic, "sync_path", full)
    result = cli("synth", "chestct-sr", tmp_path / "data", "--cases", "2", "--shape",
                 "16,16,16", "-q")
    assert result.code == 2
    assert result.err.strip() == (f"error: {tmp_path / 'data'}: cannot write the dataset (No "
                                  "space left on device); nothing was written")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("seed", ["-5", "4294967296"])
def test_every_command_takes_the_seeds_train_takes(cli, tmp_path, seed):
    synth = cli("synth", "chestct-sr", tmp_path / "data", "--seed", seed)
    assert synth.code == 2
    assert synth.err.strip() == f"error: --seed {seed}: must be a whole number from 0 to 4294967295"
    assert cli("synth", "chestct-sr", tmp_path / "data", "--cases", "3", "--shape",
               "16,16,16", "-q").code == 0
    patchify = cli("patchify", tmp_path / "data", tmp_path / "p", "--preset", "demo-sr",
                   "--seed", seed)
    assert patchify.code == 2 and patchify.err == synth.err and not (tmp_path / "p").exists()
    train = cli("train", "--preset", "demo-sr", "--data", tmp_path / "data", "--out",
                tmp_path / "run", "--seed", seed)
    assert train.code == 2 and "seed" in train.err


def test_plan_never_suggests_a_patch_a_preset_cannot_state(cli):
    result = cli("plan", "--preset", "demo-sr", "--memory", "100000000TiB", "--json")
    assert result.code == 0, result.err
    largest = json.loads(result.out)["largest_patch"]
    assert largest["patch"] == [1024, 1024, 1024] and largest["capped"]


def test_links_to_the_folder_itself_are_failed_cases_not_channels(cli, tiny_model, tmp_path):
    batch = tmp_path / "batch"
    batch.mkdir()
    for name in ("a", "b"):
        _volume(batch / f"{name}.nii.gz")
    os.symlink(".", batch / "self")
    os.symlink("..", batch / "up")
    result = cli("infer", batch, "-o", tmp_path / "out", "--model", tiny_model, "-q")
    assert result.code == 2
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.nii.gz", "b.nii.gz"]
    for name in ("self", "up"):
        assert f"error: {batch / name}: a symbolic link to {batch} or a folder above it" \
               in result.err


def test_outputs_inside_their_input_folder_are_refused(cli, tiny_model, tmp_path):
    batch = tmp_path / "batch"
    batch.mkdir()
    _volume(batch / "a.nii.gz")
    result = cli("infer", batch, "-o", batch / "out", "--model", tiny_model, "-q")
    assert result.code == 2 and not (batch / "out").exists()
    assert "is inside INPUT" in result.err and "taken for a case of it" in result.err


def test_a_spike_does_not_coarsen_every_dicom_value(tmp_path):
    array = np.random.default_rng(0).uniform(-100, 100, (1, 16, 16, 8)).astype(np.float32)
    array[0, 3, 3, 3] = 1e6
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        write_volume(Volume(array, make_affine([1, 1, 1])), tmp_path / "dcm", format="dicom")
    assert any("1 voxel(s) far outside the others' range" in str(w.message) for w in said)
    back = read_volume(tmp_path / "dcm").array
    others = np.ones(array.shape, bool)
    others[0, 3, 3, 3] = False
    assert np.abs(back - array)[others].max() < 0.01  # before: up to 21 (a 1e6 / 65534 step)


def test_a_derived_series_number_stays_an_integer_string(tmp_path):
    import pydicom

    from revmed.io.dicom.write import derived_number

    assert derived_number("7", 1000) == 1007
    assert derived_number(str(2**31 - 100), 1000) == 1000  # source + 1000 would overflow IS
    assert derived_number("", 1000) == 1000 and derived_number(None, 2000) == 2000
    volume = Volume(np.zeros((1, 4, 4, 3), np.float32), make_affine([1, 1, 1]))
    write_volume(volume, tmp_path / "a", format="dicom")
    first = pydicom.dcmread(sorted((tmp_path / "a").iterdir())[0])
    assert int(first.SeriesNumber) == 1000
