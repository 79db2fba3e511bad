"""The Typer application object and its root options; command modules add their commands to
``app`` when ``revmed.cli.app`` imports them."""

from __future__ import annotations

import typer

import revmed

app = typer.Typer(
    name="revmed",
    help="Memory-efficient reversible 3D networks for CT and MRI volumes.\n\n"
         "Example: revmed synth chestct-sr data/demo-sr && "
         "revmed patchify data/demo-sr patches/demo-sr --preset demo-sr",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"revmed {revmed.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Memory-efficient reversible 3D networks for CT and MRI volumes."""
