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

from dataclasses import dataclass

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


@dataclass
class _Chest:
    """What every painter of ``chest_anatomy`` shares: the grid (mm coordinates ``x, y, z``
    broadcastable to ``shape``, the field of view ``W, D, H``, the partial-volume ramp
    ``soft`` in mm), the random draws ``u(lo, hi)`` in one order, and the body outline the
    first painter drew (``a, b`` semi-axes, centre depth ``cy``, normalised radius ``rho``
    and its one-voxel step ``drho``, its flatter-back depth ``yy``, taper, fat thickness
    ``fat_t``, the body's partial-volume fraction)."""

    rng: np.random.Generator
    shape: tuple[int, int, int]
    spacing: np.ndarray
    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    W: float
    D: float
    H: float
    soft: float
    a: float = 0.0
    b: float = 0.0
    cy: float = 0.0
    yy: np.ndarray | None = None
    taper: np.ndarray | None = None
    rho: np.ndarray | None = None
    drho: float = 0.0
    fat_t: float = 0.0
    body: np.ndarray | None = None

    def u(self, lo: float, hi: float) -> float:
        return float(self.rng.uniform(lo, hi))


def chest_anatomy(rng: np.random.Generator, shape, spacing):
    """Noise-free chest phantom.

    Returns ``(hu, body)``: float32 HU of ``shape`` and the boolean body mask. The structures
    are painted one after the other (later ones over earlier ones), each drawing its own
    random parameters, in the order of the painters below.
    """
    shape = tuple(int(s) for s in shape)
    spacing = np.asarray(spacing, dtype=np.float64)
    x, y, z = grid_mm(shape, spacing)
    W, D, H = (float(v) for v in np.asarray(shape) * spacing)
    chest = _Chest(rng, shape, spacing, x, y, z, W, D, H, float(spacing[:2].mean()))
    hu = np.full(shape, AIR, dtype=np.float32)
    _paint_body(hu, chest)
    lungs, lung_params = _lung_shapes(chest)
    _paint_lungs(hu, chest, lungs, lung_params)
    _paint_trachea(hu, chest)
    _paint_heart(hu, chest)
    _paint_aorta(hu, chest)
    _paint_spine(hu, chest)
    _paint_ribs(hu, chest)
    _paint_sternum(hu, chest)
    return hu.astype(np.float32), chest.body >= 0.5


def _paint_body(hu: np.ndarray, c: _Chest) -> None:
    """A slightly tapering ellipse (wider than deep, flatter at the back), a fat layer outside
    muscle and soft-tissue viscera."""
    c.a = 0.44 * c.W * c.u(0.93, 1.04)
    c.b = 0.34 * c.D * c.u(0.92, 1.05)
    c.cy = c.D * c.u(-0.02, 0.02)
    c.taper = 1.0 - c.u(0.02, 0.08) * (c.z / c.H)  # (1, 1, K)
    yy = (c.y - c.cy) / c.b
    c.yy = np.where(yy < 0, yy * 1.12, yy)  # flatter back
    c.rho = np.sqrt((c.x / (c.a * c.taper)) ** 2 + c.yy ** 2)  # (I, J, K)
    c.drho = c.soft / float(min(c.a, c.b))  # one voxel in rho units
    c.body = smoothstep_inside(c.rho, 1.0, c.drho)
    c.fat_t = c.u(0.06, 0.10)
    inner = smoothstep_inside(c.rho, 1.0 - c.fat_t, c.drho)
    _paint(hu, c.body, FAT)
    _paint(hu, inner, MUSCLE)
    _paint(hu, smoothstep_inside(c.rho, 1.0 - c.fat_t - 0.07, c.drho), SOFT)


def _lung_shapes(c: _Chest) -> tuple[np.ndarray, list[tuple]]:
    """``(lungs, params)``: the two lungs' partial-volume fraction (ellipsoids cut by a
    diaphragm dome from below, kept inside the chest wall) and each one's
    ``(side, cx, cy, cz, ax, ay, az)``."""
    lungs = np.zeros(c.shape, dtype=np.float32)
    params = []
    x, y, z, W, D, H = c.x, c.y, c.z, c.W, c.D, c.H
    for side in (-1.0, 1.0):  # -1: patient's left (x < 0), +1: right
        ax, ay, az = 0.17 * W * c.u(0.9, 1.1), 0.24 * D * c.u(0.9, 1.08), 0.55 * H * c.u(0.95, 1.1)
        cx = side * 0.215 * W * c.u(0.95, 1.05)
        cly = c.cy - 0.01 * D + D * c.u(-0.02, 0.02)
        clz = H * c.u(0.0, 0.08)
        r2 = ((x - cx) / ax) ** 2 + ((y - cly) / ay) ** 2
        ell = np.sqrt(r2 + ((z - clz) / az) ** 2)
        base = -0.46 * H + 0.22 * H * np.clip(1.0 - r2, 0.0, 1.0) * c.u(0.8, 1.2)
        if side > 0:  # the right hemidiaphragm sits higher (liver)
            base = base + 0.04 * H
        frac = smoothstep_inside(ell, 1.0, c.soft / ax)
        frac *= np.clip((z - base) / float(c.spacing[2]) + 0.5, 0.0, 1.0)
        np.maximum(lungs, frac, out=lungs)
        params.append((side, cx, cly, clz, ax, ay, az))
    lungs *= smoothstep_inside(c.rho, 1.0 - c.fat_t - 0.09, c.drho)
    return lungs, params


