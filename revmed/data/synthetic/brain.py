"""Synthetic brain phantoms: diffusion tensors (HCP-like) and 4-modality tumour MRI (BraTS-like).

Both start from ``brain_tissues``: an ellipsoidal brain with an irregular surface, a CSF rim,
a folded grey-matter cortex, white matter inside, two lateral ventricles, deep grey nuclei and
an interhemispheric fissure. Tissue maps are partial-volume fractions (CSF + GM + WM = 1 inside
the brain mask, 0 outside).

Geometry is relative to the field of view, so the brain fills any grid shape. Voxel axes are
world axes: i = x (left to right), j = y (posterior to anterior), k = z (inferior to superior).
"""

from __future__ import annotations

import numpy as np

from revmed.data.synthetic.fields import grid_mm, smooth_noise, smoothstep_inside, unit

#: Mean diffusivities (1e-3 mm^2/s) of isotropic tissues and white-matter eigenvalues.
CSF_MD, GM_MD = 3.0, 0.8
WM_EIGENVALUES = (1.6, 0.32, 0.28)


def brain_tissues(rng: np.random.Generator, shape, spacing) -> dict:
    """Tissue fractions of a brain phantom.

    Returns a dict with ``mask`` (bool), ``csf``, ``gm``, ``wm`` (float32 fractions), the
    normalised coordinates ``nx, ny, nz`` (broadcastable; the brain ellipsoid is about the unit
    sphere in them), ``level`` (normalised radius, < 1 inside the brain) and ``voxel`` (one
    voxel in normalised units).
    """
    shape = tuple(int(s) for s in shape)
    spacing = np.asarray(spacing, dtype=np.float64)
    x, y, z = grid_mm(shape, spacing)
    fov = np.asarray(shape) * spacing
    u = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731

    semi = fov * np.array([0.40, 0.42, 0.40]) * np.array([u(0.94, 1.04) for _ in range(3)])
    centre = fov * np.array([0.0, u(-0.02, 0.02), u(-0.03, 0.02)])
    nx = (x - centre[0]) / semi[0]
    ny = (y - centre[1]) / semi[1]
    nz = (z - centre[2]) / semi[2]
    voxel = float(np.mean(spacing / semi))  # one voxel in normalised units

    # Irregular outer surface (low-frequency bumps), flatter base.
    bumps = smooth_noise(rng, shape, np.maximum(3.0, np.asarray(shape) / 10.0))
    nzz = np.where(nz < 0, nz * 1.15, nz)
    level = np.sqrt(nx ** 2 + ny ** 2 + nzz ** 2) + 0.03 * bumps
    brain = smoothstep_inside(level, 1.0, voxel)
    mask = level < 1.0

    # Cortex: a folded shell (high-frequency gyri) under a thin CSF rim.
    gyri = smooth_noise(rng, shape, 1.2)
    cortex_in = 0.80 + 0.05 * gyri
    gm_shell = 1.0 - smoothstep_inside(level, cortex_in, voxel)
    sulci = smoothstep_inside(-gyri, -1.0, 0.5) * (1.0 - smoothstep_inside(level, 0.87, voxel))
    csf_rim = np.maximum(1.0 - smoothstep_inside(level, 0.95, voxel), sulci)

    # Interhemispheric fissure.
    fissure = smoothstep_inside(np.abs(nx - 0.02 * bumps), 0.5 * voxel, voxel)
    fissure *= 1.0 - smoothstep_inside(level + 0.25 * np.clip(-nz, 0, None), 0.55, voxel)

    # Lateral ventricles (a pair of curved ellipsoids) and deep grey nuclei.
    ventricles = np.zeros(shape, dtype=np.float32)
    nuclei = np.zeros(shape, dtype=np.float32)
    vsize = u(0.8, 1.3)
    for side in (-1.0, 1.0):
        vx = side * 0.11 * u(0.85, 1.15)
        vz = 0.08 + 0.25 * ny ** 2  # arching: the horns drop towards front and back
        v = np.sqrt(((nx - vx) / (0.07 * vsize)) ** 2 + (ny / 0.42) ** 2
                    + ((nz - vz) / (0.10 * vsize)) ** 2)
        np.maximum(ventricles, smoothstep_inside(v, 1.0, voxel / 0.08), out=ventricles)
        n = np.sqrt(((nx - side * 0.24) / 0.12) ** 2 + ((ny + 0.02) / 0.17) ** 2
                    + ((nz + 0.08) / 0.13) ** 2)
        np.maximum(nuclei, smoothstep_inside(n, 1.0, voxel / 0.12), out=nuclei)

    csf = np.maximum.reduce([csf_rim, fissure, ventricles]) * brain
    gm = np.maximum(gm_shell, nuclei) * (brain - csf)
    wm = brain - csf - gm
    outside = ~mask
    for t in (csf, gm, wm):
        t[outside] = 0.0
    total = csf + gm + wm
    inside_empty = mask & (total < 1e-3)  # voxels at the rim with no fraction left: CSF
    csf[inside_empty] = 1.0
    total = np.where(mask, csf + gm + wm, 1.0)
    csf, gm, wm = (np.clip(t / total, 0.0, 1.0).astype(np.float32) for t in (csf, gm, wm))
    return {"mask": mask, "csf": csf, "gm": gm, "wm": wm, "nx": nx, "ny": ny, "nz": nz,
            "level": level, "voxel": voxel}


