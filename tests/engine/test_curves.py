"""curves.svg: one panel per quantity of metrics.jsonl, a valid SVG whose lines follow the values."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from revmed.engine.curves import HEIGHT, TOP, BOTTOM, curves_svg, quantities

SVG = "{http://www.w3.org/2000/svg}"


def test_one_panel_per_quantity_and_the_line_follows_the_values():
    records = [{"epoch": e, "steps": 4, "g_loss": 10.0 - e, "val_psnr": 20.0 + 2 * e,
                "lr": 2e-4, "seconds": 1.0} for e in (1, 2, 3)]
    records.append({"epoch": 3, "step_in_epoch": 2, "interrupted": True})  # not a curve
    assert quantities(records) == ["g_loss", "val_psnr", "lr"]
    root = ET.fromstring(curves_svg(records, "a <run> & more"))
    lines = root.findall(f"{SVG}polyline")
    assert len(lines) == 3
    points = [[tuple(map(float, p.split(","))) for p in line.get("points").split()]
              for line in lines]
    xs = [x for x, _ in points[0]]
    assert xs == sorted(xs) and len(xs) == 3
    loss_y = [y for _, y in points[0]]
    psnr_y = [y for _, y in points[1]]
    assert loss_y == sorted(loss_y)              # a falling loss goes down the picture
    assert psnr_y == sorted(psnr_y, reverse=True)  # a rising score goes up
    plot = HEIGHT - TOP - BOTTOM
    assert max(loss_y) - min(loss_y) == plot    # the range fills the panel
    texts = "".join(t.text or "" for t in root.iter(f"{SVG}text"))
    assert "a <run> & more" in texts            # escaped in the file, literal once parsed
    assert len({y for _, y in points[2]}) == 1  # a constant rate is a flat line, not an error


def test_no_records_gives_an_empty_but_valid_picture():
    root = ET.fromstring(curves_svg([]))
    assert root.findall(f"{SVG}polyline") == []
