"""Planning memory: what patch, batch and depth of a preset fit in a given memory.

The planner measures the peak memory of one training step of the preset's model and objective
(the generator step and, for the RevGAN, the critics' step, with Adam's moments in place) at a
few small patch sizes on random tensors (``measure``), fits a model to the measurements
(``fit``) and solves it for the memory given (``solve``). What it plans for is a
``TrainingSetup`` (``training_setup``): the preset's patch and its ``[model]``, ``[data]`` and
``[train]`` sections; what it needs to know of the model (the depth key and its least value,
the patch multiple, the smallest edge training runs at) it asks the model family
(``revmed.models.registry.ModelFamily``). The model::

    peak(V, B, D) = fixed + 16 x parameters(D) + B x V x per_voxel  (+ the image pool)

``V`` is the voxels of a patch, ``B`` the batch and ``D`` the reversible depth (the RevGAN
core's ``model.depth``, the iUNet's ``model.blocks_per_scale``). Each float32 parameter costs
16 bytes while training: the weight, its gradient and Adam's two moments. ``per_voxel`` is
what one voxel of one batch item costs: activations, gradients and temporaries, summed over
every channel. It does not depend on the depth: memory-free backpropagation rebuilds each
block's activations in backward instead of storing them, so a deeper core needs only its
parameters (``tests/planning/test_measure.py`` checks this). ``fixed`` absorbs what depends on
neither. With ``model.memory_saving = false`` activations do grow with depth and the planner
predicts no depth.

The CycleGAN objective keeps a pool of ``pool_size`` generated volumes per domain for the
critics (``ImagePool``: each a copy of one generated volume), so the pool is counted as
``pool_size x (in + out channels) x V x 4`` bytes, its size once full.

How a step is measured, on CUDA and on the CPU (in a fresh process, ``python -m
revmed.planning``), is in ``revmed.planning.measure``.
"""

from revmed.planning.fit import (BYTES_PER_PARAMETER, FIT_BATCH, PeakModel, fit, fit_edges,
                                 measure_fit)
from revmed.planning.measure import (Measurement, measure_here, measure_step, synthetic_batch,
                                     tensor_bytes)
from revmed.planning.solve import MAX_DEPTH, Plan, make_plan, plan
from revmed.planning.training_setup import TrainingSetup, count_parameters

__all__ = ["BYTES_PER_PARAMETER", "FIT_BATCH", "MAX_DEPTH", "Measurement", "PeakModel", "Plan",
           "TrainingSetup", "count_parameters", "fit", "fit_edges", "make_plan", "measure_fit",
           "measure_here", "measure_step", "plan", "synthetic_batch", "tensor_bytes"]
