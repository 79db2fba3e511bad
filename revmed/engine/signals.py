"""Stopping a training run by signal: the first Ctrl-C, SIGTERM or SIGUSR1 asks the loop to
stop at the next step boundary (with a save); a second one stops at once (no save).

SIGTERM is what SLURM at the time limit, ``timeout``, ``docker stop`` and ``kill`` send; SIGUSR1
is what SLURM sends ahead of the time limit or a pre-emption with ``--signal=USR1@...``. See
``revmed.engine.trainer`` for what the loop does when asked to stop.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

#: Signals that stop training at the next step boundary, with a save (see the module doc).
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGUSR1")
                     if hasattr(signal, name))


class TrainingInterrupted(KeyboardInterrupt):
    """``Trainer.fit`` stopped on Ctrl-C (or a ``KeyboardInterrupt`` from ``progress``) and
    saved ``checkpoint`` (``RUN/last.pt``); ``resume=True`` continues from there.

    ``epoch`` is the epoch in progress (1-based, as in ``TrainEvent``) and ``step`` the steps of
    it already done (0: none; the epochs before it are complete).
    """

    def __init__(self, checkpoint: Path, epoch: int, step: int,
                 signum: int = signal.SIGINT) -> None:
        super().__init__(f"training interrupted: saved {checkpoint} at epoch {epoch} step {step}")
        self.checkpoint, self.epoch, self.step, self.signum = checkpoint, epoch, step, signum


class StoppedAtOnce(KeyboardInterrupt):
    """A second stop signal (``signum``) while the first was being handled: training stopped
    without saving; ``last.pt`` keeps the previous save."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped at once by signal {signum}")
        self.signum = signum


@contextlib.contextmanager
def deferred_signals() -> Iterator[Callable[[], int]]:
    """Yield ``requested()``: the first ``STOP_SIGNALS`` signal received (0: none yet); a
    second one raises ``StoppedAtOnce`` at once.

    Only the main thread receives signals, and an application's own handlers are left in place
    (a signal is taken over only while it has its default handler); then ``requested()`` stays
    0 and a ``KeyboardInterrupt`` raised by such a handler is caught where it lands (see
    ``Trainer.fit``).
    """
    received = [0]

    def handler(signum, frame):
        if received[0]:
            raise StoppedAtOnce(signum)
        received[0] = signum

    taken = {}
    if threading.current_thread() is threading.main_thread():
        for signum in STOP_SIGNALS:
            default = signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL
            if signal.getsignal(signum) is default:
                taken[signum] = default
                signal.signal(signum, handler)
    try:
        yield lambda: received[0]
    finally:
        for signum, default in taken.items():
            signal.signal(signum, default)
