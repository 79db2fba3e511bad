"""Where the CLI writes: results on stdout, progress and messages on stderr.

``--json`` output goes to stdout and nothing else does, so scripts can parse it; progress bars,
notes and errors go to stderr.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


def stdout() -> Console:
    """A console on the current ``sys.stdout`` (made per call so tests can capture it)."""
    return Console(file=sys.stdout, highlight=False, soft_wrap=True)


def stderr() -> Console:
    return Console(file=sys.stderr, highlight=False, soft_wrap=True)


#: What to type to fix a problem, by the library argument a ``RevmedError`` names as its ``fix``.
FIXES = {
    "compile": "run without --compile",
    "overwrite": "use --overwrite to replace it, or choose another folder",
    "precision": "--precision fp32 runs in full precision",
    "resume": "use --resume to continue it or choose another --out",
    "data_range": "pass --data-range",
    "input": "pass --input",
    "series": "choose one with --series",
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
    stderr().print(f"[bold red]error:[/] [red]{escape(message)}[/]")


def warning(message: str) -> None:
    stderr().print(f"[yellow]warning:[/] {escape(message)}")


def note(message: str, quiet: bool = False) -> None:
    """An informative line on stderr (silenced by ``--quiet``)."""
    if not quiet:
        stderr().print(escape(message))


def emit_json(payload: Any) -> None:
    """Write ``payload`` as JSON on stdout, alone."""
    sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")
    sys.stdout.flush()


@contextmanager
def progress(description: str, total: int | None, quiet: bool) -> Iterator[Callable[..., None]]:
    """A rich progress bar on stderr; yields ``update(done, total=None, text=None)``.

    The bar appears at the first update, so work that fails while checking its input prints
    only its error line.
    """
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), console=stderr(), disable=quiet, transient=False)
    task = None

    def update(done: int, new_total: int | None = None, text: str | None = None) -> None:
        nonlocal task
        if task is None:
            bar.start()
            task = bar.add_task(escape(description), total=total)
        fields: dict[str, Any] = {"completed": done}
        if new_total is not None:
            fields["total"] = new_total
        if text is not None:
            fields["description"] = escape(f"{description} {text}")
        bar.update(task, **fields)

    try:
        yield update
    finally:
        if task is not None:
            bar.stop()
