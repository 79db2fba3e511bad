"""`revmed selfsr` on simulated thick-slice scans, against trilinear and tricubic
interpolation and against a model trained on a separate hr-only dataset.

Each case is an isotropic (or near-isotropic) volume. Its thick-slice version is made by block
means of ``factor`` slices along k (``revmed.transforms.downsample``); only that goes to
``revmed selfsr`` (run as a command, ``--factor F --axis k``; the time is the command's wall
time, reading, training, inference and writing included). The result is scored against the
original with ``revmed.evaluation.evaluate`` (the library of ``revmed eval``), beside the
trilinear and tricubic baselines of the same thick scan: PSNR and SSIM over the whole volume
(data range: the reference's max - min), PSNR inside a foreground mask (Otsu threshold of the
reference, holes filled; from ``rmse_mask``) and SSIM over the mask's bounding box.

Cases (``--cases``; each names its source):

* ``mni``: the MNI ICBM152 2009a T1 template, 1 mm (an average of 152 adults' T1 scans), as
  nilearn ships it; a central 112x128x112 crop. Needs ``pip install nilearn`` (not a revmed
  dependency).
* ``epi``: nibabel's ``example4d.nii.gz`` (an fMRI EPI run, 2x2x2.2 mm), its first volume.
* ``t1``: nibabel's ``anatomical.nii`` (a small T1 brain, 2 mm).
* ``dwi``: dipy's ``aniso_vox.nii.gz`` (a b0 diffusion image, 4x4x5 mm). Needs ``pip install
  dipy`` (not a revmed dependency).
* ``t1mm``: a T1-weighted head MRI of one patient, 1x0.898x0.898 mm (thick slices along k are
  axial), 8-bit: ``seg3D/MR.nii.gz`` of a clone of
  https://github.com/neurolabusc/VolumeRenderingData (commit d15be4d, MIT licence; it took the
  scan from the University of Utah's Seg3D sample data, also MIT), named by
  ``--volume-rendering-data``; the file's SHA-256 is checked. Voxels ``[:, 20:212, :]``
  (160x192x160): the scalp and skull behind the head and the forehead and eyes in front are
  left out, the brain is whole.
* ``ct5mm``: a real head CT, scored against the scanner's own thin reconstruction: the
  ``STD BRAIN 5MM`` series (28 slices of 5 mm, 0.45 mm pixels, kernel UB) of a skull
  head phantom scanned on a Philips Ingenuity goes to selfsr at 5x, and its output is compared
  with the ``STD BRAIN 1MM, iDose`` series (140 slices of 1 mm, kernel UB, iterative
  reconstruction) of the same acquisition, on the same lattice (each 5 mm slice is centred on
  five 1 mm ones). Voxels ``[90:420, 30:440, :]`` of the 512x512 slices: the head, without the
  head holder. This case always runs at 5x, whatever ``--factors`` says. The series come from
  dcm2niix's DICOM validation data (``git clone https://github.com/neurolabusc/dcm_qa_ct``,
  BSD-2-Clause; ``In/Philips``); ``--dcm-qa-ct`` names the checkout. The phantom is a skull
  with plastic inserts and air inside, so the foreground mask (Otsu) holds the bone and the
  inserts; the two series are different reconstructions (filtered and iterative), whose
  values differ by about 30 HU on average even where the 5 mm slices are flat.
* ``ct1mm``: the same ``STD BRAIN 1MM, iDose`` series alone, thickened by block means like the
  other cases (one reconstruction, so no offset between input and reference).
* ``chest``: a synthetic chest CT (``revmed synth chestct-sr`` phantom, 0.7x0.7x1 mm, HU).
* ``brain``: a synthetic brain MRI (the T1 of the ``brats-seg`` phantom, 1 mm).

The hr-only comparison (``--hr-only``) trains, per domain and factor, the same network (3D
patches of 32^3, where a model trained on isotropic volumes has no in-plane/through-plane gap)
for the same time on separate isotropic volumes degraded the same way: four synthetic brain
T1 phantoms for the MRI cases, four synthetic chest CTs for ``chest``. MRI units are
arbitrary, so each MRI volume is scaled to its own 99.9th percentile before that model sees
it, and back after.

``--compare-windows`` runs each kept model again in this process, side by side: as selfsr
does (slabs with the normalisation statistics measured after training,
``revmed.inference.tiles``) and in blended windows with per-window norms (how selfsr ran
before it kept statistics), both orientations, and prints the PSNR and seconds of each.

    python benchmarks/selfsr.py                         # every case, 4x and 6x, hr-only too
    python benchmarks/selfsr.py --cases epi --factors 4 --time-limit 30 --no-hr-only
    python benchmarks/selfsr.py --cases mni,chest --factors 4 --no-hr-only --compare-windows
    python benchmarks/selfsr.py --cases t1mm,mni,ct5mm --factors 4 --no-hr-only \
        --dcm-qa-ct ../dcm_qa_ct --volume-rendering-data ../VolumeRenderingData
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CASES = ("mni", "epi", "t1", "dwi", "t1mm", "chest", "brain")
#: SHA-256 of seg3D/MR.nii.gz in VolumeRenderingData at commit d15be4d (case t1mm)
SEG3D_MR_SHA256 = "56ac78228a4744aff9e3124977e4f35a3813a8ccd8719449321b8d1ef3b7e03a"
#: real CT cases (need --dcm-qa-ct; not in the default --cases)
REAL_CT = ("ct5mm", "ct1mm")
#: cases whose thick scan is the scanner's, not block means of the reference: name -> factor
REAL_PAIRS = {"ct5mm": 5}
#: the two reconstructions of ``ct5mm`` in dcm_qa_ct, and the head's voxels in their slices
CT5MM = {"thick": "STD BRAIN 5MM", "ref": "STD BRAIN 1MM, iDose",
         "crop": (slice(90, 420), slice(30, 440))}
MRI = ("mni", "epi", "t1", "dwi", "t1mm", "brain")
REAL_MRI = ("mni", "epi", "t1", "dwi", "t1mm")
METHODS = ("trilinear", "tricubic", "hr-only", "selfsr")


def _package_file(package: str, *parts: str) -> Path:
    import importlib

    try:
        module = importlib.import_module(package)
    except ImportError:
        sys.exit(f"case needs {package}: pip install {package} (benchmark only)")
    return Path(module.__file__).parent.joinpath(*parts)


def seg3d_mr(checkout: Path | None) -> Path:
    """The ``t1mm`` case's file in a clone of VolumeRenderingData, checked byte for byte."""
    import hashlib

    if checkout is None:
        sys.exit("case t1mm needs a clone of https://github.com/neurolabusc/VolumeRenderingData:"
                 " --volume-rendering-data PATH")
    path = checkout / "seg3D" / "MR.nii.gz"
    if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != SEG3D_MR_SHA256:
        sys.exit(f"{path}: missing or not the file this benchmark was measured on")
    return path


