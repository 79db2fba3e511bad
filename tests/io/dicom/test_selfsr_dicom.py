"""`revmed selfsr` on a DICOM series folder (CT in HU): geometry and values."""

from __future__ import annotations

import numpy as np

from revmed.io import read_volume, zoom_affine


def test_selfsr_reads_a_dicom_series_and_keeps_its_geometry(cli, tmp_path, ct_series):
    series = ct_series(tmp_path / "SE1", slices=6, rows=24, columns=24, step=2.5)
    scan = read_volume(series)
    result = cli("selfsr", series, "-o", tmp_path / "iso.nii.gz", "--steps", "2",
                 "--set", "patch.size=[1,8,16]", "--seed", "1")
    assert result.code == 0, result.err
    # 2.5 mm slices over 0.661 mm pixels: 3.78x, the network at 4x, resampled to 23 slices
    assert "refining 3.78x" in result.err and "resampled to 23 slices" in result.err
    out = read_volume(tmp_path / "iso.nii.gz")
    assert out.shape == (24, 24, 23)
    assert np.allclose(out.affine, zoom_affine(scan.affine, [1, 1, 23 / 6]))
    assert out.axis_codes == scan.axis_codes
    # in HU, as the scan: the same mean, and nothing far outside its range
    lo, hi = scan.array.min(), scan.array.max()
    assert abs(out.array.mean() - scan.array.mean()) < 0.02 * (hi - lo)
    assert out.array.min() > lo - 0.2 * (hi - lo) and out.array.max() < hi + 0.2 * (hi - lo)
    again = cli("selfsr", series, "-o", tmp_path / "again.nii.gz", "--steps", "2",
                "--set", "patch.size=[1,8,16]", "--seed", "1", "-q")
    assert again.code == 0 and np.array_equal(read_volume(tmp_path / "again.nii.gz").array,
                                                out.array)
