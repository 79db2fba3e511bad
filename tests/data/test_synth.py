"""``revmed.data.synthetic``: every task writes a valid dataset of plausible, deterministic phantoms."""

from __future__ import annotations

import re

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from revmed.data.layout import load_dataset, validate_geometry
from revmed.data.synthetic import TASKS, split_counts, synthesize
from revmed.errors import InputError, OutputError

EXPECTED = {
    "chestct-sr": ("hr-only", ["image"], "HU", (0.7, 0.7, 1.0)),
    "chestct-da": ("paired", ["image"], "HU", (0.7, 0.7, 1.0)),
    "hcp-sr": ("hr-only", ["Dxx", "Dxy", "Dxz", "Dyy", "Dyz", "Dzz"], "1e-3 mm^2/s", (1.25,) * 3),
    "brats-seg": ("segmentation", ["t1", "t1ce", "t2", "flair"], "a.u.", (1.0, 1.0, 1.0)),
}


def load(path) -> np.ndarray:
    """Voxel array of a NIfTI file as stored (4D files keep channels last)."""
    return np.asarray(nib.load(str(path)).dataobj)


def all_cases(ds):
    return [c for split in ("train", "val", "test") for c in ds.cases(split)]


@pytest.mark.parametrize("task", sorted(EXPECTED))
def test_layout_of_each_task(task, tiny_dataset, tiny_shapes):
    ds = tiny_dataset(task)
    kind, channels, units, spacing = EXPECTED[task]
    assert (ds.kind, ds.channels, ds.units) == (kind, channels, units)
    assert ds.counts() == {"train": 1, "val": 1, "test": 1}
    again = load_dataset(ds.root)  # what a later command would see
    assert again.counts() == ds.counts()
    validate_geometry(ds)
    for case in all_cases(ds):
        assert case.mask is not None
        image = nib.load(str(case.reference))
        assert image.shape[:3] == tiny_shapes[task]
        np.testing.assert_allclose(image.header.get_zooms()[:3], spacing, rtol=1e-6)
        # centred RAS grid: the middle of the volume is the world origin
        centre = image.affine @ np.r_[(np.asarray(image.shape[:3]) - 1) / 2.0, 1.0]
        np.testing.assert_allclose(centre[:3], 0.0, atol=1e-4)
        assert load(case.mask).dtype == np.uint8
        if kind == "segmentation":
            assert [p.name for p in case.inputs] == [f"{c}.nii.gz" for c in channels]
            assert case.label is not None and load(case.label).dtype == np.uint8
        elif kind == "paired":
            assert len(case.inputs) == 1 and case.target is not None
        else:
            assert case.inputs == [] and case.target is not None
            assert (1 if len(channels) == 1 else len(channels)) == (
                1 if image.ndim == 3 else image.shape[3])


def test_chestct_sr_values(tiny_dataset):
    for case in all_cases(tiny_dataset("chestct-sr")):
        hu, body = load(case.target), load(case.mask).astype(bool)
        assert -1030 <= hu.min() <= -950
        assert abs(np.median(hu[~body]) + 1000) < 15  # air outside the body
        lungs = hu[body & (hu < -600)]  # lungs (and the trachea), away from their edges
        assert lungs.size > 0.05 * body.sum()
        assert -950 <= lungs.mean() <= -750
        assert hu.max() > 500  # bone
        inside = hu[body]
        assert np.mean((inside > 0) & (inside < 100)) > 0.1  # soft tissue, heart
        assert np.mean((inside > -150) & (inside < -50)) > 0.02  # fat


def test_chestct_da_same_anatomy_different_kernels(tiny_dataset):
    for case in all_cases(tiny_dataset("chestct-da")):
        x, y = load(case.inputs[0]).astype(np.float64), load(case.target).astype(np.float64)
        body = load(case.mask).astype(bool)
        lap_x = np.abs(ndimage.laplace(x))[body].mean()
        lap_y = np.abs(ndimage.laplace(y))[body].mean()
        assert lap_x > 2.0 * lap_y, (lap_x, lap_y)
        bx, by = ndimage.gaussian_filter(x, 2.0), ndimage.gaussian_filter(y, 2.0)
        assert np.corrcoef(bx[body], by[body])[0, 1] > 0.95
        assert abs(x.mean() - y.mean()) < 25  # both kernels keep the mean HU


