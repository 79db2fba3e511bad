"""Synthetic chest CT phantoms in Hounsfield units.

``chest_anatomy`` draws a noise-free chest: air outside (-1000 HU), an elliptical body with a
subcutaneous fat layer (-100 HU) around soft tissue (40-50 HU), two lungs (about -850 HU with a
faint texture and a posterior density gradient) holding branching vessel trees (blood, 40 HU,
radii from about 3.5 down to 0.7 in-plane voxels, so that the thinnest ones blur away when the
volume is down-sampled), a trachea, a heart in mediastinal fat, the descending aorta, a vertebral
column with discs, ribs as partial rings around the chest wall and a sternum (bone 250-900 HU).
Edges carry partial volume (each boundary is a one-voxel linear ramp), like a real scan.

``chest_ct_sr`` turns the anatomy into a high-resolution scan (a slight point-spread blur plus
white noise); ``chest_ct_kernels`` reconstructs the same anatomy twice, with a sharp B50f-like
kernel (edge enhancement and strong fine-grained noise) and a smooth B30f-like kernel (in-plane
blur and weaker, correlated noise).

Geometry is defined relative to the field of view (so the chest fills any grid shape) except the
vessel radii, which are multiples of the in-plane voxel size. Voxel axes: i = x (left to right),
j = y (posterior to anterior), k = z (inferior to superior, the slice axis).
"""

from __future__ import annotations

import numpy as np

from revmed.data.synthetic.fields import blur, grid_mm, smooth_noise, smoothstep_inside

#: HU of the tissues (noise-free values).
AIR, FAT, SOFT, MUSCLE, BLOOD, LUNG = -1000.0, -100.0, 40.0, 50.0, 40.0, -850.0
CORTICAL, CANCELLOUS, DISC, MED_FAT = 900.0, 250.0, 80.0, -90.0
#: CT values are stored from -1024 HU upwards, as scanners do.
HU_FLOOR = -1024.0


def _paint(image: np.ndarray, fraction: np.ndarray, value) -> None:
    """Blend ``value`` into ``image`` with weight ``fraction`` (partial volume), in place."""
    image *= 1.0 - fraction
    image += fraction * value


def _capsule_occupancy(occ: np.ndarray, coords, p0, p1, radius, soft, limit=None) -> None:
    """Max-accumulate the partial-volume occupancy of a capsule (segment p0-p1, radius mm).

    Only the capsule's bounding box is evaluated, so a tree of a hundred segments costs little.
    """
    x, y, z = coords
    lo = np.minimum(p0, p1) - radius - soft
    hi = np.maximum(p0, p1) + radius + soft
    sl = []
    for axis_c, a, b in zip((x.ravel(), y.ravel(), z.ravel()), lo, hi):
        i0 = int(np.searchsorted(axis_c, a, side="left"))
        i1 = int(np.searchsorted(axis_c, b, side="right"))
        if i1 <= i0:
            return
        sl.append(slice(i0, i1))
    sx, sy, sz = x[sl[0]], y[:, sl[1]], z[:, :, sl[2]]
    d = p1 - p0
    dd = float(d @ d)
    px, py, pz = sx - p0[0], sy - p0[1], sz - p0[2]
    t = (px * d[0] + py * d[1] + pz * d[2]) / dd if dd > 0 else np.zeros(1, np.float32)
    t = np.clip(t, 0.0, 1.0)
    dist = np.sqrt((px - t * d[0]) ** 2 + (py - t * d[1]) ** 2 + (pz - t * d[2]) ** 2)
    o = np.clip((radius - dist) / soft + 0.5, 0.0, 1.0).astype(np.float32)
    if limit is not None:
        o *= limit[sl[0], sl[1], sl[2]]
    view = occ[sl[0], sl[1], sl[2]]
    np.maximum(view, o, out=view)


def _random_turn(rng: np.random.Generator, direction: np.ndarray, angle: float) -> np.ndarray:
    """``direction`` turned by ``angle`` radians about a random perpendicular axis."""
    r = rng.standard_normal(3)
    r -= (r @ direction) * direction
    n = np.linalg.norm(r)
    r = r / n if n > 1e-9 else np.array([0.0, 0.0, 1.0])
    return np.cos(angle) * direction + np.sin(angle) * r


