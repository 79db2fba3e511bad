"""``infer_files``: what ``revmed infer`` does, called from a script, with its events."""

from __future__ import annotations

import numpy as np
import pytest

from revmed.errors import InputError
from revmed.inference import load_predictor
from revmed.inference.files import infer_files
from revmed.io import Volume, make_affine, read_volume, write_volume
from revmed.io.batch import Events


def test_a_batch_from_a_script_says_what_it_did_and_matches_the_predictor(tiny_model, tmp_path):
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        write_volume(Volume(rng.uniform(-1000, 300, (1, 12, 12, 10)).astype(np.float32),
                            make_affine((1, 1, 2))), tmp_path / "in" / f"{name}.nii.gz")
    (tmp_path / "in" / "c.nii.gz").write_bytes(b"not a volume")
    notes, wrote, failed = [], [], []
    events = Events(note=notes.append, wrote=wrote.append, failed=failed.append)
    with pytest.raises(InputError, match=r"1 of 3 case\(s\) failed"):
        infer_files([tmp_path / "in"], tmp_path / "out", tiny_model, events=events)
    assert wrote == [tmp_path / "out" / "a.nii.gz", tmp_path / "out" / "b.nii.gz"]
    assert f"model: {tiny_model}" in notes and len(failed) == 1
    expected = load_predictor(tiny_model).predict(read_volume(tmp_path / "in" / "a.nii.gz"))
    np.testing.assert_allclose(read_volume(wrote[0]).array, expected.array, atol=1e-4)
    with pytest.raises(InputError, match="--dtype int8"):  # checked before any work
        infer_files([tmp_path / "in"], tmp_path / "out2", tiny_model, dtype="int8")
    assert not (tmp_path / "out2").exists()