def test_hcp_tensors_positive_definite(tiny_dataset):
    for case in all_cases(tiny_dataset("hcp-sr")):
        d, mask = load(case.target), load(case.mask).astype(bool)
        assert d.shape[3] == 6 and d.dtype == np.float32
        assert np.all(d[~mask] == 0)
        xx, xy, xz, yy, yz, zz = np.moveaxis(d[mask].astype(np.float64), -1, 0)
        tensors = np.stack([np.stack([xx, xy, xz], -1), np.stack([xy, yy, yz], -1),
                            np.stack([xz, yz, zz], -1)], -2)
        ev = np.linalg.eigvalsh(tensors)
        assert ev.min() > 0
        assert ev.max() < 4.0  # CSF about 3
        md = ev.mean(-1)
        fa = np.sqrt(1.5 * ((ev - md[:, None]) ** 2).sum(-1) / (ev ** 2).sum(-1))
        assert fa.max() > 0.6  # coherent white matter
        assert np.any((md > 2.5) & (fa < 0.2))  # CSF
        assert np.any((np.abs(md - 0.8) < 0.15) & (fa < 0.2))  # grey matter


def test_brats_labels_and_contrast(tiny_dataset):
    for case in all_cases(tiny_dataset("brats-seg")):
        labels, mask = load(case.label), load(case.mask).astype(bool)
        assert set(np.unique(labels)) <= {0, 1, 2, 4}
        et, tc, wt = labels == 4, np.isin(labels, (1, 4)), labels > 0
        assert et.any() and wt.any()
        assert not np.any(tc & ~wt)
        assert not np.any(wt & ~mask)  # tumour inside the brain
        if np.any(labels == 1):  # the necrotic core sits inside the tumour core
            grown = ndimage.binary_dilation(labels == 1)
            assert np.mean(tc[grown]) > 0.8
        images = {c: load(p) for c, p in zip(("t1", "t1ce", "t2", "flair"), case.inputs)}
        normal = mask & ~wt
        for name, img in images.items():
            assert np.all(img[~mask] == 0), name
            assert img[mask].min() >= 0 and img[mask].mean() > 0
        oedema = labels == 2
        if oedema.any():
            assert images["flair"][oedema].mean() > images["flair"][normal].mean()
            assert images["t2"][oedema].mean() > images["t2"][normal].mean()
        assert images["t1ce"][et].mean() > images["t1ce"][normal].mean()


@pytest.mark.parametrize("side", [-1.0, 1.0])
def test_brats_tumour_hemisphere(side):
    from revmed.data.synthetic.brain import brats_phantom

    _, labels, _ = brats_phantom(np.random.default_rng(3), (32, 32, 24), (1.0, 1.0, 1.0),
                                 hemisphere=side)
    centre_x = np.nonzero(labels)[0].mean() - (labels.shape[0] - 1) / 2
    assert np.sign(centre_x) == side  # x (voxel axis i) runs from left to right


@pytest.mark.parametrize("task", ["chestct-da", "brats-seg"])
def test_deterministic_per_seed(task, tmp_path, tiny_dataset, tiny_shapes):
    first = tiny_dataset(task)
    same = synthesize(task, tmp_path / "same", cases=3, seed=0, shape=tiny_shapes[task])
    other = synthesize(task, tmp_path / "other", cases=3, seed=1, shape=tiny_shapes[task])
    for split in ("train", "val", "test"):
        for a, b, c in zip(first.cases(split), same.cases(split), other.cases(split)):
            files = [case.inputs + [case.target or case.label] for case in (a, b, c)]
            for pa, pb, pc in zip(*files):
                va, vb, vc = load(pa), load(pb), load(pc)
                assert va.tobytes() == vb.tobytes(), pa
                assert not np.array_equal(va, vc), pa
    # different cases of one dataset get different anatomy
    c0, c1 = first.cases("train")[0], first.cases("test")[0]
    assert not np.array_equal(load(c0.mask), load(c1.mask))