def _fibre_directions(rng: np.random.Generator, t: dict, shape) -> tuple[np.ndarray, np.ndarray]:
    """A smooth field of principal fibre directions and how coherent the local bundle is.

    Blends three tract systems, each a smooth bump in space: a corpus callosum (left-right,
    arching upwards laterally), corticospinal tracts (inferior-superior) and longitudinal
    association bundles (anterior-posterior), plus a smooth random field where none dominates.
    Returns ``(v, coherence)``: ``v`` of shape ``(3, I, J, K)`` unit vectors, coherence in [0, 1].
    """
    nx, ny, nz = t["nx"], t["ny"], t["nz"]
    u = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731
    full = np.ones(shape, dtype=np.float32)

    cc_z = u(0.22, 0.32)
    w_cc = np.exp(-((nz - cc_z) / 0.12) ** 2 - (ny / 0.55) ** 2 - (nx / 0.7) ** 4) * full
    v_cc = np.stack([full, 0.0 * full, 1.6 * nx * full])

    cst_x = u(0.25, 0.35)
    w_cst = np.exp(-((np.abs(nx) - cst_x) / 0.12) ** 2 - ((ny + 0.05) / 0.3) ** 2) * full
    w_cst *= (nz < 0.75)
    v_cst = np.stack([0.25 * nx * full, 0.1 * full, full])

    slf_x = u(0.45, 0.55)
    w_slf = np.exp(-((np.abs(nx) - slf_x) / 0.12) ** 2 - ((nz - 0.05) / 0.25) ** 2) * full
    v_slf = np.stack([0.0 * full, full, 0.3 * ny * full])

    sigma = np.maximum(2.0, np.asarray(shape) / 8.0)
    v_rand = np.stack([smooth_noise(rng, shape, sigma) for _ in range(3)])

    weights = np.stack([w_cc, w_cst, w_slf])
    v = (w_cc * unit(v_cc) + w_cst * unit(v_cst) + w_slf * unit(v_slf)
         + 0.25 * unit(v_rand))
    coherence = np.clip(weights.max(axis=0) * 1.3, 0.0, 1.0).astype(np.float32)
    return unit(v).astype(np.float32), coherence


