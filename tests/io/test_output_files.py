"""Output files: the permissions a plain open() gives (not mkstemp's 0600), and a full disk as
one error line that leaves nothing half-written."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from revmed.checkpoint import write_payload
from revmed.errors import OutputError
from revmed.io import Volume, atomic, make_affine, write_volume


@pytest.fixture
def umask():
    """``umask(mask)`` sets the process's umask for the test."""
    saved = os.umask(0o022)
    os.umask(saved)
    yield os.umask
    os.umask(saved)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _outputs(folder: Path) -> list[Path]:
    volume = Volume(np.zeros((1, 4, 4, 4), np.float32), make_affine((1, 1, 1)))
    with atomic.atomic_path(folder / "plain.txt") as tmp:
        tmp.write_text("x")
    return [folder / "plain.txt", write_volume(volume, folder / "v.nii.gz"),
            write_volume(volume, folder / "v.nrrd"), write_volume(volume, folder / "v.mha"),
            write_payload(folder / "c.pt", {"state": {"w": torch.zeros(2)}})]


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002])
def test_outputs_get_the_mode_a_plain_open_gives(tmp_path, umask, mask):
    umask(mask)
    with open(tmp_path / "reference", "w"):
        pass
    expected = _mode(tmp_path / "reference")
    assert expected == 0o666 & ~mask
    for path in _outputs(tmp_path):
        assert _mode(path) == expected, (path.name, oct(_mode(path)))


def test_a_replaced_output_keeps_the_mode_it_had(tmp_path, umask):
    umask(0o077)
    target = tmp_path / "shared.txt"
    target.write_text("old")
    target.chmod(0o664)  # made readable for the group on purpose
    with atomic.atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new" and _mode(target) == 0o664


def test_a_full_disk_is_an_output_error_and_the_target_is_left_as_it_was(tmp_path,
                                                                        monkeypatch):
    target = tmp_path / "out.txt"
    target.write_text("before")

    def full(path):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(atomic, "sync_path", full)
    with pytest.raises(OutputError, match=f"{target}: cannot write .No space left on device"):
        with atomic.atomic_path(target) as tmp:
            tmp.write_text("after")
    assert target.read_text() == "before"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def _disk_fills(monkeypatch, prefix: str = ""):
    real = atomic.sync_path

    def full(path):
        if Path(path).is_file() and Path(path).name.startswith(prefix):
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path)
    monkeypatch.setattr(atomic, "sync_path", full)


def test_a_full_disk_in_patchify_is_one_line(cli, tmp_path, monkeypatch):
    from revmed.data.synthetic import synthesize

    synthesize("chestct-sr", tmp_path / "data", cases=3, seed=0, shape=(16, 16, 12))
    _disk_fills(monkeypatch, ".case_")
    result = cli("patchify", tmp_path / "data", tmp_path / "patches", "--preset", "demo-sr",
                 "--set", "patch.size=[8,8,8]", "--quiet")
    assert result.code == 2 and result.err.count("\n") == 1, result.err
    assert "No space left on device" in result.err and "Traceback" not in result.err
    shards = tmp_path / "patches" / "shards"
    assert not [p for p in shards.iterdir() if ".tmp-" in p.name or p.suffix == ".npz"]
    monkeypatch.undo()
    again = cli("patchify", tmp_path / "data", tmp_path / "patches", "--preset", "demo-sr",
                "--set", "patch.size=[8,8,8]", "--quiet")
    assert again.code == 0, again.err


@pytest.mark.parametrize("option", ["--json-out", "--csv"])
def test_a_full_disk_in_eval_is_one_line(cli, tmp_path, monkeypatch, option):
    array = np.random.default_rng(0).normal(0, 100, (1, 8, 8, 8)).astype(np.float32)
    for name in ("pred", "ref"):
        write_volume(Volume(array + (name == "pred"), make_affine((1, 1, 1))),
                     tmp_path / f"{name}.nii.gz")
    _disk_fills(monkeypatch)
    target = tmp_path / "report.out"
    result = cli("eval", tmp_path / "pred.nii.gz", tmp_path / "ref.nii.gz", option, target,
                 "--quiet")
    assert result.code == 2 and result.err.count("\n") == 1, result.err
    assert f"{target}: cannot write (No space left on device)" in result.err
    assert not target.exists() and not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
