"""`revmed presets`: list the presets or print one resolved."""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from revmed import config
from revmed.cli import output
from revmed.cli.root import app


@app.command("presets")
def presets(
    name: Optional[str] = typer.Argument(  # noqa: UP007 (typer needs Optional on 3.10)
        None, help="Preset name or path to a .toml file; omit to list the shipped presets."),
    set_: list[str] = typer.Option([], "--set", help="Override a key: --set train.lr=1e-4."),
    json_: bool = typer.Option(False, "--json", help="Print JSON on stdout."),
) -> None:
    """List the presets, or print one with its base and overrides resolved.

    Example: revmed presets chestct-sr --set patch.size=[64,64,64]
    """
    if name is None:
        rows = []
        for preset_name in config.preset_names():
            preset = config.load_preset(preset_name)
            rows.append({"name": preset_name, "task": preset.task,
                         "model": preset.model.kind, "description": preset.description})
        if json_:
            output.emit_json(rows)
            return
        table = Table("preset", "task", "model", "description", box=None)
        for row in rows:
            table.add_row(row["name"], row["task"], row["model"], row["description"])
        output.stdout().print(table)
        return
    preset = config.load_preset(name, set_)
    if json_:
        output.emit_json(preset.to_dict())
        return
    output.stdout().out(config.to_toml(preset), end="")
    from revmed.models import build_model, model_spec

    kind, kwargs = model_spec(preset)
    network = build_model(kind, **kwargs)
    if hasattr(network, "describe"):  # the network's shape, as TOML comments (iUNet)
        layout = network.describe(tuple(preset.patch.size))
        output.stdout().out("\n" + "\n".join(f"# {line}" for line in layout.splitlines()))
