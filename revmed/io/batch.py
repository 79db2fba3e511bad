"""Running over the targets of a run (``plan_targets``): which to do, each output claimed while
it is made, a batch that goes on past a failed case.

``select_targets`` picks this run's targets: its part of a batch (``num_parts``, ``part_id``:
every K-th case, for job arrays), less the outputs that exist already with ``skip_existing``
(an output that does not read is redone; a claim a killed run left beside a finished output is
cleared). ``run_targets`` calls ``work(target)`` for each, holding a claim on its output
(``OutputClaim``): a second run writing the same output refuses it at once. In a batch a case
that fails is reported through ``events.failed`` and the others are done; then one
``InputError`` counts the failures. ``single_claim`` claims the output of a single case before
its model is loaded.

Nothing here prints: what a run says as it goes reaches ``Events`` callbacks, which the
command line shows (notes and errors on stderr, ``wrote PATH`` on stdout, progress bars).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ContextManager

from revmed.errors import InputError, OutputError, RevmedError
from revmed.io.folder_lock import OutputClaim, clear_stale_claim
from revmed.io.targets import Plan, Target

Note = Callable[[str], None]


def _quiet(text: str) -> None:
    return None


def _ignore(*args: Any) -> None:
    return None


def _no_progress(description: str, total: int | None) -> ContextManager[Callable[..., None]]:
    return contextlib.nullcontext(_ignore)


@dataclass(frozen=True)
class Events:
    """What a run over targets says as it goes; every callback is optional.

    Attributes:
        note: an informative line (a part of a batch, skipped outputs, the model used).
        failed: a case of a batch failed with this error (the batch goes on).
        interrupted: Ctrl-C: how far the batch got.
        wrote: an output (or a kept model) was written, whole, to this path.
        progress: ``progress(description, total)``: a context whose value ``update(done,
            total, text=None)`` hears how far one piece of work (a case, a training) is.
    """

    note: Note = _quiet
    failed: Callable[[RevmedError], None] = _ignore
    interrupted: Note = _quiet
    wrote: Callable[[Path], None] = _ignore
    progress: Callable[[str, int | None], ContextManager[Callable[..., None]]] = _no_progress


def check_batch_options(overwrite: bool, skip_existing: bool, num_parts: int = 1,
                        part_id: int = 0) -> None:
    """``InputError`` for batch options that contradict each other."""
    if overwrite and skip_existing:
        raise InputError("--overwrite and --skip-existing contradict each other; give one")
    if part_id >= num_parts:
        raise InputError(f"--part-id {part_id}: must be below --num-parts {num_parts}")


def output_problem(path: Path) -> str | None:
    """Why the existing output ``path`` is no usable result (it does not read: truncated,
    empty, damaged), or None when it reads."""
    from revmed.io.dispatch import read_volume

    try:
        read_volume(path)
    except RevmedError as exc:
        return str(exc).split(": ", 1)[-1]
    return None


def select_targets(plan: Plan, num_parts: int = 1, part_id: int = 0, overwrite: bool = False,
                   skip_existing: bool = False, note: Note = _quiet) -> list[Target]:
    """The targets this run does (see the module doc); an existing output without
    ``overwrite`` or ``skip_existing`` is an ``OutputError``. Cases that are passed over (a
    localizer series) are said and left out."""
    targets = plan.targets
    if num_parts > 1:
        if not plan.batch:
            raise InputError("--num-parts splits a folder of cases; INPUT is a single case")
        targets = targets[part_id::num_parts]
        note(f"part {part_id} of {num_parts}: {len(targets)} case(s)")
    existing = [t.path for t in targets if t.path.exists()]
    if skip_existing:
        broken = {path: output_problem(path) for path in existing}
        for path, problem in broken.items():
            if problem is not None:
                note(f"redoing {path}: it does not read ({problem})")
            else:
                clear_stale_claim(path)  # what a killed run left beside an output it finished
        targets = [t for t in targets if not t.path.exists() or broken.get(t.path)]
        kept = sum(problem is None for problem in broken.values())
        if kept:
            note(f"skipping {kept} existing output(s)")
    elif existing and not overwrite:
        raise OutputError(f"{existing[0]}: exists; use --overwrite to replace it or "
                          "--skip-existing to keep it")
    for target in targets:
        if target.case.skip:
            note(f"passing over {target.case.files[0]}: {target.case.skip}")
    return [t for t in targets if not t.case.skip]


@contextlib.contextmanager
def claimed(path: Path, overwrite: bool, skip_existing: bool = False) -> Iterator[bool]:
    """Hold a claim on the output ``path`` (``OutputClaim``) for the block, which gets
    whether to make the output: another run writing it now is an ``OutputError``; one that
    another run finished since the outputs were checked is refused (replaced with
    ``overwrite``; left alone with ``skip_existing`` when it reads)."""
    made = _make_folder(path.parent)
    claim = OutputClaim(path)
    try:
        claim.acquire()
    except BaseException:
        _remove_if_empty(made)
        raise
    try:
        make = True
        if path.exists() and not overwrite:
            if not skip_existing:
                raise OutputError(f"{path}: exists (another run wrote it meanwhile); use "
                                  "--overwrite to replace it")
            make = output_problem(path) is not None
        yield make
    finally:
        claim.release()
        _remove_if_empty(made)


def _make_folder(folder: Path) -> Path | None:
    """Make ``folder`` (and what is missing above it); returns the topmost folder made, or
    None when it existed. ``OutputError`` when it cannot be made."""
    top = None
    for above in [folder, *folder.parents]:
        if above.exists() or not str(above):
            break
        top = above
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{folder}: cannot create it ({exc.strerror or exc})") from None
    return top


def _remove_if_empty(top: Path | None) -> None:
    """Remove the folders ``_make_folder`` made, from the deepest up, while they are empty."""
    if top is None:
        return
    for folder in sorted([p for p in top.rglob("*") if p.is_dir()], reverse=True) + [top]:
        with contextlib.suppress(OSError):
            folder.rmdir()


def single_claim(plan: Plan, targets: Sequence[Target], overwrite: bool,
                 skip_existing: bool = False):
    """The claim on a single output, taken before the model is loaded (a batch claims each
    output as it comes to it, in ``run_targets``)."""
    if plan.batch or not targets:
        return contextlib.nullcontext()
    return claimed(targets[0].path, overwrite or skip_existing)


def run_targets(targets: Sequence[Target], plan: Plan, output_path: Path, overwrite: bool,
                work: Callable[[Target], None], skip_existing: bool = False,
                extra_failures: Sequence[Path] = (), what: str = "case",
                events: Events = Events()) -> None:
    """``work(target)`` for each target, each output claimed while it is made (see the
    module doc): a failed case of a batch goes to ``events.failed``. A batch folder this run
    made and left empty is removed; Ctrl-C says how far the batch got (``events.interrupted``)
    before it ends the run. ``extra_failures``: inputs that failed before (counted with the
    rest)."""
    made = plan.batch and not output_path.exists()
    if plan.batch:
        output_path.mkdir(parents=True, exist_ok=True)
    failures, written = list(extra_failures), 0
    try:
        for target in targets:
            try:
                with (claimed(target.path, overwrite, skip_existing) if plan.batch
                      else contextlib.nullcontext(True)) as make:
                    if make:
                        work(target)
                written += 1
            except RevmedError as exc:
                if not plan.batch:
                    raise
                events.failed(exc)
                failures.append(target.case.files[0])
    except KeyboardInterrupt:
        if plan.batch:
            events.interrupted(f"interrupted: {written} of {len(targets)} {what}(s) were "
                               f"written to {output_path}; run again with --skip-existing to "
                               "do the rest")
        raise
    finally:
        if made and written == 0:
            with contextlib.suppress(OSError):
                output_path.rmdir()  # only when empty
    if failures:
        names = ", ".join(str(p) for p in failures[:5]) + (" ..." if len(failures) > 5 else "")
        rest = (f"the other {written} were written to {output_path}" if written else
                "nothing was written")
        total = len(targets) + len(extra_failures)
        raise InputError(f"{len(failures)} of {total} {what}(s) failed ({names}); {rest}")
