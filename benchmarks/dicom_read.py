"""Reading scanner DICOM: revmed against dcm2niix, side by side, on the same files.

Two inputs are built in a temporary folder from the real slices of tests/data/fixtures/dicom (the
Philips head CT, 512 x 512, int16 stored, Explicit VR Little Endian), each copy with its own
SOP Instance UID and position:

* ``series``: one series of ``--slices`` slices (default 300) 1 mm apart, in one folder;
* ``tree``: a patient/study/series tree of 10 series of ``--slices / 10`` slices each, with
  a DICOMDIR-less layout as PACS exports write it.

Ways, each timed ``--repeats`` times (median, wall clock; the files are read once before, so
every way reads from the page cache):

* ``revmed read``: ``revmed.io.read_volume`` on the series (every volume of the tree, after
  ``find_cases`` found them), in this process: headers, geometry, decoding, HU;
* ``revmed read+write``: the same, then each volume written as an uncompressed NIfTI
  (``.nii``), which is what dcm2niix produces;
* ``dcm2niix``: ``dcm2niix -z n`` on the folder (subprocess), header-sorting, decoding and
  writing uncompressed NIfTI.

    python benchmarks/dicom_read.py                  # 300 slices, 5 repeats
    python benchmarks/dicom_read.py --slices 60 --repeats 2   # a smoke test
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import tarfile
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import generate_uid

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "tests" / "fixtures" / "dicom" / "corpus.tar.xz"
SOURCE_SERIES = "corpus/philips_ct_study/S21570/S2020"


def real_slices(tmp: Path) -> list[pydicom.Dataset]:
    with tarfile.open(CORPUS) as archive:
        archive.extractall(tmp, filter="data")
    return [pydicom.dcmread(p) for p in sorted((tmp / SOURCE_SERIES).iterdir())]


def write_series(slices: list[pydicom.Dataset], folder: Path, count: int) -> None:
    """``count`` copies of the real ``slices`` (cycled) as one series, 1 mm apart."""
    folder.mkdir(parents=True)
    uid, first = generate_uid(), np.array(slices[0].ImagePositionPatient, dtype=float)
    for k in range(count):
        ds = slices[k % len(slices)].copy()
        ds.SeriesInstanceUID = uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.ImagePositionPatient = [f"{v:.4f}" for v in first + [0.0, 0.0, float(k)]]
        ds.InstanceNumber = k + 1
        ds.save_as(folder / f"IM{k:05d}")


def timed(repeats: int, work) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def revmed_read(path: Path, out: Path | None) -> None:
    """What ``revmed infer`` reads of ``path``: its cases, then each volume (a fresh start:
    the headers revmed keeps from an earlier call are dropped first)."""
    import revmed.io
    from revmed.io import find_cases, read_volume, write_volume

    kept = getattr(getattr(revmed.io, "dicom", None), "series", None)
    if kept is not None:  # revmed before its pydicom reader kept nothing
        kept._HEADERS.clear()
    cases = find_cases(path)
    sources = {"volume": (path, None)} if cases is None else {
        name: (case.files[0], case.series) for name, case in cases.items()}
    for name, (source, series) in sources.items():
        volume = read_volume(source, series)
        if out is not None:
            write_volume(volume, out / f"{name}.nii")


def run_dcm2niix(path: Path, out: Path) -> None:
    subprocess.run(["dcm2niix", "-z", "n", "-f", "%s_%j", "-o", str(out), str(path)],
                   capture_output=True, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" /
                        "dicom_read.json")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        slices = real_slices(tmp / "src")
        inputs = {"series": tmp / "series", "tree": tmp / "tree"}
        write_series(slices, inputs["series"], args.slices)
        per = args.slices // 10
        for n in range(10):
            write_series(slices, inputs["tree"] / f"P{n // 4}" / f"ST{n % 4 // 2}" /
                         f"SE{n}", per)
        for name, path in inputs.items():
            out = tmp / f"out-{name}"
            revmed_read(path, None)  # both tools read from the page cache
            ways = {
                "revmed read": lambda p=path: revmed_read(p, None),
                "revmed read+write": lambda p=path, o=out: _fresh(o, revmed_read, p),
                "dcm2niix": lambda p=path, o=out: _fresh(o, run_dcm2niix, p),
            }
            times = {way: timed(args.repeats, work) for way, work in ways.items()}
            for way, seconds in times.items():
                rows.append({"input": name, "slices": args.slices, "way": way,
                             "seconds": seconds, "vs_dcm2niix": seconds / times["dcm2niix"]})
    print(f"CPU: {platform.processor() or platform.machine()}, {args.repeats} repeats, median\n")
    print("| input | way | s | x dcm2niix |\n|---|---|---:|---:|")
    for row in rows:
        print(f"| {row['input']} ({row['slices']} slices) | {row['way']} | "
              f"{row['seconds']:.3f} | {row['vs_dcm2niix']:.2f} |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(rows, indent=2))


def _fresh(out: Path, work, path: Path) -> None:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    work(path, out)


if __name__ == "__main__":
    main()
