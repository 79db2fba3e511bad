"""Training curves as an SVG picture: one panel per quantity of ``metrics.jsonl``, by epoch.

SVG rather than PNG: it is text, so it needs no plotting library, its labels and numbers stay
sharp at any size, and every browser shows it. The run folder rewrites ``curves.svg`` after
each epoch, beside ``metrics.jsonl``.

Each quantity (the losses ``g_loss``, ``l1``, ``d_loss``, ..., the validation scores ``val_*``,
the learning rate, the core's reconstruction error) has a panel of its own, with its own
vertical range: they differ by orders of magnitude.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

#: Width and height of one panel, and its margins, in SVG units (pixels at 100 %).
WIDTH, HEIGHT, LEFT, RIGHT, TOP, BOTTOM = 480, 140, 70, 20, 26, 30
#: Line colours: training quantities, validation scores.
COLOURS = ("#1f77b4", "#d62728")
#: Keys that are bookkeeping, not curves.
SKIPPED = {"epoch", "steps", "seconds", "processes", "rank_weight_spread",
           "stopped_at_time_limit", "interrupted", "step_in_epoch"}


def quantities(records: Sequence[dict]) -> list[str]:
    """The numeric quantities of ``records``, in the order they first appear."""
    keys: list[str] = []
    for record in records:
        keys += [k for k, v in record.items() if k not in SKIPPED and k not in keys
                 and isinstance(v, int | float) and not isinstance(v, bool)]
    return keys


def _ticks(lo: float, hi: float) -> tuple[list[float], str]:
    """Round tick values between ``lo`` and ``hi``, and the format that tells them apart."""
    if hi <= lo:
        return [lo], ".4g"
    step = 10 ** math.floor(math.log10((hi - lo) / 4))
    for factor in (1, 2, 5, 10):
        if (hi - lo) / (step * factor) <= 5:
            step *= factor
            break
    first = math.ceil(lo / step) * step
    digits = max(1, math.ceil(math.log10(max(abs(lo), abs(hi)) / step + 1e-12)) + 1)
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)], f".{digits}g"


def _panel(records: Sequence[dict], key: str, top: float) -> list[str]:
    points = [(r["epoch"], float(r[key])) for r in records
              if isinstance(r.get(key), int | float) and math.isfinite(float(r[key]))]
    if not points:
        return []
    values, epochs = [v for _, v in points], [e for e, _ in points]
    lo, hi = min(values), max(values)
    if hi - lo <= 1e-9 * max(abs(lo), abs(hi), 1e-30):  # a constant: a band around it
        pad = abs(lo) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    first, last_epoch = min(epochs), max(max(epochs), min(epochs) + 1)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(epoch: float) -> float:
        return LEFT + (epoch - first) / (last_epoch - first) * plot_w

    def y(value: float) -> float:
        return top + TOP + (hi - value) / (hi - lo) * plot_h

    colour = COLOURS[0] if not key.startswith("val_") else COLOURS[1]
    last = f"{points[-1][1]:.5g}"
    out = [f'<text x="{LEFT}" y="{top + 18}"><tspan font-weight="bold">{escape(key)}</tspan> '
           f'(epoch {points[-1][0]}: {last})</text>',
           f'<rect x="{LEFT}" y="{top + TOP}" width="{plot_w}" height="{plot_h}" '
           'fill="none" stroke="#999"/>']
    ticks, form = _ticks(lo, hi)
    for tick in ticks:
        out.append(f'<text x="{LEFT - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">'
                   f'{tick:{form}}</text>')
    for tick in _ticks(first, last_epoch)[0]:
        if float(tick).is_integer():
            out.append(f'<text x="{x(tick):.1f}" y="{top + HEIGHT - 14}" text-anchor="middle">'
                       f'{int(tick)}</text>')
    path = " ".join(f"{x(e):.1f},{y(v):.1f}" for e, v in points)
    out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
    if len(points) == 1:
        out.append(f'<circle cx="{x(points[0][0]):.1f}" cy="{y(points[0][1]):.1f}" r="2.5" '
                   f'fill="{colour}"/>')
    return out


def curves_svg(records: Sequence[dict], title: str = "") -> str:
    """The SVG document of ``records`` (``metrics.jsonl`` lines, each with an ``epoch``)."""
    records = [r for r in records if isinstance(r.get("epoch"), int | float)]
    body, top = [], 30 if title else 0
    if title:
        body.append(f'<text x="{LEFT}" y="20" font-size="15">{escape(title)}</text>')
    for key in quantities(records):
        drawn = _panel(records, key, top)
        if drawn:
            body += drawn
            top += HEIGHT
    body.append(f'<text x="{LEFT}" y="{top + 14}" fill="#666">epoch</text>')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{top + 24}" '
            'font-family="sans-serif" font-size="11">\n<rect width="100%" height="100%" '
            'fill="white"/>\n' + "\n".join(body) + "\n</svg>\n")