def _paint_lungs(hu: np.ndarray, c: _Chest, lungs: np.ndarray, params: list[tuple]) -> None:
    """Lung parenchyma (a faint texture and a posterior, dependent, density gradient) holding
    the vessel trees of ``_vessels``."""
    texture = smooth_noise(c.rng, c.shape, 1.5) * c.u(8.0, 14.0)
    gradient = -25.0 * np.clip((c.y - c.cy) / c.b, -1.0, 1.0)
    lung_hu = LUNG + texture + gradient
    occ = _vessels(c, lungs, params)
    _paint(hu, lungs, lung_hu + occ * (BLOOD - lung_hu))


def _vessels(c: _Chest, lungs: np.ndarray, params: list[tuple]) -> np.ndarray:
    """The vessel trees' occupancy: from each hilum, segments that fork in two, the children
    turned away from the parent and pulled outwards from the hilum, kept inside the lungs."""
    occ = np.zeros(c.shape, dtype=np.float32)
    pix = float(c.spacing[:2].mean())
    lo_mm = np.array([float(v.ravel()[0]) for v in (c.x, c.y, c.z)])

    def in_lung(p) -> bool:
        idx = np.round((p - lo_mm) / c.spacing).astype(int)
        if np.any(idx < 0) or np.any(idx >= np.asarray(c.shape)):
            return False
        return bool(lungs[idx[0], idx[1], idx[2]] > 0.5)

    for side, cx, cly, clz, ax, ay, az in params:
        hilum = np.array([cx - side * 0.6 * ax, cly + 0.1 * ay, clz - 0.1 * az])
        r0 = min(pix * c.u(3.0, 3.8), 0.12 * float(min(ax, ay)))
        length0 = 0.55 * float(min(ax, ay)) * c.u(0.9, 1.15)
        stack = []
        for _ in range(int(c.rng.integers(5, 8))):  # main branches: up, down, out, front, back
            d0 = c.rng.standard_normal(3)
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
            _capsule_occupancy(occ, (c.x, c.y, c.z), p0, p1, r, c.soft, limit=lungs)
            if gen >= 6 or length < 2.5 * pix:  # small grids: fewer generations
                continue
            out = p1 - hilum
            out = out / max(float(np.linalg.norm(out)), 1e-6)
            for sign in (-1.0, 1.0):
                child = _random_turn(c.rng, d, sign * c.rng.uniform(0.3, 0.7)) + 0.6 * out
                child /= np.linalg.norm(child)
                stack.append((p1, child, max(r * c.rng.uniform(0.76, 0.84), 0.5 * pix),
                              length * c.rng.uniform(0.78, 0.9), gen + 1))
    return occ


def _paint_trachea(hu: np.ndarray, c: _Chest) -> None:
    """The trachea in the upper mediastinum: air inside a soft-tissue wall."""
    tr_r = 0.045 * c.W * c.u(0.9, 1.1)
    tr_d = np.sqrt(c.x ** 2 + (c.y - (c.cy + 0.06 * c.D)) ** 2)
    above = np.clip((c.z - 0.12 * c.H) / float(c.spacing[2]) + 0.5, 0.0, 1.0)
    _paint(hu, smoothstep_inside(tr_d, tr_r + 1.5 * c.soft, c.soft) * above, SOFT)
    _paint(hu, smoothstep_inside(tr_d, tr_r, c.soft) * above, AIR)