def load_case(name: str, dcm_qa_ct: Path | None = None,
              volume_rendering_data: Path | None = None):
    """``(array (I, J, K) float32, spacing, source text)`` of a case."""
    import nibabel as nib

    from revmed.data.synthetic.brain import brats_phantom
    from revmed.data.synthetic.chest_ct import chest_ct_sr

    if name in REAL_MRI:
        # looked up lazily: a case needs only its own package (nilearn for mni, dipy for dwi)
        path = {"mni": lambda: _package_file("nilearn", "datasets", "data",
                                             "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"),
                "epi": lambda: _package_file("nibabel", "tests", "data", "example4d.nii.gz"),
                "t1": lambda: _package_file("nibabel", "tests", "data", "anatomical.nii"),
                "dwi": lambda: _package_file("dipy", "data", "files", "aniso_vox.nii.gz"),
                "t1mm": lambda: seg3d_mr(volume_rendering_data)}[name]()
        image = nib.load(path)
        array = np.asanyarray(image.dataobj).astype(np.float32)
        array = array[..., 0] if array.ndim == 4 else array
        if name == "mni":
            array = array[42:154, 52:180, 38:150]
        if name == "t1mm":
            array = array[:, 20:212, :]
        return array, tuple(float(s) for s in image.header.get_zooms()[:3]), str(path)
    if name == "ct1mm":
        ref = dcm_qa_ct_series(dcm_qa_ct)["ref"]
        return (ref.array[0][CT5MM["crop"]], _spacing(ref.affine),
                f"{dcm_qa_ct}: {CT5MM['ref']}")
    rng = np.random.default_rng(100)
    if name == "chest":
        array, _ = chest_ct_sr(rng, (128, 128, 96), (0.7, 0.7, 1.0))
        return array.astype(np.float32), (0.7, 0.7, 1.0), "revmed chestct-sr phantom, seed 100"
    images, _, _ = brats_phantom(rng, (96, 112, 80), (1.0, 1.0, 1.0))
    return images[0].astype(np.float32), (1.0, 1.0, 1.0), "revmed brats-seg phantom T1, seed 100"