def chest_anatomy(rng: np.random.Generator, shape, spacing):
    """Noise-free chest phantom.

    Returns ``(hu, body)``: float32 HU of ``shape`` and the boolean body mask.
    """
    shape = tuple(int(s) for s in shape)
    spacing = np.asarray(spacing, dtype=np.float64)
    x, y, z = grid_mm(shape, spacing)
    fov = np.asarray(shape) * spacing
    W, D, H = (float(v) for v in fov)
    soft = float(spacing[:2].mean())  # partial-volume ramp width in mm (about a voxel)
    u = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731

    hu = np.full(shape, AIR, dtype=np.float32)

    # Body: a slightly tapering ellipse (wider than deep, flatter at the back), fat layer outside.
    a = 0.44 * W * u(0.93, 1.04)
    b = 0.34 * D * u(0.92, 1.05)
    cy = D * u(-0.02, 0.02)
    taper = 1.0 - u(0.02, 0.08) * (z / H)  # (1, 1, K)
    yy = (y - cy) / b
    yy = np.where(yy < 0, yy * 1.12, yy)  # flatter back
    rho = np.sqrt((x / (a * taper)) ** 2 + yy ** 2)  # (I, J, K)
    drho = soft / float(min(a, b))  # one voxel in rho units
    body = smoothstep_inside(rho, 1.0, drho)
    fat_t = u(0.06, 0.10)
    inner = smoothstep_inside(rho, 1.0 - fat_t, drho)
    _paint(hu, body, FAT)
    _paint(hu, inner, MUSCLE)
    viscera = smoothstep_inside(rho, 1.0 - fat_t - 0.07, drho)
    _paint(hu, viscera, SOFT)

    # Lungs: ellipsoids cut by a diaphragm dome from below and kept inside the chest wall.
    lungs = np.zeros(shape, dtype=np.float32)
    lung_params = []
    for side in (-1.0, 1.0):  # -1: patient's left (x < 0), +1: right
        ax, ay, az = 0.17 * W * u(0.9, 1.1), 0.24 * D * u(0.9, 1.08), 0.55 * H * u(0.95, 1.1)
        cx = side * 0.215 * W * u(0.95, 1.05)
        cly = cy - 0.01 * D + D * u(-0.02, 0.02)
        clz = H * u(0.0, 0.08)
        r2 = ((x - cx) / ax) ** 2 + ((y - cly) / ay) ** 2
        ell = np.sqrt(r2 + ((z - clz) / az) ** 2)
        base = -0.46 * H + 0.22 * H * np.clip(1.0 - r2, 0.0, 1.0) * u(0.8, 1.2)
        if side > 0:  # the right hemidiaphragm sits higher (liver)
            base = base + 0.04 * H
        frac = smoothstep_inside(ell, 1.0, soft / ax)
        frac *= np.clip((z - base) / float(spacing[2]) + 0.5, 0.0, 1.0)
        np.maximum(lungs, frac, out=lungs)
        lung_params.append((side, cx, cly, clz, ax, ay, az))
    lungs *= smoothstep_inside(rho, 1.0 - fat_t - 0.09, drho)

    # Lung parenchyma: faint texture and a posterior (dependent) density gradient.
    texture = smooth_noise(rng, shape, 1.5) * u(8.0, 14.0)
    gradient = -25.0 * np.clip((y - cy) / b, -1.0, 1.0)
    lung_hu = LUNG + texture + gradient

    # Vessel trees from each hilum, restricted to the lungs: each segment forks in two, the
    # children turn away from the parent and are pulled outwards from the hilum.
    occ = np.zeros(shape, dtype=np.float32)
    pix = float(spacing[:2].mean())
    lo_mm = np.array([float(c.ravel()[0]) for c in (x, y, z)])
    step = spacing

    def in_lung(p) -> bool:
        idx = np.round((p - lo_mm) / step).astype(int)
        if np.any(idx < 0) or np.any(idx >= np.asarray(shape)):
            return False
        return bool(lungs[idx[0], idx[1], idx[2]] > 0.5)

    for side, cx, cly, clz, ax, ay, az in lung_params:
        hilum = np.array([cx - side * 0.6 * ax, cly + 0.1 * ay, clz - 0.1 * az])
        r0 = min(pix * u(3.0, 3.8), 0.12 * float(min(ax, ay)))
        length0 = 0.55 * float(min(ax, ay)) * u(0.9, 1.15)
        stack = []
        for _ in range(int(rng.integers(5, 8))):  # main branches: up, down, out, front, back
            d0 = rng.standard_normal(3)
            d0[0] = side * (abs(d0[0]) + 0.4)
            d0[2] *= 2.0
            stack.append((hilum, d0 / np.linalg.norm(d0), r0, length0, 0))
        while stack:
            p0, d, r, length, gen = stack.pop()
            p1 = p0 + d * length
            if not in_lung(p1):
                p1 = p0 + d * length * 0.5
                if not in_lung(p1):
                    continue
            _capsule_occupancy(occ, (x, y, z), p0, p1, r, soft, limit=lungs)
            if gen >= 6 or length < 2.5 * pix:  # small grids: fewer generations
                continue
            out = p1 - hilum
            out = out / max(float(np.linalg.norm(out)), 1e-6)
            for sign in (-1.0, 1.0):
                child = _random_turn(rng, d, sign * rng.uniform(0.3, 0.7)) + 0.6 * out
                child /= np.linalg.norm(child)
                stack.append((p1, child, max(r * rng.uniform(0.76, 0.84), 0.5 * pix),
                              length * rng.uniform(0.78, 0.9), gen + 1))
    lung_img = lung_hu + occ * (BLOOD - lung_hu)
    _paint(hu, lungs, lung_img)

    # Trachea (upper mediastinum, air with a soft-tissue wall).
    tr_r = 0.045 * W * u(0.9, 1.1)
    tr_y = cy + 0.06 * D
    tr_d = np.sqrt(x ** 2 + (y - tr_y) ** 2)
    above = np.clip((z - 0.12 * H) / float(spacing[2]) + 0.5, 0.0, 1.0)
    _paint(hu, smoothstep_inside(tr_d, tr_r + 1.5 * soft, soft) * above, SOFT)
    _paint(hu, smoothstep_inside(tr_d, tr_r, soft) * above, AIR)

    # Heart in mediastinal fat, sitting on the diaphragm, left of midline.
    hx, hy, hz = -0.06 * W * u(0.7, 1.3), cy + 0.06 * D, -0.2 * H * u(0.8, 1.2)
    hax, hay, haz = 0.14 * W * u(0.9, 1.1), 0.13 * D * u(0.9, 1.1), 0.26 * H * u(0.9, 1.1)
    h_ell = np.sqrt(((x - hx) / hax) ** 2 + ((y - hy) / hay) ** 2 + ((z - hz) / haz) ** 2)
    _paint(hu, smoothstep_inside(h_ell, 1.18, soft / hax), MED_FAT)
    _paint(hu, smoothstep_inside(h_ell, 1.0, soft / hax), BLOOD)

    # Descending aorta beside the spine.
    ao_r = 0.04 * W * u(0.9, 1.15)
    ao_c = (-0.075 * W, cy - 0.5 * b)
    ao_d = np.sqrt((x - ao_c[0]) ** 2 + (y - ao_c[1]) ** 2)
    _paint(hu, smoothstep_inside(ao_d, ao_r, soft), BLOOD + 5.0)

    # Vertebral column: body (cortical rim, cancellous core), spinous process, discs.
    vb_r = 0.06 * W * u(0.9, 1.1)
    vb_c = (0.0, cy - 0.72 * b)
    vd = np.sqrt((x - vb_c[0]) ** 2 + ((y - vb_c[1]) * 1.1) ** 2)
    period = 0.3 * H * u(0.9, 1.1) if H > 0 else 1.0
    phase = u(0.0, 1.0)
    disc_pos = np.abs(((z / period + phase) % 1.0) - 0.5) * period  # mm from disc centre
    disc = np.clip((0.06 * period - disc_pos) / float(spacing[2]) + 0.5, 0.0, 1.0)
    column = smoothstep_inside(vd, vb_r, soft)
    _paint(hu, column, CORTICAL)
    _paint(hu, smoothstep_inside(vd, vb_r - 1.5 * soft, soft), CANCELLOUS)
    _paint(hu, column * disc, DISC)
    sp_y0, sp_y1 = vb_c[1] - vb_r * 1.1, vb_c[1] - vb_r * 2.2
    sp_y = np.clip(y, sp_y1, sp_y0)
    sp = np.sqrt(x ** 2 + (y - sp_y) ** 2)
    _paint(hu, smoothstep_inside(sp, 0.22 * vb_r, soft) * (1.0 - disc) * body, CORTICAL * 0.8)

    # Ribs: partial rings just inside the fat layer, sloping down towards the front.
    theta = np.arctan2(yy, x / (a * taper))  # (I, J, K) angle around the body
    rib_rho = 1.0 - fat_t - 0.035
    rib_half = 0.022
    ring = smoothstep_inside(np.abs(rho - rib_rho), rib_half, drho)
    n_ribs = 4 + int(rng.integers(0, 2))
    spacing_z = H / n_ribs
    rib_h = max(0.35 * spacing_z, 1.2 * float(spacing[2]))
    slope = 0.25 * spacing_z * u(0.8, 1.2)
    ribs = np.zeros(shape, dtype=np.float32)
    posterior_gap, anterior_gap = 0.25, 0.45  # radians around the spine and sternum kept clear
    around = np.clip((np.abs(theta + np.pi / 2) - posterior_gap) / 0.1, 0, 1) * np.clip(
        (np.abs(theta - np.pi / 2) - anterior_gap) / 0.1, 0, 1)
    for r in range(n_ribs + 1):
        zc = -H / 2 + (r + 0.5) * spacing_z - slope * np.sin(theta)
        rib = np.clip((rib_h / 2 - np.abs(z - zc)) / float(spacing[2]) + 0.5, 0.0, 1.0)
        np.maximum(ribs, rib, out=ribs)
    ribs *= ring * around
    _paint(hu, ribs, 700.0)

    # Sternum at the front of the chest wall.
    st_c = (0.0, cy + b * (1.0 - fat_t - 0.05))
    st = np.sqrt(((x - st_c[0]) / (0.07 * W)) ** 2 + ((y - st_c[1]) / (0.025 * D)) ** 2)
    _paint(hu, smoothstep_inside(st, 1.0, soft / (0.025 * D)) * (z < 0.35 * H), 600.0)

    mask = body >= 0.5
    return hu.astype(np.float32), mask