def _paint_heart(hu: np.ndarray, c: _Chest) -> None:
    """The heart in mediastinal fat, on the diaphragm, left of the midline."""
    hx, hy, hz = -0.06 * c.W * c.u(0.7, 1.3), c.cy + 0.06 * c.D, -0.2 * c.H * c.u(0.8, 1.2)
    hax, hay, haz = 0.14 * c.W * c.u(0.9, 1.1), 0.13 * c.D * c.u(0.9, 1.1), 0.26 * c.H * c.u(0.9, 1.1)
    h_ell = np.sqrt(((c.x - hx) / hax) ** 2 + ((c.y - hy) / hay) ** 2 + ((c.z - hz) / haz) ** 2)
    _paint(hu, smoothstep_inside(h_ell, 1.18, c.soft / hax), MED_FAT)
    _paint(hu, smoothstep_inside(h_ell, 1.0, c.soft / hax), BLOOD)


def _paint_aorta(hu: np.ndarray, c: _Chest) -> None:
    """The descending aorta beside the spine."""
    ao_r = 0.04 * c.W * c.u(0.9, 1.15)
    ao_d = np.sqrt((c.x + 0.075 * c.W) ** 2 + (c.y - (c.cy - 0.5 * c.b)) ** 2)
    _paint(hu, smoothstep_inside(ao_d, ao_r, c.soft), BLOOD + 5.0)


def _paint_spine(hu: np.ndarray, c: _Chest) -> None:
    """The vertebral column: bodies (cortical rim, cancellous core), discs, spinous process."""
    vb_r = 0.06 * c.W * c.u(0.9, 1.1)
    vb_y = c.cy - 0.72 * c.b
    vd = np.sqrt(c.x ** 2 + ((c.y - vb_y) * 1.1) ** 2)
    period = 0.3 * c.H * c.u(0.9, 1.1) if c.H > 0 else 1.0
    phase = c.u(0.0, 1.0)
    disc_pos = np.abs(((c.z / period + phase) % 1.0) - 0.5) * period  # mm from disc centre
    disc = np.clip((0.06 * period - disc_pos) / float(c.spacing[2]) + 0.5, 0.0, 1.0)
    column = smoothstep_inside(vd, vb_r, c.soft)
    _paint(hu, column, CORTICAL)
    _paint(hu, smoothstep_inside(vd, vb_r - 1.5 * c.soft, c.soft), CANCELLOUS)
    _paint(hu, column * disc, DISC)
    sp_y = np.clip(c.y, vb_y - vb_r * 2.2, vb_y - vb_r * 1.1)
    sp = np.sqrt(c.x ** 2 + (c.y - sp_y) ** 2)
    _paint(hu, smoothstep_inside(sp, 0.22 * vb_r, c.soft) * (1.0 - disc) * c.body,
           CORTICAL * 0.8)


def _paint_ribs(hu: np.ndarray, c: _Chest) -> None:
    """Ribs: partial rings just inside the fat layer, sloping down towards the front, clear
    of the spine and the sternum."""
    theta = np.arctan2(c.yy, c.x / (c.a * c.taper))  # (I, J, K) angle around the body
    ring = smoothstep_inside(np.abs(c.rho - (1.0 - c.fat_t - 0.035)), 0.022, c.drho)
    n_ribs = 4 + int(c.rng.integers(0, 2))
    spacing_z = c.H / n_ribs
    rib_h = max(0.35 * spacing_z, 1.2 * float(c.spacing[2]))
    slope = 0.25 * spacing_z * c.u(0.8, 1.2)
    ribs = np.zeros(c.shape, dtype=np.float32)
    posterior_gap, anterior_gap = 0.25, 0.45  # radians around the spine and sternum kept clear
    around = np.clip((np.abs(theta + np.pi / 2) - posterior_gap) / 0.1, 0, 1) * np.clip(
        (np.abs(theta - np.pi / 2) - anterior_gap) / 0.1, 0, 1)
    for r in range(n_ribs + 1):
        zc = -c.H / 2 + (r + 0.5) * spacing_z - slope * np.sin(theta)
        rib = np.clip((rib_h / 2 - np.abs(c.z - zc)) / float(c.spacing[2]) + 0.5, 0.0, 1.0)
        np.maximum(ribs, rib, out=ribs)
    ribs *= ring * around
    _paint(hu, ribs, 700.0)


def _paint_sternum(hu: np.ndarray, c: _Chest) -> None:
    """The sternum at the front of the chest wall (no random draws)."""
    st_y = c.cy + c.b * (1.0 - c.fat_t - 0.05)
    st = np.sqrt((c.x / (0.07 * c.W)) ** 2 + ((c.y - st_y) / (0.025 * c.D)) ** 2)
    _paint(hu, smoothstep_inside(st, 1.0, c.soft / (0.025 * c.D)) * (c.z < 0.35 * c.H), 600.0)


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