def write_case(array, spacing, path: Path, coarsen=(1, 1, 1)) -> None:
    """``array`` ``(I, J, K)`` on the grid of ``spacing`` coarsened ``coarsen``-fold per axis
    (same extent), as a one-channel volume at ``path`` (its folder made if missing)."""
    from revmed.io import Volume, make_affine, write_volume, zoom_affine

    affine = zoom_affine(make_affine(spacing), [1.0 / f for f in coarsen])
    path.parent.mkdir(parents=True, exist_ok=True)
    write_volume(Volume(np.asarray(array, np.float32)[None], affine), path)


def head_mask(array: np.ndarray) -> np.ndarray:
    """Otsu foreground of ``(I, J, K)`` with its holes filled, uint8."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    mask = sitk.BinaryFillhole(sitk.OtsuThreshold(image, 0, 1))
    return sitk.GetArrayFromImage(mask).transpose(2, 1, 0).astype(np.uint8)


def prepare(name: str, factor: int, work: Path, dcm_qa_ct: Path | None = None,
            volume_rendering_data: Path | None = None) -> dict:
    """Write a case's reference, mask and thick version; returns their paths."""
    from revmed.transforms import downsample

    array, spacing, source = load_case(name, dcm_qa_ct, volume_rendering_data)
    # whole thick slices only, so the thick scan covers the reference's extent exactly
    array = array[:, :, : array.shape[2] - array.shape[2] % factor]
    folder = work / f"{name}-{factor}x"
    folder.mkdir(parents=True, exist_ok=True)
    thick = downsample(array[None], (1, 1, factor))[0]
    files = {"ref": folder / "ref.nii.gz", "mask": folder / "mask.nii.gz",
             "thick": folder / "thick.nii.gz", "source": source, "folder": folder}
    write_case(array, spacing, files["ref"])
    write_case(head_mask(array), spacing, files["mask"])
    write_case(thick, spacing, files["thick"], (1, 1, factor))
    return files


def _spacing(affine: np.ndarray) -> tuple[float, float, float]:
    return tuple(float(s) for s in np.linalg.norm(affine[:3, :3], axis=0))


