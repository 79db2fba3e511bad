"""Small numpy building blocks shared by the synthetic phantoms.

Everything here is vectorised numpy (no scipy, no torch) so that the phantoms are byte-identical
for the same seed on any machine with the same numpy: Gaussian smoothing is done with numpy's
FFT (pocketfft, deterministic), never with a multithreaded convolution.

Coordinates are millimetres in the RAS+ frame of a volume whose voxel axes are aligned with the
world axes and whose centre is the world origin (see ``centred_affine``).
"""

from __future__ import annotations

import numpy as np

from revmed.io.volume import make_affine


def centred_affine(shape, spacing) -> np.ndarray:
    """RAS+ affine with identity direction whose grid centre lies at the world origin."""
    shape = np.asarray(shape, dtype=np.float64)
    spacing = np.asarray(spacing, dtype=np.float64)
    return make_affine(spacing, origin=-(shape - 1.0) / 2.0 * spacing)


def grid_mm(shape, spacing) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Open (broadcastable) world coordinates in mm of the voxel centres, origin at the centre.

    Returns ``x`` of shape ``(I, 1, 1)``, ``y`` of shape ``(1, J, 1)`` and ``z`` of shape
    ``(1, 1, K)``, float32.
    """
    out = []
    for axis, (n, s) in enumerate(zip(shape, spacing)):
        c = (np.arange(n, dtype=np.float64) - (n - 1) / 2.0) * float(s)
        view = [1, 1, 1]
        view[axis] = n
        out.append(c.astype(np.float32).reshape(view))
    return out[0], out[1], out[2]


def _gaussian_transfer(n: int, sigma: float, real: bool) -> np.ndarray:
    """Fourier transfer function of a sampled Gaussian of ``sigma`` voxels on ``n`` samples."""
    f = np.fft.rfftfreq(n) if real else np.fft.fftfreq(n)
    return np.exp(-2.0 * (np.pi * sigma * f) ** 2).astype(np.float32)


def blur(array: np.ndarray, sigma, periodic: bool = False) -> np.ndarray:
    """Gaussian blur of a 3D array by ``sigma`` voxels (a number or one per axis).

    The borders are mirrored (``reflect``) unless ``periodic`` is true (fine for noise fields,
    and cheaper). A sigma of 0 leaves that axis alone. Returns float32.
    """
    a = np.asarray(array, dtype=np.float32)
    sig = np.broadcast_to(np.asarray(sigma, dtype=np.float64), (3,))
    if not np.any(sig > 0):
        return a.copy()
    pads = [(0, 0) if periodic or s <= 0 else (min(int(np.ceil(3 * s)), n - 1),) * 2
            for s, n in zip(sig, a.shape)]
    if any(p[0] for p in pads):
        a = np.pad(a, pads, mode="reflect")
    spectrum = np.fft.rfftn(a)
    for axis, s in enumerate(sig):
        if s <= 0:
            continue
        n = a.shape[axis]
        h = _gaussian_transfer(n, s, real=(axis == 2))
        view = [1, 1, 1]
        view[axis] = h.size
        spectrum *= h.reshape(view)
    out = np.fft.irfftn(spectrum, s=a.shape, axes=(0, 1, 2)).astype(np.float32)
    if any(p[0] for p in pads):
        out = out[tuple(slice(p[0], p[0] + n) for p, n in zip(pads, array.shape))]
    return np.ascontiguousarray(out)


def smooth_noise(rng: np.random.Generator, shape, sigma) -> np.ndarray:
    """White noise blurred by ``sigma`` voxels (periodic), rescaled to zero mean and unit std."""
    n = rng.standard_normal(tuple(shape), dtype=np.float32)
    n = blur(n, sigma, periodic=True)
    n -= n.mean()
    std = float(n.std())
    return n / std if std > 0 else n


def smoothstep_inside(level: np.ndarray, threshold: float, width: float) -> np.ndarray:
    """Soft indicator of ``level < threshold``: 1 inside, 0 outside, a linear ramp ``width`` wide.

    Used for partial-volume edges: with ``width`` one voxel (in the units of ``level``), an edge
    between two voxel centres gets intermediate values as a real scanner would record.
    """
    w = max(float(width), 1e-6)
    return np.clip((threshold - level) / w + 0.5, 0.0, 1.0).astype(np.float32)


def unit(v: np.ndarray, axis: int = 0, eps: float = 1e-8) -> np.ndarray:
    """``v`` normalised to unit length along ``axis``."""
    return v / np.maximum(np.linalg.norm(v, axis=axis, keepdims=True), eps)
