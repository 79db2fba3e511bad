"""Writing DICOM: derived image series and DICOM-SEG, read back with revmed, SimpleITK,
pydicom and highdicom, and written whole or not at all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from revmed.errors import OutputError
from revmed.io import Volume, make_affine, read_volume, write_volume, zoom_affine
from revmed.io.dicom.write import write_dicom_series

LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def oblique_affine(spacing=(0.7, 0.9, 1.3), seed=0) -> np.ndarray:
    rotation = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))[0]
    rotation[:, 0] *= np.sign(np.linalg.det(rotation))  # a proper rotation
    return make_affine(spacing, rotation, (-40.5, 25.25, 12.125))


def headers(folder):
    return [pydicom.dcmread(f, stop_before_pixels=True) for f in sorted(folder.iterdir())]


def test_an_oblique_volume_reads_back_with_its_geometry_and_values(tmp_path):
    rng = np.random.default_rng(1)
    array = rng.uniform(-1024, 3000, size=(1, 12, 10, 7)).astype(np.float32)
    volume = Volume(array, oblique_affine(), meta={"units": "HU"})
    folder = write_volume(volume, tmp_path / "out" / "series", format="dicom")

    back = read_volume(folder)
    np.testing.assert_allclose(back.affine, volume.affine, atol=1e-6)
    np.testing.assert_array_equal(back.array, np.rint(array))  # 1 HU steps
    # SimpleITK (GDCM) places the voxels in LPS where the affine says
    image = sitk.ReadImage(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
    lps = LPS @ volume.affine
    np.testing.assert_allclose(image.GetSpacing(), [0.7, 0.9, 1.3], atol=1e-6)
    np.testing.assert_allclose(image.GetOrigin(), lps[:3, 3], atol=1e-6)
    np.testing.assert_allclose(np.reshape(image.GetDirection(), (3, 3)),
                               lps[:3, :3] / [0.7, 0.9, 1.3], atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), np.rint(array[0]).T)
    first = headers(folder)[0]
    assert list(first.ImageType) == ["DERIVED", "SECONDARY", "AXIAL"]
    assert first.Modality == "CT" and first.SOPClassUID == pydicom.uid.CTImageStorage
    assert first.RescaleType == "HU" and float(first.RescaleSlope) == 1


def test_values_that_are_not_whole_use_the_int16_range(tmp_path):
    rng = np.random.default_rng(2)
    array = rng.uniform(0, 3.2, size=(1, 9, 8, 6)).astype(np.float32)  # e.g. mm^2/s x 1e3
    volume = Volume(array, make_affine((1.25, 1.25, 1.25)))
    back = read_volume(write_volume(volume, tmp_path / "series", format="dicom"))
    slope = float(headers(tmp_path / "series")[0].RescaleSlope)
    assert slope == pytest.approx(3.2 / 65534, rel=0.01)
    assert np.abs(back.array - array).max() <= slope / 2 + 1e-6
    assert headers(tmp_path / "series")[0].Modality == "OT"  # no DICOM source, not HU


def test_a_result_on_the_refined_grid_keeps_the_patient_and_study_of_its_source(tmp_path,
                                                                              ct_series):
    source_folder = ct_series(tmp_path / "ct")
    source = read_volume(source_folder)
    refined = zoom_affine(source.affine, (2, 2, 2))
    array = np.kron(source.array, np.ones((1, 2, 2, 2), dtype=np.float32)) + 0.25
    result = Volume(array, refined, meta={"units": "HU"})
    folder = write_volume(result, tmp_path / "sr", format="dicom", like=source,
                          description="revmed sr", derivation="2x super-resolution")

    back = read_volume(folder)
    assert back.shape == (40, 32, 10)
    np.testing.assert_allclose(back.affine, refined, atol=1e-6)
    np.testing.assert_array_equal(back.array, np.rint(array))
    written, original = headers(folder), headers(source_folder)
    for keyword in ("PatientName", "PatientID", "StudyInstanceUID", "StudyDate",
                    "FrameOfReferenceUID", "Modality"):
        assert {str(h.get(keyword)) for h in written} == {str(original[0].get(keyword))}
    uids = {h.SOPInstanceUID for h in written}
    assert len(uids) == 10 and not uids & {h.SOPInstanceUID for h in original}
    assert len({h.SeriesInstanceUID for h in written}) == 1
    assert written[0].SeriesInstanceUID != original[0].SeriesInstanceUID
    assert written[0].DerivationDescription == "2x super-resolution"
    assert float(written[0].PixelSpacing[0]) == pytest.approx(0.661468 / 2)
    assert float(written[0].SpacingBetweenSlices) == pytest.approx(1.25)
    assert sorted(int(h.InstanceNumber) for h in written) == list(range(1, 11))


def test_what_dicom_cannot_hold_is_refused_before_writing(tmp_path):
    sheared = make_affine((1, 1, 1))
    sheared[0, 1] = 0.3
    with pytest.raises(OutputError, match="not perpendicular"):
        write_volume(Volume(np.zeros((1, 4, 4, 4), np.float32), sheared), tmp_path / "a",
                     format="dicom")
    tilted = make_affine((1, 1, 1))
    tilted[0, 2] = 0.3
    with pytest.raises(OutputError, match="tilted"):
        write_volume(Volume(np.zeros((1, 4, 4, 4), np.float32), tilted), tmp_path / "b",
                     format="dicom")
    with pytest.raises(OutputError, match="one channel"):
        write_volume(Volume(np.zeros((2, 4, 4, 4), np.float32), make_affine((1, 1, 1))),
                     tmp_path / "c", format="dicom")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_leaves_the_previous_series_whole(tmp_path, monkeypatch):
    import revmed.io.dicom.write as dicom_write

    volume = Volume(np.arange(4 * 4 * 6, dtype=np.float32).reshape(1, 4, 4, 6),
                    make_affine((1, 1, 2)))
    folder = write_volume(volume, tmp_path / "series", format="dicom")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    real = dicom_write._slice_dataset

    def fail_at_slice_3(base, k, *args):
        if k == 3:
            raise OSError(28, "No space left on device")
        return real(base, k, *args)

    monkeypatch.setattr(dicom_write, "_slice_dataset", fail_at_slice_3)
    with pytest.raises(OutputError, match=r"series: cannot write \(No space left on device\); "
                                          "nothing was written"):
        write_volume(volume.with_array(volume.array + 1), folder, format="dicom")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["series"]  # no temporary folder left


def test_a_folder_that_is_not_a_series_is_never_replaced(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(OutputError, match="notes.txt"):
        write_dicom_series(Volume(np.zeros((1, 4, 4, 4), np.float32), make_affine((1, 1, 1))),
                           mine)
    assert (mine / "notes.txt").read_text() == "keep"


KILLED_WRITER = textwrap.dedent("""
    import sys, time
    import numpy as np
    import revmed.io.dicom.write as dicom_write
    from revmed.io import Volume, make_affine, write_volume

    real = dicom_write._slice_dataset
    def slow(base, k, *args):
        if k == 2:
            print("half", flush=True)
            time.sleep(60)
        return real(base, k, *args)
    dicom_write._slice_dataset = slow
    write_volume(Volume(np.zeros((1, 4, 4, 8), np.float32), make_affine((1, 1, 1))),
                 sys.argv[1], format="dicom")
