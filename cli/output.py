"""Where the CLI writes: results on stdout, progress and messages on stderr.

``--json`` output goes to stdout and nothing else does, so scripts can parse it; progress bars,
notes and errors go to stderr.

Both consoles print text literally: rich's markup (``[ct]``, ``[/x]``) and emoji codes
(``:x:``) are off, so a file name, case name or preset value is shown exactly as it is and
can never be taken for styling. Styles are applied with ``rich.text.Text`` instead.
"""

from __future__ import annotations

import json
import math
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.text import Text


#: The arguments of the command being run (``revmed.cli.app.run`` sets them), for messages
#: about what was typed where the parsed options no longer tell (the order of tokens).
COMMAND_LINE: list[str] = []


def _console(file) -> Console:
    # markup and emoji off: user values (paths, case names) are printed as they are
    return Console(file=file, highlight=False, soft_wrap=True, markup=False, emoji=False)


def stdout() -> Console:
    """A console on the current ``sys.stdout`` (made per call so tests can capture it)."""
    return _console(sys.stdout)


def is_terminal() -> bool:
    """Whether stderr is a terminal (not a file or a pipe, such as a scheduler's log), where
    progress bars draw."""
    return stderr().is_terminal


def stderr() -> Console:
    return _console(sys.stderr)


#: What to type to fix a problem, by the library argument a ``RevmedError`` names as its ``fix``.
FIXES = {
    "compile": "run without --compile",
    "overwrite": "use --overwrite to replace it, or choose another folder",
    "overwrite_file": "use --overwrite to replace it",
    "overwrite_run": "use --overwrite to start a new run there (a run's files there are "
                     "replaced), or choose another --out",
    "precision": "--precision fp32 runs in full precision",
    "resume": "use --resume to continue it or choose another --out",
    "data_range": "pass --data-range",
    "input": "pass --input",
    "series": "choose one with --series UID",
    "dicom_geometry": "--dicom-geometry resample reads it onto a regular grid",
    "resample": "use --resample to resample it onto the reference",
}


def flag(name: str) -> str:
    """The command-line flag of a library argument: ``data_range`` -> ``--data-range``."""
    return "--" + name.replace("_", "-")


def describe(exc: BaseException) -> str:
    """The one line a ``RevmedError`` prints as: the library's message with the argument it is
    about (``option``) shown as its flag (in place of the argument's name when the message
    starts with it, else in brackets at the end), and what to type appended (``fix``)."""
    message = str(exc)
    option, fix = getattr(exc, "option", None), getattr(exc, "fix", None)
    if option and (message.startswith(option + " ") or message.startswith(option + ":")):
        message = flag(option) + message[len(option):]
    elif option:
        message = f"{message} ({flag(option)})"
    if fix:
        message = f"{message}; {FIXES.get(fix, 'see ' + flag(fix))}"
    return message


def error(message: str) -> None:
    """Print one red error line on stderr."""
    stderr().print(Text.assemble(("error:", "bold red"), " ", (one_line(message), "red")))


def warning(message: str) -> None:
    stderr().print(Text.assemble(("warning:", "yellow"), " ", one_line(message)))


@contextmanager
def warnings_as_lines() -> Iterator[None]:
    """Show each warning raised in the block as one ``warning:`` line on stderr (Python's own
    format takes two lines and names revmed's source file); revmed's ``RevmedWarning``s read as
    their message, others with their category."""
    from revmed.errors import RevmedWarning

    previous = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        warning(str(message) if issubclass(category, RevmedWarning)
                else f"{category.__name__}: {message}")

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = previous


def note(message: str, quiet: bool = False) -> None:
    """An informative line on stderr (silenced by ``--quiet``)."""
    if not quiet:
        stderr().print(Text(message))


def one_line(message: str) -> str:
    """``message`` on one line: a line break inside it (a file name may hold one) is shown as
    ``\\n``, so an error is always one line."""
    return message.replace("\r", "\\r").replace("\n", "\\n")


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float as None (``null``): bare ``NaN`` and
    ``Infinity`` are not JSON, and strict parsers refuse them (``revmed eval`` does the same)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def emit_json(payload: Any) -> None:
    """Write ``payload`` as JSON on stdout, alone (strict JSON: see ``json_safe``)."""
    sys.stdout.write(json.dumps(json_safe(payload), indent=2, default=str, allow_nan=False)
                     + "\n")
    sys.stdout.flush()


@contextmanager
def progress(description: str, total: int | None, quiet: bool) -> Iterator[Callable[..., None]]:
    """A rich progress bar on stderr; yields ``update(done, total=None, text=None)``.

    The bar appears at the first update, so work that fails while checking its input prints
    only its error line.
    """
    bar = Progress(TextColumn("{task.description}", markup=False), BarColumn(),
                   MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("ETA"),
                   TimeRemainingColumn(), console=stderr(), disable=quiet, transient=False)
    task = None

    def update(done: int, new_total: int | None = None, text: str | None = None) -> None:
        nonlocal task
        if task is None:
            bar.start()
            task = bar.add_task(description, total=total)
        fields: dict[str, Any] = {"completed": done}
        if new_total is not None:
            fields["total"] = new_total
        if text is not None:
            fields["description"] = f"{description} {text}"
        bar.update(task, **fields)

    try:
        yield update
    finally:
        if task is not None:
            bar.stop()
