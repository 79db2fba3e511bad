"""The Typer application and the process entry point.

Exit codes: 0 success; 2 bad input or usage (one red line naming the file and the problem);
1 unexpected failure (a bug: the traceback is kept); 130 interrupted.
"""

from __future__ import annotations

import sys

import typer

import revmed
from revmed.cli import output
from revmed.errors import RevmedError

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


# Commands register themselves on `app` when their module is imported.
from revmed.cli import (  # noqa: E402,F401
    data_commands,
    demo_command,
    eval_command,
    model_commands,
    plan_command,
    preset_commands,
)


def run(argv: list[str] | None = None) -> int:
    """Run the CLI on ``argv`` (default: ``sys.argv[1:]``) and return the exit code.

    Typer itself reports usage errors (exit 2) and interruptions (exit 130); user errors raised
    by the library as ``RevmedError`` become one red line and exit code 2. Any other exception
    propagates with its traceback (exit 1).
    """
    try:
        app(args=argv, prog_name="revmed")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except RevmedError as exc:
        output.error(str(exc))
        return 2
    return 0


def main() -> None:
    """Console-script entry point."""
    sys.exit(run())
