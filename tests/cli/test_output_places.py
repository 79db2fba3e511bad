"""Output places that cannot hold an output: one error line, exit code 2, before any work."""

from __future__ import annotations

import errno
import tempfile

import pytest


@pytest.fixture
def data(cli, tmp_path):
    folder = tmp_path / "data"
    assert cli("synth", "chestct-sr", folder, "--cases", "3", "--shape", "16,16,16",
               "-q").code == 0
    return folder


@pytest.mark.parametrize("place", ["a file", "under a file", "read-only"])
def test_patchify_refuses_a_place_that_cannot_hold_patches(cli, data, tmp_path, monkeypatch,
                                                           place):
    (tmp_path / "afile").write_text("mine")
    out = {"a file": tmp_path / "afile", "under a file": tmp_path / "afile" / "sub",
           "read-only": tmp_path / "ro" / "patches"}[place]
    expected = {"a file": "is a file, not a folder for patches",
                "under a file": f"cannot write there: {tmp_path / 'afile'} is not a folder",
                "read-only": "cannot write there (Read-only file system)"}[place]
    if place == "read-only":  # what a read-only mount answers to creating a file
        def refuse(*args, **kwargs):
            raise OSError(errno.EROFS, "Read-only file system")
        monkeypatch.setattr(tempfile, "mkstemp", refuse)
    result = cli("patchify", data, out, "--preset", "demo-sr")
    assert result.code == 2
    (line,) = result.err.splitlines()
    assert line == f"error: {out}: {expected}"
    assert (tmp_path / "afile").read_text() == "mine" and not (tmp_path / "ro").exists()
