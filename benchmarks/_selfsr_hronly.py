"""The hr-only comparison of benchmarks/selfsr.py: the same network trained for the same time
on separate isotropic volumes (synthetic brain T1 phantoms for MRI, synthetic chest CTs for
CT), thick slices simulated along k by block means, then applied to the benchmark's scans."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from revmed import config
from revmed.checkpoint import Checkpoint, ModelCard
from revmed.data.synthetic.brain import brats_phantom
from revmed.data.synthetic.chest_ct import chest_ct_sr
from revmed.engine.setup import build_training_step
from revmed.inference import Translator
from revmed.io import read_volume, write_volume
from revmed.selfsr.pairs import thick_slices
from revmed.selfsr.sampling import PatchSampler
from revmed.selfsr.training import scan_window
from revmed.transforms import normalise

#: MRI volumes are scaled so that this percentile is 1 (their units are arbitrary).
SCALE_PERCENTILE = 99.9


def external_volumes(domain: str) -> list[np.ndarray]:
    """Four isotropic volumes of the domain, none of them a benchmark case (other seeds)."""
    out = []
    for seed in range(200, 204):
        rng = np.random.default_rng(seed)
        if domain == "ct":
            out.append(chest_ct_sr(rng, (128, 128, 96), (0.7, 0.7, 1.0))[0])
        else:
            t1 = brats_phantom(rng, (96, 112, 80), (1.0, 1.0, 1.0))[0][0]
            out.append(t1 / np.percentile(t1, SCALE_PERCENTILE))
    return [np.asarray(v, np.float32) for v in out]


def train(domain: str, factor: int, args) -> Checkpoint:
    volumes = external_volumes(domain)
    window = scan_window(volumes)
    preset = config.load_preset("selfsr", [
        "patch.size=[32,32,32]", "train.batch_size=4", f"data.sr_factors=[1,1,{factor}]",
        f"data.window=[{window[0]!r}, {window[1]!r}]"])
    pairs = []
    for v in volumes:
        v = v[:, :, : (v.shape[2] // factor) * factor]
        x = thick_slices(v, 2, factor, float(factor))
        pairs.append((normalise(x[None], "window", window)[0],
                      normalise(v[None], "window", window)[0]))
    torch.manual_seed(0)
    step = build_training_step(preset, torch.device("cpu"))
    sampler = PatchSampler(pairs, preset.patch.size, 0)
    start, done = time.monotonic(), 0
    while done < args.steps and time.monotonic() - start < args.time_limit:
        step.step(sampler.batch(preset.train.batch_size))
        done += 1
    print(f"hr-only {domain} {factor}x: {done} steps in {time.monotonic() - start:.0f} s",
          flush=True)
    state = {"generator": step.model.state_dict()}
    return Checkpoint(ModelCard.of(preset, ("image",)), preset, state)


def hr_only_prediction(files: dict, factor: int, domain: str, cache: dict, args) -> Path:
    if domain not in cache:
        cache[domain] = train(domain, factor, args)
    translator = Translator.from_checkpoint(cache[domain], f"hr-only {domain}")
    thick = read_volume(files["thick"])
    scale = float(np.percentile(thick.array, SCALE_PERCENTILE)) if domain == "mri" else 1.0
    out = translator.translate(thick.with_array(thick.array / scale))
    path = files["folder"] / "hr_only.nii.gz"
    write_volume(out.with_array(out.array * scale), path)
    return path