def test_split_counts():
    assert split_counts(2) == {"train": 1, "val": 0, "test": 1}
    assert split_counts(3) == {"train": 1, "val": 1, "test": 1}
    assert split_counts(10) == {"train": 7, "val": 1, "test": 2}
    assert split_counts(20) == {"train": 15, "val": 1, "test": 4}


def test_two_cases_have_no_val_and_progress_is_reported(tmp_path):
    calls = []
    ds = synthesize("hcp-sr", tmp_path / "d", cases=2, shape=(12, 12, 12),
                    progress=lambda done, total: calls.append((done, total)))
    assert ds.counts() == {"train": 1, "val": 0, "test": 1}
    assert not (tmp_path / "d" / "val").exists()
    assert calls == [(0, 2), (1, 2), (2, 2)]


@pytest.mark.parametrize("kwargs, match", [
    ({"task": "nope"}, "unknown synthetic task"),
    ({"cases": 1}, "cases must be"),
    ({"seed": -1}, "seed -1: must be a whole number"),
    ({"shape": (16, 16)}, "shape must be"),
    ({"shape": (4, 16, 16)}, "shape must be"),
])
def test_bad_arguments(kwargs, match, tmp_path):
    args = {"task": "hcp-sr", "cases": 2, "shape": (12, 12, 12)} | kwargs
    task = args.pop("task")
    with pytest.raises(InputError, match=match):
        synthesize(task, tmp_path / "d", **args)
    assert not (tmp_path / "d").exists()


def test_existing_folder_needs_overwrite(tmp_path):
    out = tmp_path / "d"
    synthesize("hcp-sr", out, cases=5, shape=(12, 12, 12))
    assert len(load_dataset(out).cases("train")) == 3
    with pytest.raises(OutputError, match=re.escape(str(out))):
        synthesize("hcp-sr", out, cases=2, shape=(12, 12, 12))
    ds = synthesize("hcp-sr", out, cases=2, shape=(12, 12, 12), overwrite=True)
    assert ds.counts() == {"train": 1, "val": 0, "test": 1}
    assert not (out / "val").exists()  # nothing left of the previous dataset
    assert [p.name for p in tmp_path.iterdir()] == ["d"]  # no temporary folders left

    other = tmp_path / "not-a-dataset"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(OutputError, match="refusing"):
        synthesize("hcp-sr", other, cases=2, shape=(12, 12, 12), overwrite=True)
    assert (other / "notes.txt").read_text() == "keep me"


def test_empty_existing_folder_is_fine(tmp_path):
    (tmp_path / "d").mkdir()
    synthesize("chestct-sr", tmp_path / "d", cases=2, shape=(16, 16, 16))
    assert load_dataset(tmp_path / "d").kind == "hr-only"


@pytest.mark.slow
@pytest.mark.parametrize("task", sorted(TASKS))
def test_default_grid_phantom(task):
    """One case at the task's default grid (the phantom only, not written)."""
    from revmed.data.synthetic import brain as phantom_brain, chest_ct as phantom_ct
    from revmed.data.synthetic import case_rng

    spec = TASKS[task]
    rng = case_rng(0, 0, task)
    make = {"chestct-sr": phantom_ct.chest_ct_sr, "chestct-da": phantom_ct.chest_ct_kernels,
            "hcp-sr": phantom_brain.dti_phantom, "brats-seg": phantom_brain.brats_phantom}[task]
    out = make(rng, spec.shape, spec.spacing)
    assert out[0].shape[-3:] == spec.shape
    assert all(np.all(np.isfinite(a)) for a in out)
