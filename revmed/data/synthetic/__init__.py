"""Synthetic datasets in revmed's dataset layout, so every workflow runs without private scans.

``datasets`` writes whole dataset folders (``revmed synth``); ``chest_ct`` and ``brain`` draw
the phantoms (chest CT in HU with two reconstruction kernels; diffusion tensors; four-modality
brain MRI with a BraTS tumour); ``fields`` holds the smooth random fields they are built from.
"""

from revmed.data.synthetic.datasets import (MIN_EDGE, TASKS, SynthTask, case_rng, split_counts,
                                            synthesize)

__all__ = ["MIN_EDGE", "TASKS", "SynthTask", "case_rng", "split_counts", "synthesize"]
