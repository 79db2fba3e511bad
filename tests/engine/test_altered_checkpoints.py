"""Checkpoints whose checksum is valid but whose contents were altered (by hand, by a tool, by
an attacker who re-sealed the file) are refused with one line before anything is built, and so
are files too large to load."""

from __future__ import annotations

import io
import os
import time

import numpy as np
import pytest
import torch

from revmed import checkpoint as ckpt
from revmed import sizes
from revmed.checkpoint import load_checkpoint, read_payload, write_payload
from revmed.errors import RevmedError
from revmed.io import Volume, make_affine, write_volume


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    array = np.random.default_rng(0).uniform(-1000, 300, (1, 8, 8, 6)).astype(np.float32)
    return write_volume(Volume(array, make_affine((1.0, 1.0, 2.0))),
                        tmp_path_factory.mktemp("scan") / "ct.nii.gz")


def _altered(source, target, change):
    payload = read_payload(source)
    for key in ("format", "version", "revmed"):
        payload.pop(key)
    change(payload)
    return write_payload(target, payload)  # sealed again: the checksum is valid


def _del(*keys):
    def change(payload):
        node = payload
        for key in keys[:-1]:
            node = node[key]
        del node[keys[-1]]
    return change


def _set(value, *keys):
    def change(payload):
        node = payload
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value
    return change


def _huge(payload):  # consistently huge: card and preset agree on a width of a million
    payload["model"]["kwargs"]["width"] = 1_000_000
    payload["preset"]["model"]["width"] = 1_000_000


def _strip_preset_model(payload):  # a hand-made card: the preset does not state [model]
    del payload["preset"]["model"]
    payload["model"]["kwargs"]["bogus"] = 1


ALTERATIONS = {
    "no patch size": (_del("patch_size"), "patch_size"),
    "no kwargs": (_del("model", "kwargs"), "kwargs"),
    "no weights": (_del("state", "generator"), "no network weights"),
    "no window": (_del("data", "window"), "window"),
    "another width": (_set(6, "model", "kwargs", "width"), "width = 6"),
    "unknown kwarg": (_set(1, "model", "kwargs", "bogus"), "unknown network argument 'bogus'"),
    "unknown kwarg, no preset model": (_strip_preset_model, "does not describe a revgan3d"),
    "sr_factors 0": (_set([0, 1, 1], "data", "sr_factors"), "data.sr_factors"),
    "overlap 1.5": (_set(1.5, "preset", "infer", "overlap"), "infer.overlap"),
    "precision fp8": (_set("fp8", "preset", "infer", "precision"), "infer.precision"),
    "blend bogus": (_set("bogus", "preset", "infer", "blend"), "infer.blend"),
    "a weight's shape": (None, "do not fit its model card"),
    "a string version": (None, "format version"),
    "a width of a million": (_huge, "refused before allocating"),
    "a segmentation task": (_set("seg", "preset", "task"), "task 'seg' for a revgan3d network"),
    "a negative epoch": (_set(-5, "epoch"), "its epoch is -5, not 0 to"),
    "an epoch beyond the run": (_set(10**9, "epoch"), "its epoch is 1000000000, not 0 to"),
    "a fractional step": (_set(2.5, "step_in_epoch"), "its step_in_epoch is 2.5"),
    "metrics that are no table": (_set([1, 2], "metrics"), "its metrics are not a table"),
}