def dcm_qa_ct_series(checkout: Path | None) -> dict:
    """The thick and thin reconstructions of dcm_qa_ct's head phantom, as revmed reads them."""
    from revmed.io import read_volume
    from revmed.io.dicom.series import list_dicom_series

    if checkout is None:
        sys.exit("cases ct5mm and ct1mm need a checkout of "
                 "https://github.com/neurolabusc/dcm_qa_ct: --dcm-qa-ct PATH")
    folder = checkout / "In" / "Philips"
    found = {info.description: info for info in list_dicom_series(folder, recursive=True)}
    missing = [d for d in (CT5MM["thick"], CT5MM["ref"]) if d not in found]
    if missing:
        sys.exit(f"{folder}: no series {missing} (is it dcm_qa_ct?)")
    return {k: read_volume(folder, series=found[CT5MM[k]].uid) for k in ("thick", "ref")}


def prepare_pair(name: str, work: Path, dcm_qa_ct: Path | None) -> dict:
    """Write a real pair's reference, mask and thick scan (``ct5mm``); returns their paths."""
    series = dcm_qa_ct_series(dcm_qa_ct)
    thick, ref = series["thick"].array[0], series["ref"].array[0]
    factor = REAL_PAIRS[name]
    if thick.shape[2] * factor != ref.shape[2]:
        sys.exit(f"{dcm_qa_ct}: {thick.shape[2]} thick and {ref.shape[2]} thin slices")
    out = work / f"{name}-{factor}x"
    out.mkdir(parents=True, exist_ok=True)
    files = {"ref": out / "ref.nii.gz", "mask": out / "mask.nii.gz",
             "thick": out / "thick.nii.gz", "folder": out,
             "source": f"{dcm_qa_ct}: {CT5MM['thick']} -> {CT5MM['ref']}"}
    crop = CT5MM["crop"]
    spacing = _spacing(series["ref"].affine)
    write_case(ref[crop], spacing, files["ref"])
    write_case(head_mask(ref[crop]), spacing, files["mask"])
    write_case(thick[crop], spacing, files["thick"], (1, 1, factor))
    return files


def run_selfsr(files: dict, factor: int, args) -> tuple[Path, float, int]:
    """Run the command; returns the output, its wall time and the training steps it ran."""
    from revmed.checkpoint import load_checkpoint

    out = files["folder"] / "selfsr.nii.gz"
    command = [sys.executable, "-m", "revmed", "selfsr", str(files["thick"]), "-o", str(out),
               "--factor", str(factor), "--axis", "k", "--seed", "0", "--device", "cpu",
               "--overwrite", "--keep-model", "-q"]
    # the defaults unless asked: the time budget (240 s) and no step count
    if args.time_limit is not None:
        command += ["--time-limit", str(args.time_limit)]
    if args.steps is not None:
        command += ["--steps", str(args.steps)]
    start = time.monotonic()
    subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
    seconds = time.monotonic() - start
    steps = load_checkpoint(files["folder"] / "selfsr.selfsr.pt").metrics["selfsr_steps"]
    return out, seconds, int(steps)


def score(prediction: Path, files: dict) -> dict[str, dict[str, float]]:
    """Whole-volume PSNR/SSIM, PSNR in the mask and SSIM over its bounding box, and the RMSE
    inside the mask and outside it (the volume's units), per method."""
    from revmed import metrics
    from revmed.evaluation import evaluate
    from revmed.io import read_volume
    from revmed.transforms import upsample

    report = evaluate(prediction, files["ref"], mask=files["mask"], input=files["thick"],
                      baselines=["trilinear", "tricubic"])
    case = report.cases[0]
    ref = read_volume(files["ref"]).array
    mask = read_volume(files["mask"]).array[0] > 0
    box = tuple(slice(int(w.min()), int(w.max()) + 1) for w in np.nonzero(mask))
    thick = read_volume(files["thick"]).array
    factors = (1, 1, round(ref.shape[3] / thick.shape[3]))
    arrays = {"prediction": read_volume(prediction).array,
              "trilinear": upsample(thick, factors, "trilinear", shape=ref.shape[1:]),
              "tricubic": upsample(thick, factors, "bspline", shape=ref.shape[1:])}
    out = {}
    for method, values in case.metrics.items():
        crop = (slice(None), *box)
        out[method] = {
            "psnr": values["psnr"], "ssim": values["ssim"],
            "psnr_mask": 20 * math.log10(case.data_range) - 20 * math.log10(values["rmse_mask"]),
            "ssim_mask": metrics.ssim3d(arrays[method][crop], ref[crop], case.data_range,
                                        low=case.low),
            "rmse_mask": values["rmse_mask"],
            "rmse_outside": metrics.rmse(arrays[method], ref, ~mask) if (~mask).any() else 0.0}
    return out