def dti_phantom(rng: np.random.Generator, shape, spacing) -> tuple[np.ndarray, np.ndarray]:
    """A diffusion-tensor brain: six components (Dxx, Dxy, Dxz, Dyy, Dyz, Dzz) in 1e-3 mm^2/s.

    Each voxel's tensor is built from an eigen-decomposition: white matter has eigenvalues about
    (1.6, 0.32, 0.28) along the local fibre direction (less anisotropic where no bundle is
    coherent), grey matter (0.8) and CSF (3.0) are isotropic; partial-volume voxels mix tensors
    by their tissue fractions (a convex sum of positive definite tensors stays positive definite),
    and per-voxel noise scales the eigenvalues by log-normal factors (which keeps them positive).
    Outside the brain mask every component is 0.

    Returns ``(tensors, mask)``: float32 ``(6, I, J, K)`` and bool ``(I, J, K)``.
    """
    shape = tuple(int(s) for s in shape)
    t = brain_tissues(rng, shape, spacing)
    v, coherence = _fibre_directions(rng, t, shape)

    # A second, perpendicular direction (the secondary eigenvector).
    ref = np.where(np.abs(v[0:1]) < 0.9, np.array([1.0, 0, 0], np.float32)[:, None, None, None],
                   np.array([0, 1.0, 0], np.float32)[:, None, None, None])
    w = unit(np.cross(v, ref, axis=0)).astype(np.float32)
    n3 = np.cross(v, w, axis=0).astype(np.float32)

    l1, l2, l3 = WM_EIGENVALUES
    lam1 = 1.15 + (l1 - 1.15) * coherence
    lam2 = 0.5 + (l2 - 0.5) * coherence
    lam3 = 0.45 + (l3 - 0.45) * coherence
    noise = lambda s: np.exp(s * rng.standard_normal(shape, dtype=np.float32))  # noqa: E731
    lam1, lam2, lam3 = lam1 * noise(0.04), lam2 * noise(0.06), lam3 * noise(0.06)

    iso = (t["gm"] * GM_MD + t["csf"] * CSF_MD) * noise(0.03)
    wm = t["wm"]
    pairs = [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)]
    out = np.empty((6,) + shape, dtype=np.float32)
    for c, (a, b) in enumerate(pairs):
        d = lam1 * v[a] * v[b] + lam2 * w[a] * w[b] + lam3 * n3[a] * n3[b]
        d *= wm
        if a == b:
            d += iso
        d[~t["mask"]] = 0.0
        out[c] = d
    return out, t["mask"]


#: Relative signal of each tissue per modality (t1, t1ce, t2, flair), before scaling.
_TISSUE_SIGNAL = {
    "csf": (0.25, 0.30, 1.60, 0.15),
    "gm": (0.70, 0.72, 0.80, 0.85),
    "wm": (1.00, 1.00, 0.55, 0.60),
    "oedema": (0.60, 0.62, 1.30, 1.45),
    "enhancing": (0.75, 1.75, 1.00, 1.10),
    "necrosis": (0.35, 0.30, 1.50, 0.90),
}
MODALITIES = ("t1", "t1ce", "t2", "flair")