def chest_ct_sr(rng: np.random.Generator, shape, spacing):
    """A high-resolution chest CT: anatomy, a slight scanner blur and 15-20 HU white noise.

    Returns ``(hu, body_mask)``.
    """
    hu, mask = chest_anatomy(rng, shape, spacing)
    hu = blur(hu, 0.5)
    hu += rng.standard_normal(hu.shape, dtype=np.float32) * np.float32(rng.uniform(15.0, 20.0))
    np.maximum(hu, HU_FLOOR, out=hu)
    return hu, mask


def chest_ct_kernels(rng: np.random.Generator, shape, spacing):
    """The same chest reconstructed with a sharp (B50f-like) and a smooth (B30f-like) kernel.

    Sharp: unsharp masking of the anatomy (edge overshoot) plus strong white noise (~30 HU).
    Smooth: a Gaussian blur of about one voxel in-plane (half in z) plus weaker noise that is
    spatially correlated (~8 HU, blurred white noise). Both keep the mean HU of each tissue.

    Returns ``(sharp, smooth, body_mask)``.
    """
    hu, mask = chest_anatomy(rng, shape, spacing)
    base = blur(hu, 0.5)
    amount = float(rng.uniform(0.8, 1.2))
    sharp = base + amount * (base - blur(base, (1.2, 1.2, 0.6)))
    sharp += rng.standard_normal(hu.shape, dtype=np.float32) * np.float32(rng.uniform(28.0, 35.0))
    sigma = float(rng.uniform(0.8, 1.1))
    smooth = blur(hu, (sigma, sigma, 0.5 * sigma))
    corr = smooth_noise(rng, hu.shape, (1.0, 1.0, 0.5))
    smooth += corr * np.float32(rng.uniform(6.0, 10.0))
    np.maximum(sharp, HU_FLOOR, out=sharp)
    np.maximum(smooth, HU_FLOOR, out=smooth)
    return sharp.astype(np.float32), smooth.astype(np.float32), mask