def inference_ways(files: dict, factor: int) -> dict[str, dict[str, float]]:
    """The kept model of a case run again, in slabs with frozen norms (selfsr's way) and in
    blended windows: the seconds of each (reading and writing left out) and its scores."""
    from revmed.inference import Translator
    from revmed.io import read_volume, write_volume
    from revmed.selfsr.refine import plan_for, refine

    translator = Translator.load(files["folder"] / "selfsr.selfsr.pt")
    volume = read_volume(files["thick"])
    plan = plan_for(volume, factor=factor, axis="k")
    out = {}
    for way, tiling in (("tiles", "auto"), ("windows", "windows")):
        start = time.monotonic()
        result = refine(translator, volume, plan, tiling=tiling)
        seconds = time.monotonic() - start
        path = files["folder"] / f"selfsr-{way}.nii.gz"
        write_volume(result, path)
        out[way] = {"seconds": seconds, **score(path, files)["prediction"]}
    return out


def ways_table(rows: list[dict]) -> str:
    """Tiles (slabs, frozen norms) against blended windows of the same kept model."""
    lines = ["| case | factor | PSNR fg tiles | PSNR fg windows | tiles − windows | "
             "SSIM fg tiles / windows | RMSE fg tiles / windows | RMSE outside tiles / "
             "windows | seconds tiles | seconds windows |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "ways" not in r:
            continue
        t, w = r["ways"]["tiles"], r["ways"]["windows"]
        rmse = [f"{t[k]:.1f} / {w[k]:.1f}" if k in t else "-"
                for k in ("rmse_mask", "rmse_outside")]  # not in runs before 2026-12-03
        lines.append(f"| {r['case']} | {r['factor']}× | {t['psnr_mask']:.3f} | "
                     f"{w['psnr_mask']:.3f} | {t['psnr_mask'] - w['psnr_mask']:+.3f} | "
                     f"{t['ssim_mask']:.4f} / {w['ssim_mask']:.4f} | {rmse[0]} | {rmse[1]} | "
                     f"{t['seconds']:.1f} | {w['seconds']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--factors", default="4,6")
    parser.add_argument("--time-limit", type=float, default=None,
                        help="selfsr's --time-limit (default: selfsr's own, 240 s)")
    parser.add_argument("--steps", type=int, default=None,
                        help="selfsr's --steps (default: none, the time budget decides)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--hr-only", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--compare-windows", action="store_true",
                        help="also run each kept model in slabs and in blended windows")
    parser.add_argument("--dcm-qa-ct", type=Path, default=None, metavar="PATH",
                        help="a checkout of github.com/neurolabusc/dcm_qa_ct (case ct5mm)")
    parser.add_argument("--volume-rendering-data", type=Path, default=None, metavar="PATH",
                        help="a clone of github.com/neurolabusc/VolumeRenderingData (case t1mm)")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/selfsr.json"))
    parser.add_argument("--tables", type=Path, default=None, metavar="JSON",
                        help="print the tables of an earlier run's JSON and exit")
    args = parser.parse_args()
    if args.tables is not None:
        _print_tables(json.loads(args.tables.read_text()))
        return
    import torch

    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(Path(__file__).parent))
    work = args.work or Path(tempfile.mkdtemp(prefix="selfsr-bench-"))
    rows = []
    cases = args.cases.split(",")
    runs = [(f, name) for f in (int(f) for f in args.factors.split(","))
            for name in cases if name not in REAL_PAIRS]
    runs += [(REAL_PAIRS[name], name) for name in cases if name in REAL_PAIRS]
    hr_models: dict = {}  # factor -> domain -> model
    for factor, name in runs:
        files = (prepare_pair(name, work, args.dcm_qa_ct) if name in REAL_PAIRS
                 else prepare(name, factor, work, args.dcm_qa_ct, args.volume_rendering_data))
        prediction, seconds, steps = run_selfsr(files, factor, args)
        result = {"case": name, "factor": factor, "source": files["source"],
                  "selfsr_seconds": seconds, "selfsr_steps": steps,
                  "load": os.getloadavg()[0], **_renamed(score(prediction, files))}
        if args.hr_only:
            from _selfsr_hronly import hr_only_prediction

            domain = "mri" if name in MRI else "ct"  # the synthetic chest CTs for ct*
            hr_path = hr_only_prediction(files, factor, domain,
                                         hr_models.setdefault(factor, {}), args)
            result["hr-only"] = score(hr_path, files)["prediction"]
        if args.compare_windows:
            result["ways"] = inference_ways(files, factor)
        rows.append(result)
        print(json.dumps(result), flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(rows, indent=2))
    _print_tables(rows)