@pytest.mark.parametrize("name", list(ALTERATIONS))
def test_an_altered_checkpoint_is_one_line_before_anything_is_built(cli, sr_model, scan,
                                                                    tmp_path, name):
    change, needle = ALTERATIONS[name]
    path = tmp_path / "altered.pt"
    if name == "a string version":  # write_payload sets the version: seal it by hand
        full = read_payload(sr_model)
        full["version"] = "abc"
        buffer = io.BytesIO()
        torch.save(full, buffer)
        path.write_bytes(ckpt._seal(buffer.getvalue()))
    else:
        if name == "a weight's shape":
            first = next(iter(read_payload(sr_model)["state"]["generator"]))
            change = _set(torch.zeros(3, 3), "state", "generator", first)
        _altered(sr_model, path, change)
    start = time.monotonic()
    result = cli("infer", scan, "-o", tmp_path / "out.nii.gz", "--model", path, "--quiet")
    assert result.code == 2, (name, result.err)
    errors = [line for line in result.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.err, result.err
    assert str(path) in errors[0] and needle in errors[0], errors[0]
    assert "OOM" not in result.err and not (tmp_path / "out.nii.gz").exists()
    assert time.monotonic() - start < 30
    with pytest.raises(RevmedError):
        load_checkpoint(path)


def test_a_step_beyond_its_epoch_is_one_line_on_resume(cli, sr_data, tiny_sr, sr_model,
                                                       tmp_path):
    """Before, a resealed last.pt with step_in_epoch 1e9 resumed and logged an epoch that
    trained nothing."""
    run = tmp_path / "run"
    run.mkdir()
    _altered(sr_model, run / "last.pt", _set(10**9, "step_in_epoch"))
    result = cli("train", "--preset", "demo-sr", "--data", sr_data, "--out", run, "--resume",
                 "--quiet", *[a for s in (*tiny_sr, "train.epochs=2") for a in ("--set", s)])
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1, result.err
    assert "records step 1000000000 of epoch 2, which has 2 steps" in result.err
    assert not (run / "metrics.jsonl").exists()  # no epoch logged


def test_an_altered_training_state_is_one_line_on_resume(cli, sr_data, tiny_sr, sr_model,
                                                         tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    _altered(sr_model, run / "last.pt", _del("state", "opt_g"))
    result = cli("train", "--preset", "demo-sr", "--data", sr_data, "--out", run, "--resume",
                 "--quiet", *[a for s in (*tiny_sr, "train.epochs=2") for a in ("--set", s)])
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1, result.err
    assert "training state does not fit this run" in result.err and "opt_g" in result.err


@pytest.fixture
def six_gigabytes(tmp_path):
    """A sparse 6 GiB file (no disk used) that starts like a zip archive and ends like a
    sealed revmed checkpoint."""
    path = tmp_path / "huge.pt"
    with open(path, "wb") as handle:
        handle.write(b"PK\x03\x04")
        handle.truncate(6 << 30)
        handle.seek((6 << 30) - ckpt._TRAILER)
        handle.write(ckpt._MARK + b"0" * 64)
    return path


def test_a_huge_file_is_refused_before_it_is_read(six_gigabytes, monkeypatch):
    monkeypatch.setattr(sizes, "available_memory", lambda: 1 << 30)

    def no_hashing(*args):
        raise AssertionError("the file was hashed before the refusal")
    monkeypatch.setattr(ckpt.hashlib, "sha256", no_hashing)
    start = time.monotonic()
    with pytest.raises(RevmedError, match="6 GiB checkpoint would need about 6 GiB of memory, "
                                          "but only 1 GiB is available"):
        read_payload(six_gigabytes)
    assert time.monotonic() - start < 1


def test_a_huge_file_that_is_not_a_checkpoint_is_refused_at_once(tmp_path):
    path = tmp_path / "zeros.pt"
    with open(path, "wb") as handle:
        handle.truncate(6 << 30)
    start = time.monotonic()
    with pytest.raises(RevmedError, match="not the zip archive torch.save writes"):
        read_payload(path)
    assert time.monotonic() - start < 1


def test_the_checksum_is_verified_without_reading_the_file_into_memory(tmp_path):
    """The digest is computed chunk by chunk: Python's own allocations (where a whole-file
    read lands; tensors are allocated by torch) stay far below the file's size."""
    import tracemalloc

    path = write_payload(tmp_path / "big.pt", {"state": {"w": torch.zeros(10 << 20)}})
    assert os.path.getsize(path) > 40 << 20
    tracemalloc.start()
    try:
        read_payload(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, peak
