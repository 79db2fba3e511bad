"""Running over a batch's targets from the library: parts, skipped outputs, failures."""

from __future__ import annotations

import numpy as np
import pytest

from revmed.errors import InputError, OutputError
from revmed.io import Volume, make_affine, write_volume
from revmed.io.batch import Events, check_batch_options, run_targets, select_targets
from revmed.io.targets import plan_targets


def _batch(tmp_path, names):
    for i, name in enumerate(names):
        write_volume(Volume(np.full((1, 4, 4, 4), i, np.float32), make_affine((1, 1, 1))),
                     tmp_path / "in" / f"{name}.nii.gz")
    return plan_targets([tmp_path / "in"], tmp_path / "out")


def test_parts_are_every_kth_case_and_existing_outputs_are_skipped_or_refused(tmp_path):
    plan = _batch(tmp_path, ["a", "b", "c", "d", "e"])
    assert [t.name for t in select_targets(plan, 2, 1)] == ["b", "d"]
    (tmp_path / "out").mkdir()
    write_volume(Volume(np.zeros((1, 2, 2, 2), np.float32), make_affine((1, 1, 1))),
                 tmp_path / "out" / "a.nii.gz")
    (tmp_path / "out" / "c.nii.gz").write_bytes(b"torn")  # does not read: redone
    notes = []
    kept = select_targets(plan, skip_existing=True, note=notes.append)
    assert [t.name for t in kept] == ["b", "c", "d", "e"]
    assert any(n.startswith(f"redoing {tmp_path / 'out' / 'c.nii.gz'}") for n in notes)
    assert "skipping 1 existing output(s)" in notes
    with pytest.raises(OutputError, match="a.nii.gz: exists"):
        select_targets(plan)
    with pytest.raises(InputError, match="contradict"):
        check_batch_options(True, True)


def test_a_failed_case_is_reported_and_the_batch_goes_on(tmp_path):
    plan = _batch(tmp_path, ["a", "b", "c"])
    failed, done = [], []

    def work(target):
        if target.name == "b":
            raise InputError(f"{target.case.files[0]}: cannot be read")
        target.path.write_text("done")
        done.append(target.name)

    with pytest.raises(InputError, match=r"1 of 3 case\(s\) failed .*b.nii.gz.*the other 2 "
                                         "were written"):
        run_targets(plan.targets, plan, tmp_path / "out", False, work,
                    events=Events(failed=failed.append))
    assert done == ["a", "c"] and len(failed) == 1 and "cannot be read" in str(failed[0])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.nii.gz", "c.nii.gz"]
