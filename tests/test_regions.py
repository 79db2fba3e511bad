"""Label sets: any labels and regions a dataset declares, from dataset.toml through training,
the checkpoint, inference and evaluation; unknown label values refused at the dataset check."""

from __future__ import annotations

import json

import numpy as np
import pytest

from revmed.data.layout import load_dataset
from revmed.data.synthetic import synthesize
from revmed.errors import InputError
from revmed.io import read_volume, write_volume
from revmed.regions import BRATS, LabelSet

TINY = ["patch.size=[16,16,16]", "patch.per_volume=1", "model.width=4", "model.scales=2",
        "model.blocks_per_scale=1", "train.epochs=1", "train.batch_size=2"]
#: BraTS 2023 codes enhancing tumour as 3, not 4.
BRATS_2023 = ('[labels]\nNCR = 1\nED = 2\nET = 3\n'
              '[regions]\nET = ["ET"]\nTC = ["NCR", "ET"]\nWT = ["NCR", "ED", "ET"]\n')


def test_decoding_follows_the_smallest_predicted_region():
    logits = -np.ones((3, 1, 1, 5))
    logits[2, ..., 0] = 1                      # WT only -> oedema
    logits[1:, ..., 1] = 1                     # TC and WT -> necrotic core
    logits[0, ..., 2] = 1                      # ET alone -> enhancing (its label implies TC, WT)
    logits[:, ..., 3] = 1                      # all three -> enhancing
    assert BRATS.to_labels(logits).ravel().tolist() == [2, 1, 4, 4, 0]
    # disjoint labels: each its own region; where two are predicted the larger logit wins
    organs = LabelSet({"liver": 1, "spleen": 2})
    assert organs.names == ("liver", "spleen")
    two = np.array([[[[3.0, -1.0, 0.5]]], [[[2.0, 1.0, 0.7]]]])
    assert organs.to_labels(two).ravel().tolist() == [1, 2, 2]


def test_regions_of_a_label_map_match_their_definition():
    rng = np.random.default_rng(0)
    labels = rng.choice([0, 1, 2, 3], size=(1, 5, 6, 7)).astype(np.uint8)
    declared = LabelSet.from_dict({"labels": {"NCR": 1, "ED": 2, "ET": 3},
                                   "regions": {"ET": ["ET"], "TC": ["NCR", "ET"],
                                               "WT": ["NCR", "ED", "ET"]}})
    regions = declared.to_regions(labels)
    np.testing.assert_array_equal(regions[0], labels[0] == 3)
    np.testing.assert_array_equal(regions[1], np.isin(labels[0], (1, 3)))
    np.testing.assert_array_equal(regions[2], labels[0] > 0)
    assert declared.unknown_values(labels) == [] and BRATS.unknown_values(labels) == [3]
    with pytest.raises(ValueError, match="3"):
        BRATS.masks(labels)


@pytest.mark.parametrize(("values", "reason"), [
    ({"labels": {"a": 1, "b": 1}}, "share a value"),
    ({"labels": {"a": 0}}, "from 1 to 255"),
    ({"labels": {"a": 1, "b": 2, "c": 3}, "regions": {"x": ["a", "b"], "y": ["b", "c"]}},
     "overlap"),
    ({"labels": {"a": 1, "b": 2}, "regions": {"x": ["a", "b"]}}, "exactly one label"),
    ({"labels": {"a": 1}, "regions": {"x": ["z"]}}, "unknown labels"),
])
def test_unusable_label_sets_are_refused_with_the_reason(values, reason):
    with pytest.raises(ValueError, match=reason):
        LabelSet.from_dict(values)


def _relabel_brats_2023(root):
    """Turn a synthetic BraTS dataset into BraTS 2023 coding (ET 4 -> 3)."""
    for path in root.glob("*/labels/*.nii.gz"):
        volume = read_volume(path)
        volume.array[volume.array == 4] = 3
        write_volume(volume, path, dtype=np.uint8)


