"""The Typer application object and its root options; command modules add their commands to
``app`` when ``revmed.cli.app`` imports them.

Help is click's plain layout (``rich_markup_mode=None``): paragraphs are re-wrapped to the
terminal, long option names get their own line instead of being cut, and flags show no
metavar. Typer 0.29 labels every argument with its Python type (``INPUT... <list[Path]>``) and
braces required arguments in the usage line (``{INPUT...}...``); ``_plain_names`` replaces
those by click's own metavars (``INPUT...``, ``PATH``, ``TEXT``).
"""

from __future__ import annotations

import typer
import typer.core

import revmed


def _plain_names() -> None:
    def argument_type(self, ctx):  # the argument's metavar says enough
        return None

    def argument_name(self):  # click's style: PREDICTION, INPUT...
        name = self.metavar or self.name.upper()
        return name + ("..." if self.nargs != 1 and not name.endswith("...") else "")

    def argument_usage(self):
        return argument_name(self) if self.required else f"[{argument_name(self)}]"

    typer_option_type = typer.core.TyperOption.display_type_rich

    def option_type(self, ctx):  # click's style: PATH, TEXT, FLOAT RANGE
        label = typer_option_type(self, ctx)
        if self.metavar is not None or not label or not label.startswith("<"):
            return label
        name = label.strip("<>").replace("str", "text").replace("int", "integer")
        return name.upper()

    typer.core.TyperArgument.display_type_rich = argument_type
    typer.core.TyperArgument._usage_display_name = argument_usage
    typer.core.TyperArgument._rich_display_name = argument_name
    typer.core.TyperOption.display_type_rich = option_type


_plain_names()


def _one_line_usage_errors() -> None:
    """Usage errors (a value out of range, a missing argument, an unknown option) as one
    ``error:`` line on stderr like every other error, not click's usage block; exit code 2.
    The help shown when a command is given no arguments at all stays as it is."""
    usage_error = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
    plain_show = usage_error.show

    def show(self, file=None) -> None:
        if type(self).__name__ == "NoArgsIsHelpError":
            plain_show(self, file)
            return
        import sys

        from revmed.cli import output

        where = f" (see {self.ctx.command_path} --help)" if self.ctx is not None else ""
        message = self.format_message().replace("'", "")
        if message.endswith(".") and not message.endswith("..."):
            message = message[:-1]
        elif message.endswith("...."):
            message = message[:-1]
        output.error(f"{message[:1].lower()}{message[1:]}{where}")
        (file or sys.stderr).flush()

    usage_error.show = show


_one_line_usage_errors()

app = typer.Typer(
    name="revmed",
    help="Memory-efficient reversible 3D networks for CT and MRI volumes.\n\n"
         "Example: revmed demo --out demo",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
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


def dicom_geometry_option():
    """The ``--dicom-geometry`` option of the commands that read DICOM."""
    return typer.Option(
        "resample", "--dicom-geometry", metavar="resample|strict",
        help="DICOM slices that are not on a regular grid (gantry tilt, irregular or missing "
        "slices): resample reads them onto one, every pixel where the scanner put it (a "
        "warning says what was corrected and by how much); strict refuses such a series.")


def check_dicom_geometry(value: str) -> str:
    """``value`` if it is a ``--dicom-geometry`` choice, else a one-line ``ConfigError``."""
    from revmed.errors import ConfigError
    from revmed.io.dicom.slice_grid import GEOMETRY_MODES

    if value not in GEOMETRY_MODES:
        raise ConfigError(f"--dicom-geometry {value}: choose one of "
                          f"{', '.join(GEOMETRY_MODES)}")
    return value