def _print_tables(rows: list[dict]) -> None:
    print(table(rows))
    if any("ways" in r for r in rows):
        print("\nThe same kept models run again: slabs with frozen norms (selfsr's way) "
              "against blended windows with per-window norms; both orientations:\n")
        print(ways_table(rows))


def _renamed(scores: dict) -> dict:
    return {"selfsr" if k == "prediction" else k: v for k, v in scores.items()}


def table(rows: list[dict]) -> str:
    """Per case and factor: each method's PSNR in the mask (and whole), SSIM in the mask;
    then the medians per factor."""
    methods = [m for m in METHODS if any(m in r for r in rows)]
    head = ("| case | factor | " + " | ".join(f"{m} PSNR fg / all" for m in methods)
            + " | " + " | ".join(f"{m} SSIM fg / all" for m in methods)
            + " | selfsr − tricubic fg dB | selfsr s (steps) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for factor in sorted({r["factor"] for r in rows}):
        group = [r for r in rows if r["factor"] == factor]
        real = [r for r in group if r["case"] in REAL_MRI]
        medians = ([_median(real, "**median, real MRI**")] if 1 < len(real) < len(group)
                   else [])
        for r in group + medians + [_median(group)]:
            psnr = [f"{r[m]['psnr_mask']:.2f} / {r[m]['psnr']:.2f}" for m in methods]
            ssim = [f"{r[m]['ssim_mask']:.4f} / {r[m]['ssim']:.4f}" for m in methods]
            gain = r.get("gain", r["selfsr"]["psnr_mask"] - r["tricubic"]["psnr_mask"])
            lines.append(f"| {r['case']} | {factor}× | " + " | ".join(psnr + ssim)
                         + f" | {gain:+.2f} | {r['selfsr_seconds']:.0f}{_steps(r)} |")
    return "\n".join(lines)


def _steps(row: dict) -> str:
    return f" ({row['selfsr_steps']})" if "selfsr_steps" in row else ""


def _median(group: list[dict], name: str = "**median**") -> dict:
    methods = [m for m in METHODS if m in group[0]]
    out = {"case": name, "selfsr_seconds": float(np.median(
        [r["selfsr_seconds"] for r in group]))}
    for m in methods:
        out[m] = {k: float(np.median([r[m][k] for r in group])) for k in group[0][m]}
    # the median of the gains, not the gain of the medians
    out["gain"] = float(np.median([r["selfsr"]["psnr_mask"] - r["tricubic"]["psnr_mask"]
                                   for r in group]))
    return out


if __name__ == "__main__":
    main()