def brats_phantom(rng: np.random.Generator, shape, spacing, hemisphere: float = 1.0):
    """A 4-modality brain MRI with a tumour, BraTS style (skull-stripped, 0 outside the brain).

    The tumour is three nested smooth random blobs (level sets of a distance plus smoothed
    noise): necrotic core (label 1) inside the enhancing rim (label 4) inside the oedema
    (label 2), placed in the hemisphere of sign ``hemisphere`` (-1 left, +1 right). Intensities
    mix tissue signals by partial-volume fractions, then a smooth multiplicative bias field and
    Rician-like noise are applied.

    Returns ``(images, labels, mask)``: float32 ``(4, I, J, K)``, uint8 ``(I, J, K)`` with values
    in {0, 1, 2, 4}, bool ``(I, J, K)``.
    """
    shape = tuple(int(s) for s in shape)
    t = brain_tissues(rng, shape, spacing)
    nx, ny, nz, voxel = t["nx"], t["ny"], t["nz"], t["voxel"]
    u = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731

    # Tumour centre inside the hemisphere's white matter, away from the midline.
    c = np.array([np.sign(hemisphere or 1.0) * u(0.3, 0.5), u(-0.35, 0.35), u(-0.1, 0.35)])
    dist = np.sqrt((nx - c[0]) ** 2 + (ny - c[1]) ** 2 + (nz - c[2]) ** 2)
    r_wt = u(0.32, 0.45)
    # Proportions of BraTS training cases: the tumour core is about a third of the whole tumour
    # and the necrosis about a third of the core (radii 0.62-0.78 and 0.6-0.75 of the next).
    r_tc = r_wt * u(0.62, 0.78)
    r_nec = r_tc * u(0.6, 0.75)
    sig = np.maximum(1.5, np.asarray(shape) / 14.0)
    n_wt, n_tc = smooth_noise(rng, shape, sig), smooth_noise(rng, shape, sig)
    inside_brain = smoothstep_inside(t["level"], 0.9, voxel)
    # Oedema spreads along white matter; the core keeps a rounder shape.
    a_wt = smoothstep_inside(dist / r_wt + 0.25 * n_wt - 0.25 * (t["wm"] - 0.5), 1.0, voxel / r_wt)
    a_tc = smoothstep_inside(dist / r_tc + 0.12 * n_tc, 1.0, voxel / r_tc)
    a_nec = smoothstep_inside(dist / r_nec + 0.12 * n_tc, 1.0, voxel / r_nec)
    a_wt = np.maximum(a_wt, a_tc) * inside_brain
    a_tc = np.minimum(a_tc, a_wt)
    a_nec = np.minimum(a_nec, a_tc)

    labels = np.zeros(shape, dtype=np.uint8)
    labels[a_wt >= 0.5] = 2
    labels[a_tc >= 0.5] = 4
    labels[a_nec >= 0.5] = 1
    labels[~t["mask"]] = 0
    if not np.any(labels == 4):  # tiny grids: keep an enhancing voxel at the centre
        idx = tuple(int(np.argmin(np.abs(arr.ravel() - cc))) for arr, cc in zip((nx, ny, nz), c))
        if t["mask"][idx]:
            labels[idx] = 4
            a_wt[idx], a_tc[idx], a_nec[idx] = 1.0, 1.0, 0.0

    w_nec = a_nec
    w_et = a_tc - a_nec
    w_ed = a_wt - a_tc
    w_tissue = 1.0 - a_wt
    et_texture = 1.0 + 0.12 * smooth_noise(rng, shape, 1.0)

    scale = u(400.0, 600.0)
    bias_sigma = np.maximum(2.0, np.asarray(shape) / 4.0)
    images = np.empty((4,) + shape, dtype=np.float32)
    for m in range(4):
        sig_t = (t["csf"] * _TISSUE_SIGNAL["csf"][m] + t["gm"] * _TISSUE_SIGNAL["gm"][m]
                 + t["wm"] * _TISSUE_SIGNAL["wm"][m])
        s = (w_tissue * sig_t + w_ed * (0.35 * sig_t + 0.65 * _TISSUE_SIGNAL["oedema"][m])
             + w_et * _TISSUE_SIGNAL["enhancing"][m] * et_texture
             + w_nec * _TISSUE_SIGNAL["necrosis"][m])
        bias = np.exp(0.12 * smooth_noise(rng, shape, bias_sigma))
        s = s * bias * scale
        noise_sd = 0.025 * scale
        re = s + noise_sd * rng.standard_normal(shape, dtype=np.float32)
        im = noise_sd * rng.standard_normal(shape, dtype=np.float32)
        s = np.sqrt(re * re + im * im)
        s[~t["mask"]] = 0.0
        images[m] = s
    return images, labels, t["mask"]
