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

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.table import Table
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


def notes(quiet: bool = False) -> Callable[[str], None]:
    """``note`` as a callback for the library's ``note(text)`` arguments."""
    return lambda message: note(message, quiet)


def events(quiet: bool = False):
    """The library's ``revmed.io.batch.Events`` shown as the commands show them: notes and
    failed cases on stderr, ``wrote PATH`` on stdout, a progress bar per piece of work."""
    from revmed.io.batch import Events

    return Events(note=notes(quiet), failed=report_failure, interrupted=error,
                  wrote=lambda path: stdout().print(f"wrote {path}"),
                  progress=lambda description, total: progress(description, total, quiet))


def report_failure(exc: BaseException) -> None:
    """One error line for a case of a batch that failed (the batch goes on)."""
    error(describe(exc))


#: Digits shown per metric in the table (the JSON and CSV keep full precision).
_FORMATS = {"psnr": "{:.2f}", "ssim": "{:.4f}"}


def _number(name: str, value: float) -> str:
    if math.isnan(value):
        return "-"
    if math.isinf(value):
        return "inf"
    if name in _FORMATS:
        return _FORMATS[name].format(value)
    return f"{value:.2f}" if abs(value) >= 1 else f"{value:.4g}"


def report_table(report) -> Table:
    """The table of a ``revmed.evaluation.Report``: rows per case and method, then mean and std
    rows per method."""
    names = report.metric_names
    if report.kind == "regions":
        caption = f"regions: {report.labels.describe_regions()}; HD95 in mm"
    elif report.data_range is None:
        caption = "data range: the reference's max - min, per case (see --json)"
    else:
        caption = f"data range: {report.data_range:g} (--data-range)"
    if report.kind == "image" and report.window is not None:
        lo, hi = report.window
        caption = f"window: {lo:g} to {hi:g} mapped to [-1, 1], data range 2 (--window)"
    if report.kind == "image" and report.error_scale != 1.0:
        caption += f"; MAE and RMSE x {report.error_scale:g} (--error-scale)"
    table = Table(title="revmed eval", caption=caption, title_justify="left",
                  caption_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("case", no_wrap=True)
    table.add_column("method", no_wrap=True)
    for name in names:
        table.add_column(name.replace("_", "\n"), justify="right", no_wrap=True)
    for case in report.cases:
        for method in report.methods:
            table.add_row(case.name, method,
                          *(_number(n, case.metrics[method][n]) for n in names))
    table.add_section()
    summary = report.summary()
    for stat in ("mean", "std"):
        label = f"mean of {len(report.cases)}" if stat == "mean" else "std"
        for method in report.methods:
            table.add_row(label, method,
                          *("-" if summary[method][n]["n"] == 0 else
                            _number(n, summary[method][n][stat]) for n in names),
                          style="bold" if stat == "mean" else None)
    return table


def print_wide(console: Console, table: Table) -> None:
    """Print ``table`` at its natural width, even where that is wider than the terminal."""
    width = Measurement.get(console, console.options.update_width(1000), table).maximum
    if width > console.width:
        console.width = width
    console.print(table)
