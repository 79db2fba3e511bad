"""`revmed train` / `revmed infer` for segmentation (brats-seg family) on tiny volumes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from revmed.data.synthetic import synthesize
from revmed.io import read_volume

TINY = ["patch.size=[16,16,16]", "patch.per_volume=1", "model.width=4", "model.scales=2",
        "model.blocks_per_scale=1", "train.epochs=1", "train.epochs_decay=0", "train.batch_size=2"]


@pytest.fixture(scope="module")
def seg_run(tmp_path_factory):
    from revmed.cli.app import run
    root = tmp_path_factory.mktemp("seg")
    synthesize("brats-seg", root / "data", cases=3, seed=2, shape=(24, 20, 16))
    args = ["train", "--preset", "demo-seg", "--data", str(root / "data"), "--out",
            str(root / "run"), "--quiet"]
    for item in TINY:
        args += ["--set", item]
    assert run(args) == 0
    return root


def test_training_logs_dice_per_region(seg_run):
    (record,) = [json.loads(line) for line in
                 (seg_run / "run" / "metrics.jsonl").read_text().splitlines()]
    regions = ("val_dice_ET", "val_dice_TC", "val_dice_WT")
    assert {*regions, "val_dice", "val_dice_worst", "loss"} <= set(record)
    assert all(0.0 <= record[k] <= 1.0 for k in regions)
    assert record["val_dice_worst"] == min(record[k] for k in regions)


def test_infer_writes_a_label_map_on_the_input_grid(cli, seg_run, tmp_path):
    case = sorted((seg_run / "data" / "test" / "images").iterdir())[0]
    files = [case / f"{c}.nii.gz" for c in ("t1", "t1ce", "t2", "flair")]
    model = seg_run / "run" / "best.pt"
    result = cli("infer", *files, "-o", tmp_path / "seg.nii.gz", "--model", model, "--quiet")
    assert result.code == 0, result.err
    labels, image = read_volume(tmp_path / "seg.nii.gz"), read_volume(files[0])
    assert labels.shape == image.shape and labels.channels == 1
    np.testing.assert_allclose(labels.affine, image.affine, atol=1e-6)
    assert set(np.unique(labels.array)) <= {0, 1, 2, 4}
    import nibabel as nib
    assert nib.load(tmp_path / "seg.nii.gz").get_data_dtype() == np.uint8
    # a folder of case folders (one file per channel) -> one label map per case
    batch = cli("infer", seg_run / "data" / "test" / "images", "-o", tmp_path / "out",
                "--model", model, "--quiet")
    assert batch.code == 0, batch.err
    assert [p.name for p in (tmp_path / "out").iterdir()] == [f"{case.name}.nii.gz"]
    np.testing.assert_array_equal(read_volume(tmp_path / "out" / f"{case.name}.nii.gz").array,
                                  labels.array)


def test_segmentation_refuses_reverse_and_wrong_channel_counts(cli, seg_run, tmp_path):
    case = sorted((seg_run / "data" / "test" / "images").iterdir())[0]
    model = seg_run / "run" / "best.pt"
    reverse = cli("infer", *sorted(case.iterdir()), "-o", tmp_path / "a.nii.gz", "--model",
                  model, "--reverse")
    assert reverse.code == 2 and "reverse" in reverse.err
    one = cli("infer", case / "t1.nii.gz", "-o", tmp_path / "b.nii.gz", "--model", model)
    assert one.code == 2 and "expects 4" in one.err and not (tmp_path / "b.nii.gz").exists()


def _label_volume(path, labels, spacing=(1.0, 1.0, 2.0)):
    from revmed.io import Volume, make_affine, write_volume
    return write_volume(Volume(labels[None].astype(np.float32), make_affine(spacing)), path,
                        dtype=np.uint8)


def test_eval_regions_by_hand(cli, tmp_path):
    """Dice, sensitivity and HD95 of hand-made label maps, per region, in the JSON report."""
    ref = np.zeros((12, 12, 12), np.uint8)
    ref[2:8, 2:8, 2:8] = 2          # oedema block: WT
    ref[4:6, 4:6, 4:6] = 4          # enhancing core: ET, TC, WT
    pred = ref.copy()
    pred[6:8, 2:8, 2:8] = 0         # misses two oedema planes along i
    _label_volume(tmp_path / "pred.nii.gz", pred)
    _label_volume(tmp_path / "ref.nii.gz", ref)
    result = cli("eval", tmp_path / "pred.nii.gz", tmp_path / "ref.nii.gz", "--regions", "brats",
                 "--json", "-")
    assert result.code == 0, result.err
    (case,) = json.loads(result.out)["cases"]
    assert case["ET"]["dice"] == 1.0 and case["TC"]["dice"] == 1.0 and case["ET"]["hd95"] == 0
    wt_ref, wt_pred = 6 ** 3, 4 * 6 * 6
    assert case["WT"]["dice"] == pytest.approx(2 * wt_pred / (wt_ref + wt_pred))
    assert case["WT"]["sensitivity"] == pytest.approx(wt_pred / wt_ref)
    assert case["WT"]["hd95"] == pytest.approx(2.0)  # two 1 mm planes along i
    bad = cli("eval", tmp_path / "pred.nii.gz", tmp_path / "ref.nii.gz", "--regions", "brats",
              "--data-range", "3")
    assert bad.code == 2 and "--regions" in bad.err


def test_library_loaders_take_their_own_model_family(cli, seg_run, tmp_path):
    """``Segmenter.load`` runs a segmentation checkpoint as ``revmed infer`` does;
    ``Translator.load`` refuses it, naming the file."""
    from revmed.errors import CheckpointError
    from revmed.inference import Segmenter, Translator
    from revmed.io import read_channels

    case = sorted((seg_run / "data" / "test" / "images").iterdir())[0]
    files = [case / f"{c}.nii.gz" for c in ("t1", "t1ce", "t2", "flair")]
    model = seg_run / "run" / "best.pt"
    assert cli("infer", *files, "-o", tmp_path / "cli.nii.gz", "--model", model,
               "--quiet").code == 0
    labels = Segmenter.load(model).segment(read_channels(files))
    np.testing.assert_array_equal(labels.array, read_volume(tmp_path / "cli.nii.gz").array)
    with pytest.raises(CheckpointError, match=str(model)):
        Translator.load(model)
