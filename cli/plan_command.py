"""`revmed plan`: the largest patch, batch and depth of a preset that fit in a memory size."""

from __future__ import annotations

import typer
from rich import box
from rich.measure import Measurement
from rich.table import Table

from revmed import config
from revmed.cli import output
from revmed.cli.root import app
from revmed.sizes import shape_text


@app.command("plan")
def plan(
    preset: str = typer.Option(..., "--preset", "-p", help="Preset name or .toml path."),
    memory: str = typer.Option(..., "--memory", help="Memory to plan for: 24GiB, 24G, 500MiB, "
                               "1.5TiB, 32GB (decimal) or a number of bytes."),
    device: str = typer.Option("auto", "--device", help="Where to measure: auto, cpu, cuda or "
                               "cuda:N."),
    set_: list[str] = typer.Option([], "--set", help="Override a preset key: --set k=v."),
    json_: bool = typer.Option(False, "--json", help="Print the plan as JSON on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Predict the memory of one training step and the largest patch, batch and depth that fit.

    Measures one training step (generator and critics, with Adam's state) on random data at
    three small cubic patches of batch 2, fits peak = fixed + 16 B x parameters + batch x
    voxels x per-voxel cost, and solves it for --memory. Each of the largest patch (cubic),
    batch and depth keeps the preset's other two values. The depth is the RevGAN core's model.depth or the iUNet's
    model.blocks_per_scale: with memory-free backpropagation only its parameters grow with it.
    On the CPU each measurement runs in a fresh process (seconds each). See docs/planning.md.

    Example: revmed plan --preset chestct-sr --memory 24GiB --device cuda
    """
    from revmed.planning import plan as make_plan
    from revmed.runtime import resolve_device
    from revmed.sizes import parse_memory

    budget = parse_memory(memory)
    resolved = config.load_preset(preset, set_)
    where = resolve_device(device)
    with output.progress(f"measure {resolved.name}", None, quiet or json_) as update:
        result = make_plan(resolved, budget, where,
                           progress=lambda done, total, text: update(done, total, text))
    if json_:
        output.emit_json(result.to_json())
        return
    console = output.stdout()
    table = _table(result)
    # at its natural width, even where that is wider than the terminal
    width = Measurement.get(console, console.options.update_width(1000), table).maximum
    console.width = max(console.width, width)
    console.print(table)


def _table(result) -> Table:
    from revmed.sizes import format_bytes

    model = result.model
    sizes = ", ".join(f"{shape_text(m['patch'])} x {m['batch']}" for m in result.measurements)
    caption = [f"model: peak = {format_bytes(model['fixed'])} + 16 B x parameters + "
               f"{model['per_voxel']:.0f} B x batch x voxels"
               + (f" + image pool ({format_bytes(model['pool_bytes_at_preset'])} "
                  "at the preset's size)" if model["pool_bytes_at_preset"] else "")
               + f"; fitted to steps measured at {sizes} on {result.device}"]
    caption += [f"note: {n}" for n in result.notes]
    table = Table(title=f"revmed plan: {result.preset} in {format_bytes(result.memory)}",
                  caption="\n".join(caption), title_justify="left", caption_justify="left",
                  box=box.SIMPLE_HEAD)
    for name in ("", "patch", "batch", result.depth_key, "parameters", "predicted peak"):
        table.add_column(name, justify="left" if name == "" else "right", no_wrap=True)
    now = result.preset_peak
    fits = "" if now["fits"] else " (does not fit)"
    table.add_row("preset as it is", shape_text(now["patch"]), str(now["batch"]),
                  str(now["depth"]), f"{now['parameters']:,}",
                  format_bytes(now["peak"]) + fits)
    big = result.largest_patch
    table.add_row("largest patch", shape_text(big["patch"]) + (
        " (the most a preset may state)" if big.get("capped") else ""), str(now["batch"]),
                  str(now["depth"]), f"{now['parameters']:,}", format_bytes(big["peak"]))
    b = result.largest_batch
    table.add_row("largest batch", shape_text(now["patch"]),
                  str(b["batch"]) if b["batch"] else "none fits", str(now["depth"]),
                  f"{now['parameters']:,}", format_bytes(b["peak"]) if b["peak"] else "-")
    d = result.largest_depth
    if d is None:
        table.add_row("largest depth", shape_text(now["patch"]), str(now["batch"]),
                      "not predicted" if any("memory_saving" in n for n in result.notes)
                      else "none fits", "-", "-")
    else:
        table.add_row("largest depth", shape_text(now["patch"]), str(now["batch"]),
                      f"more than {d['depth']}" if d["capped"] else str(d["depth"]),
                      f"{d['parameters']:,}", format_bytes(d["peak"]))
    return table
