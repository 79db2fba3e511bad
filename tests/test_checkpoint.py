"""Checkpoint files: round trip, SHA-256 integrity, version 1 files, refusals."""

from __future__ import annotations

import io
import re

import pytest
import torch

import revmed
from revmed import checkpoint
from revmed.checkpoint import read_payload, write_payload
from revmed.errors import CheckpointError


def _payload():
    g = torch.Generator().manual_seed(0)
    return {"model": {"kind": "revgan3d", "kwargs": {"width": 4, "depth": 1, "residual": True}},
            "data": {"window": [-1150.0, 350.0], "sr_factors": [2, 2, 2], "intensity": "window"},
            "patch_size": [8, 8, 8], "epoch": 3, "metrics": {"loss": 0.25, "best": None},
            "state": {"generator": {"w": torch.randn(2, 3, 3, generator=g, dtype=torch.float64),
                                    "n": torch.tensor([1, 2, 3], dtype=torch.int64)},
                      "rng": torch.randint(0, 255, (16,), generator=g, dtype=torch.uint8)}}


def _assert_same(got, want, where="payload"):
    """Equal structure, types and values; tensors equal in dtype, shape and every element."""
    assert type(got) is type(want), where
    if isinstance(want, dict):
        assert got.keys() == want.keys(), where
        for key in want:
            _assert_same(got[key], want[key], f"{where}[{key!r}]")
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want), where
        for i, (a, b) in enumerate(zip(got, want)):
            _assert_same(a, b, f"{where}[{i}]")
    elif isinstance(want, torch.Tensor):
        assert got.dtype == want.dtype and torch.equal(got, want), where
    else:
        assert got == want, where


def _refused(path, what):
    return pytest.raises(CheckpointError, match=re.escape(str(path)) + ".*" + what)


@pytest.fixture
def saved(tmp_path):
    """A small checkpoint on disk and its bytes."""
    path = write_payload(tmp_path / "ckpt.pt", _payload())
    return path, path.read_bytes()


def test_round_trip_keeps_every_value_and_tensor(saved, tmp_path):
    path, _ = saved
    loaded = read_payload(path, kind="revgan3d")
    want = {"format": "revmed-checkpoint", "version": checkpoint.VERSION,
            "revmed": revmed.__version__, **_payload()}
    _assert_same(loaded, want)
    # still an ordinary torch checkpoint holding the same dict, and nothing left behind
    _assert_same(torch.load(path, weights_only=True), want)
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_a_byte_changed_in_the_middle_is_refused(saved, tmp_path):
    _, data = saved
    bad = bytearray(data)
    bad[len(bad) // 2] ^= 0x01
    (tmp_path / "flipped.pt").write_bytes(bad)
    with _refused(tmp_path / "flipped.pt", "corrupt checkpoint: checksum mismatch"):
        read_payload(tmp_path / "flipped.pt")


def test_every_single_byte_change_is_refused(saved):
    """Zip headers, padding, the pickle, the tensors and the checksum comment alike."""
    path, data = saved
    with open(path, "r+b") as file:  # flip in place: rewriting the file each time is slow
        for i in range(len(data)):
            file.seek(i)
            file.write(bytes([data[i] ^ 0xFF]))
            file.flush()
            with pytest.raises(CheckpointError, match=re.escape(str(path))):
                read_payload(path)
            file.seek(i)
            file.write(data[i:i + 1])
            file.flush()
    read_payload(path)  # restored


def test_a_truncated_file_is_refused(saved):
    path, data = saved
    with open(path, "r+b") as file:
        for keep in reversed(range(len(data))):  # every length, cut in place
            file.truncate(keep)
            file.flush()
            with pytest.raises(CheckpointError, match=re.escape(str(path))):
                read_payload(path)


def test_a_version_2_file_without_its_checksum_is_refused(saved, tmp_path):
    path, _ = saved
    torch.save(torch.load(path, weights_only=True), tmp_path / "resaved.pt")  # drops the comment
    with _refused(tmp_path / "resaved.pt", "corrupt checkpoint: checksum missing"):
        read_payload(tmp_path / "resaved.pt")


def test_a_version_1_file_without_checksum_still_loads(tmp_path):
    old = {"format": "revmed-checkpoint", "version": 1, "revmed": "0.1.0", **_payload()}
    torch.save(old, tmp_path / "v1.pt")  # how version 1 wrote it
    loaded = read_payload(tmp_path / "v1.pt", kind="revgan3d")
    _assert_same(loaded, old)


class _Touch:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import pathlib
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_code_is_refused_even_under_a_valid_checksum(tmp_path):
    """A matching digest vouches for the bytes, not for their content: weights_only still rules."""
    marker = tmp_path / "pwned"
    buffer = io.BytesIO()
    torch.save({"format": "revmed-checkpoint", "version": 2, "x": _Touch(str(marker))}, buffer)
    (tmp_path / "evil.pt").write_bytes(checkpoint._seal(buffer.getvalue()))
    with _refused(tmp_path / "evil.pt", "pickled objects"):
        read_payload(tmp_path / "evil.pt")
    assert not marker.exists()


def test_a_newer_version_is_refused_with_upgrade_advice(tmp_path):
    buffer = io.BytesIO()
    torch.save({"format": "revmed-checkpoint", "version": checkpoint.VERSION + 1,
                "revmed": "99.0", **_payload()}, buffer)
    (tmp_path / "newer.pt").write_bytes(checkpoint._seal(buffer.getvalue()))
    with _refused(tmp_path / "newer.pt", r"format version 3 \(written by revmed 99.0\); this "
                  r"revmed \(0.1.0\) reads versions up to 2: upgrade"):
        read_payload(tmp_path / "newer.pt")


def test_a_truncated_checkpoint_says_so(tmp_path):
    """Before, a cut last.pt gave the zip reader's "internal miniz error" message."""
    path = write_payload(tmp_path / "whole.pt", _payload())
    data = path.read_bytes()
    for cut in (100, len(data) // 2, len(data) - 5):
        (tmp_path / "cut.pt").write_bytes(data[:cut])
        with _refused(tmp_path / "cut.pt", r"corrupt checkpoint: (truncated or damaged|checksum)"):
            read_payload(tmp_path / "cut.pt")
