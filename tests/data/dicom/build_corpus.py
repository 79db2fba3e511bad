"""Build ``corpus.tar.xz``: the scanner DICOM the tests check revmed against dcm2niix with.

The cases are trimmed from the dcm2niix project's public validation repositories (BSD
2-Clause, see README.md here), fetched beside each other under ``SOURCE``:

    python tests/data/dicom/build_corpus.py SOURCE

Trimming keeps a few neighbouring slices of each series (and, for enhanced multi-frame
files, a few frames, with their functional groups), never alters a kept file otherwise, and
writes the tree under ``corpus/`` into ``corpus.tar.xz`` beside this script.
"""

from __future__ import annotations

import io
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pydicom

HERE = Path(__file__).resolve().parent


def slices_by_position(folder: Path) -> list[Path]:
    """The DICOM image files of ``folder`` in order along their slice normal."""
    found = []
    for path in sorted(folder.iterdir()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:  # noqa: BLE001  not DICOM
            continue
        if "ImagePositionPatient" not in ds:
            continue
        iop = np.array(ds.ImageOrientationPatient, dtype=float)
        normal = np.cross(iop[:3], iop[3:])
        found.append((float(np.array(ds.ImagePositionPatient, dtype=float) @ normal), path))
    return [path for _, path in sorted(found)]


def keep_slices(source: Path, target: Path, start: int, count: int) -> None:
    """Copy ``count`` neighbouring slices of ``source`` from the ``start``-th along the normal."""
    target.mkdir(parents=True, exist_ok=True)
    for path in slices_by_position(source)[start:start + count]:
        shutil.copy2(path, target / path.name)


def keep_frames(source: Path, target: Path, frames: range) -> None:
    """Copy the enhanced multi-frame file ``source`` with only ``frames`` (and their per-frame
    functional groups) kept."""
    ds = pydicom.dcmread(source)
    pixels = ds.pixel_array[list(frames)]
    ds.PerFrameFunctionalGroupsSequence = pydicom.Sequence(
        [ds.PerFrameFunctionalGroupsSequence[k] for k in frames])
    ds.NumberOfFrames = len(frames)
    ds.PixelData = np.ascontiguousarray(pixels).astype(pixels.dtype.newbyteorder("<")).tobytes()
    target.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(target)


def build(source: Path, out: Path) -> None:
    ct, sag = source / "dcm_qa_ct" / "In", source / "dcm_qa_sag" / "In"
    philips = ct / "Philips"
    study = out / "philips_ct_study"
    (study).mkdir(parents=True)
    shutil.copy2(philips / "DICOMDIR", study / "DICOMDIR")
    for series, start, count in [("S21570/S2010", 13, 4), ("S21570/S2020", 67, 6),
                                 ("S21570/S2030", 67, 4), ("S21610/S2010", 25, 6),
                                 ("S21610/S3010", 27, 6)]:
        keep_slices(philips / series, study / series, start, count)
    for single in ("S21570/S1000/I10", "S21570/S4010/I10", "S21610/S4010/I10"):
        (study / single).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(philips / single, study / single)
    keep_slices(ct / "GE", out / "ge_ct_tilt", 10, 8)
    keep_slices(sag / "XA30" / "classic" / "5001_Product_EPI_Sag_Ascending",
                out / "siemens_mr_sag" / "classic", 28, 6)
    enhanced = sag / "XA30" / "enhanced" / "5_Product_EPI_Sag_Ascending"
    for path in sorted(enhanced.iterdir())[:2]:
        keep_frames(path, out / "siemens_mr_sag" / "enhanced" / path.name, range(28, 34))
    for position in ("HFDL", "HFDR"):
        folder = next((source / "dcm_qa_decubitus" / "In" / position).glob("*_t1_fl2d_sag"))
        keep_slices(folder, out / "siemens_mr_decubitus" / position, 15, 4)
    dwi = sorted((sag / "7_DWI_SagHF").iterdir())
    _keep_dwi(dwi, out / "siemens_mr_dwi")
    shutil.copytree(source / "dcm_qa_enh" / "In" / "Siemens" / "XA10",
                    out / "siemens_mr_enhanced")
    (out / "philips_mr_enhanced").mkdir()
    shutil.copy2(source / "dcm_qa_enh" / "In" / "Philips" / "IM_0027_fMAP.dcm",
                 out / "philips_mr_enhanced" / "IM_0027_fMAP.dcm")
    (out / "transfer_syntaxes").mkdir()
    for n in (1, 2, 3, 4, 5, 7, 9):
        shutil.copy2(source / "dcm_qa_ts" / "In" / f"{n}.dcm", out / "transfer_syntaxes")


def _keep_dwi(files: list[Path], target: Path) -> None:
    """Four neighbouring slices of the first three diffusion volumes (AcquisitionNumber)."""
    by_volume: dict[int, list[tuple[float, Path]]] = {}
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        iop = np.array(ds.ImageOrientationPatient, dtype=float)
        along = float(np.array(ds.ImagePositionPatient, dtype=float)
                      @ np.cross(iop[:3], iop[3:]))
        by_volume.setdefault(int(ds.AcquisitionNumber), []).append((along, path))
    target.mkdir(parents=True)
    for volume in sorted(by_volume)[:3]:
        for _, path in sorted(by_volume[volume])[20:24]:
            shutil.copy2(path, target / path.name)


def main() -> None:
    source = Path(sys.argv[1])
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "corpus"
        build(source, out)
        data = io.BytesIO()
        with tarfile.open(fileobj=data, mode="w:xz", preset=9) as archive:
            for path in sorted(out.rglob("*")):
                info = archive.gettarinfo(path, arcname=str(path.relative_to(out.parent)))
                info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                if path.is_file():
                    with open(path, "rb") as handle:
                        archive.addfile(info, handle)
                else:
                    archive.addfile(info)
        (HERE / "corpus.tar.xz").write_bytes(data.getvalue())
    print(f"wrote {HERE / 'corpus.tar.xz'} ({len(data.getvalue()) / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