@pytest.fixture(scope="module")
def brats_2023(tmp_path_factory):
    root = tmp_path_factory.mktemp("b23") / "data"
    synthesize("brats-seg", root, cases=3, seed=4, shape=(20, 20, 16))
    _relabel_brats_2023(root)
    return root


def test_labels_the_dataset_does_not_declare_stop_training_with_one_line(cli, brats_2023,
                                                                         tmp_path):
    args = [a for item in TINY for a in ("--set", item)]
    result = cli("train", "--preset", "demo-seg", "--data", brats_2023, "--out",
                 tmp_path / "run", "--quiet", *args)
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1
    assert "holds label(s) 3" in result.err and "dataset.toml" in result.err
    assert not (tmp_path / "run").exists()


def test_a_declared_label_set_trains_predicts_and_scores(cli, brats_2023, tmp_path):
    manifest = brats_2023 / "dataset.toml"
    manifest.write_text(manifest.read_text().split("\n[labels]")[0] + "\n" + BRATS_2023)
    assert load_dataset(brats_2023).labels.labels == {"NCR": 1, "ED": 2, "ET": 3}
    args = [a for item in TINY for a in ("--set", item)]
    run = tmp_path / "run"
    trained = cli("train", "--preset", "demo-seg", "--data", brats_2023, "--out", run,
                  "--quiet", *args)
    assert trained.code == 0, trained.err
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"val_dice_ET", "val_dice_TC", "val_dice_WT"} <= set(record)
    out = tmp_path / "pred"
    inferred = cli("infer", brats_2023 / "test" / "images", "-o", out, "--model",
                   run / "best.pt", "--quiet")
    assert inferred.code == 0, inferred.err
    (pred,) = out.iterdir()
    assert set(np.unique(read_volume(pred).array)) <= {0, 1, 2, 3}
    scored = cli("eval", out, brats_2023 / "test" / "labels", "--regions", manifest, "--json")
    assert scored.code == 0, scored.err
    assert json.loads(scored.out)["methods"] == ["ET", "TC", "WT"]
    refused = cli("eval", out, brats_2023 / "test" / "labels", "--regions", "brats")
    assert refused.code == 2 and "3" in refused.err


def test_out_channels_must_match_the_declared_regions(cli, tmp_path):
    root = tmp_path / "data"
    synthesize("brats-seg", root, cases=3, seed=5, shape=(20, 20, 16))
    manifest = root / "dataset.toml"
    manifest.write_text(manifest.read_text().split("\n[labels]")[0]
                        + '\n[labels]\nNCR = 1\nED = 2\nET = 4\n')  # three labels, own regions
    args = [a for item in TINY for a in ("--set", item)]
    ok = cli("train", "--preset", "demo-seg", "--data", root, "--out", tmp_path / "a",
             "--quiet", *args)
    assert ok.code == 0, ok.err  # three regions, three outputs
    manifest.write_text(manifest.read_text() + "oedema_core = 5\n")  # a fourth label and region
    result = cli("train", "--preset", "demo-seg", "--data", root, "--out", tmp_path / "b",
                 "--quiet", *args)
    assert result.code == 2 and "data.out_channels" in result.err and "4 region" in result.err
    assert not (tmp_path / "b").exists()


def test_dataset_toml_label_set_errors_name_the_file(tmp_path):
    root = tmp_path / "data"
    synthesize("brats-seg", root, cases=3, seed=6, shape=(16, 16, 16))
    manifest = root / "dataset.toml"
    base = manifest.read_text().split("\n[labels]")[0]
    manifest.write_text(base + '\n[labels]\nNCR = 1\nED = 1\n')
    with pytest.raises(InputError, match="dataset.toml.*share a value"):
        load_dataset(root)
    manifest.write_text(base + '\n[regions]\nWT = ["ED"]\n')
    with pytest.raises(InputError, match=r"dataset.toml: \[regions\] needs a \[labels\]"):
        load_dataset(root)