""")


def test_a_killed_write_leaves_no_half_series_and_the_next_write_tidies_up(tmp_path):
    target = tmp_path / "series"
    process = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(target)],
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "half"  # two slices are written
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert not target.exists()
    leftovers = [p for p in tmp_path.iterdir()]
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".series.partial-")
    assert len(list(leftovers[0].iterdir())) == 2
    volume = Volume(np.ones((1, 4, 4, 3), np.float32), make_affine((1, 1, 1)))
    write_volume(volume, target, format="dicom")
    assert [p.name for p in tmp_path.iterdir()] == ["series"]
    assert read_volume(target).shape == (4, 4, 3)


def brats_labels(shape, seed=0) -> np.ndarray:
    labels = np.zeros((1, *shape), dtype=np.float32)
    rng = np.random.default_rng(seed)
    for value in (1, 2, 4):
        for _ in range(6):
            i, j, k = (rng.integers(0, s) for s in shape)
            labels[0, i:i + 3, j:j + 2, k] = value
    return labels


def test_a_label_map_becomes_a_dicom_seg_over_its_source_slices(tmp_path, ct_series):
    source_folder = ct_series(tmp_path / "ct")
    source = read_volume(source_folder)
    labels = brats_labels(source.shape)
    result = Volume(labels, source.affine, meta={"units": "label"})
    folder = write_volume(result, tmp_path / "seg", format="dicom", like=source,
                          names={1: "NCR", 2: "ED", 4: "ET"})

    seg = hd.seg.segread(next(folder.iterdir()))
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["NCR", "ED", "ET"]
    original = headers(source_folder)
    assert seg.PatientID == original[0].PatientID
    assert seg.StudyInstanceUID == original[0].StudyInstanceUID
    assert seg.FrameOfReferenceUID == original[0].FrameOfReferenceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == original[0].SeriesInstanceUID
    # each source slice's frame holds the labels of the voxels at that slice's position
    uids = [h.SOPInstanceUID for h in original]
    frames = seg.get_pixels_by_source_instance(uids, combine_segments=True, relabel=False)
    inverse = np.linalg.inv(source.affine)
    segment_of = {0: 0, 1: 1, 2: 2, 4: 3}
    for header, frame in zip(original, frames):
        ras = LPS[:3, :3] @ np.array([float(v) for v in header.ImagePositionPatient])
        k = int(np.rint((inverse @ np.append(ras, 1))[2]))
        expected = np.vectorize(segment_of.get)(labels[0, :, :, k]).T  # rows = J
        np.testing.assert_array_equal(frame, expected)


def test_a_dicom_seg_needs_a_dicom_source(tmp_path):
    volume = Volume(np.ones((1, 4, 4, 4), np.float32), make_affine((1, 1, 1)),
                    source=str(tmp_path / "x.nii.gz"), meta={"format": "nifti"})
    labels = Volume(np.ones((1, 4, 4, 4), np.float32), volume.affine, meta={"units": "label"})
    with pytest.raises(OutputError, match="not DICOM"):
        write_volume(labels, tmp_path / "seg", format="dicom", like=volume)
    assert not (tmp_path / "seg").exists()


def test_a_full_disk_while_pydicom_writes_is_one_line(cli, tmp_path, monkeypatch, tiny_checkpoint):
    """pydicom re-raises a write error without its number, so a full disk during a DICOM
    output was a traceback; revmed now writes the encoded bytes itself."""
    from pathlib import Path

    real = Path.write_bytes

    def full(self, data):
        if self.suffix == ".dcm":
            raise OSError(28, "No space left on device")
        return real(self, data)

    model = tiny_checkpoint(tmp_path / "m.pt", infer={"overlap": 0.25})
    source = write_volume(Volume(np.zeros((1, 8, 8, 8), np.float32), make_affine((1, 1, 1)),
                                 meta={"units": "HU"}), tmp_path / "ct.nii.gz")
    monkeypatch.setattr(Path, "write_bytes", full)
    result = cli("infer", source, "-o", tmp_path / "out", "--format", "dicom", "--model",
                 model, "-q")
    assert result.code == 2
    assert result.err == (f"error: {tmp_path / 'out'}: cannot write (No space left on "
                          "device); nothing was written\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct.nii.gz", "m.pt"]

