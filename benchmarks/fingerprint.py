"""Digests of what revmed computes on fixed seeds, to show that a change of the code's shape
changed no result: run it before and after, and compare the two tables (or the JSON).

Each row runs one command of the CLI on a small synthetic dataset made with a fixed seed, in
a fresh temporary folder, and prints the SHA-256 of what it wrote, read back as numbers (the
trained weights, in name order; output volumes' voxels and affines; eval's metrics rounded to
9 digits), so that file names, dates and UIDs do not count:

* ``train sr``, ``train seg``: ``demo-sr`` / ``demo-seg`` shrunk to one short epoch;
* ``infer sr``, ``infer seg``: each trained model on the first test case;
* ``selfsr``: 40 steps on one synthetic thick-slice case;
* ``eval``: the SR output against its reference.

    python benchmarks/fingerprint.py --json before.json      # about 2 min on 2 cores
    python benchmarks/fingerprint.py --json after.json --compare before.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

SR_SETS = ["patch.size=[16,16,16]", "patch.per_volume=4", "model.width=8", "model.depth=2",
           "model.disc_width=4", "model.disc_layers=2", "train.batch_size=2", "train.epochs=1",
           "train.time_limit=0", "train.seed=3"]
SEG_SETS = ["patch.size=[16,16,16]", "patch.per_volume=4", "model.width=4",
            "model.scales=2", "model.blocks_per_scale=1", "train.batch_size=2",
            "train.epochs=1", "train.epochs_decay=0", "train.time_limit=0", "train.seed=3"]


def digest_arrays(*arrays) -> str:
    h = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        h.update(str(array.dtype).encode() + str(array.shape).encode())
        h.update(array.tobytes())
    return h.hexdigest()[:16]


def digest_checkpoint(path: Path) -> str:
    from revmed.checkpoint import read_payload

    weights = read_payload(path)["state"]["generator"]
    return digest_arrays(*(weights[k].numpy() for k in sorted(weights)))


def digest_volume(path: Path) -> str:
    from revmed.io import read_volume

    volume = read_volume(path)
    return digest_arrays(volume.array, volume.affine)


def cli(*args) -> None:
    from revmed.cli.app import run

    code = run([str(a) for a in args])
    if code != 0:
        raise SystemExit(f"revmed {' '.join(map(str, args))} exited {code}")


def fingerprint(work: Path) -> dict[str, str]:
    rows = {}
    cli("synth", "chestct-sr", work / "sr", "--cases", "3", "--shape", "24,24,16", "--seed",
        "4", "-q")
    cli("synth", "brats-seg", work / "seg", "--cases", "3", "--shape", "24,24,24", "--seed",
        "4", "-q")
    cli("train", "--preset", "demo-sr", "--data", work / "sr", "--out", work / "run-sr", "-q",
        *[a for s in SR_SETS for a in ("--set", s)])
    rows["train sr"] = digest_checkpoint(work / "run-sr" / "last.pt")
    cli("train", "--preset", "demo-seg", "--data", work / "seg", "--out", work / "run-seg",
        "-q", *[a for s in SEG_SETS for a in ("--set", s)])
    rows["train seg"] = digest_checkpoint(work / "run-seg" / "last.pt")
    low = sorted((work / "sr" / "test").rglob("*.nii.gz"))[0]
    cli("infer", low, "-o", work / "sr.nii.gz", "--model", work / "run-sr" / "last.pt", "-q")
    rows["infer sr"] = digest_volume(work / "sr.nii.gz")
    case = sorted((work / "seg" / "test" / "images").iterdir())[0]  # one file per channel
    cli("infer", *sorted(case.iterdir()), "-o", work / "seg.nii.gz", "--model",
        work / "run-seg" / "last.pt", "-q")
    rows["infer seg"] = digest_volume(work / "seg.nii.gz")
    cli("selfsr", low, "-o", work / "selfsr.nii.gz", "--factor", "4", "--steps", "40",
        "--time-limit", "0", "--seed", "2", "-q")
    rows["selfsr"] = digest_volume(work / "selfsr.nii.gz")
    cli("eval", work / "sr.nii.gz", work / "sr.nii.gz", "--data-range", "1500",
        "--json-out", work / "eval.json", "-q")
    scores = json.loads((work / "eval.json").read_text())
    cases = scores.get("cases", scores)
    rows["eval"] = hashlib.sha256(json.dumps(_rounded(cases), sort_keys=True)
                                  .encode()).hexdigest()[:16]
    return rows


def _rounded(value):
    if isinstance(value, float):
        return round(value, 9)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items() if k not in ("files", "preview")}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--compare", type=Path)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    with tempfile.TemporaryDirectory() as tmp:
        rows = fingerprint(Path(tmp))
    before = json.loads(args.compare.read_text()) if args.compare else {}
    print("| run | digest |" + (" before | same |" if before else ""))
    print("|---|---|" + ("---|---|" if before else ""))
    for name, value in rows.items():
        extra = f" {before.get(name, '-')} | {'yes' if before.get(name) == value else 'NO'} |" \
            if before else ""
        print(f"| {name} | {value} |{extra}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    if before and any(before.get(k) != v for k, v in rows.items()):
        sys.exit(1)


if __name__ == "__main__":
    main()
