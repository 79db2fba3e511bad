"""What a re-run in the backward pass needs to match the forward pass it replaces.

The memory-saving engine evaluates every sub-network twice: once in the forward pass without
a graph, and once more in the backward pass, with a graph, to rebuild the block's input and to
differentiate. Both evaluations must compute the same function, so the second one re-enters
the autocast state of the first and, for random layers such as dropout, starts from the same
random-number-generator state. A :class:`Tape` holds both for one block.

Recording is ambient, like autocast itself: while :func:`recording` is active, every
:func:`call` snapshots the RNG state just before it runs its sub-network. Replay is explicit:
the block's backward pass asks the tape for the snapshot of the call it is about to redo.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager, nullcontext
from typing import Callable, Iterator

import torch

_active = threading.local()


class Tape:
    """Autocast state and RNG snapshots of one block's forward evaluation.

    Args:
        device: device of the block's input; its type picks the autocast state to record,
            and a CUDA device also gets its generator recorded.
        rng: record RNG states at all. Without them a replay re-enters autocast only.
    """

    def __init__(self, device: torch.device, rng: bool = True) -> None:
        self.device_type = device.type
        self.autocast_enabled = torch.is_autocast_enabled(self.device_type)
        self.autocast_dtype = torch.get_autocast_dtype(self.device_type)
        self.rng = rng
        self._cuda = [device.index if device.index is not None else torch.cuda.current_device()] \
            if device.type == "cuda" else []
        self._states: list[tuple[torch.Tensor, list[torch.Tensor]]] = []

    def record(self) -> None:
        """Snapshot the CPU (and CUDA) generator states; called before a sub-network runs."""
        if self.rng:
            cuda = [torch.cuda.get_rng_state(d) for d in self._cuda]
            self._states.append((torch.get_rng_state(), cuda))

    @contextmanager
    def replay(self, index: int | None) -> Iterator[None]:
        """Re-enter the recorded autocast state and, when ``index`` names a snapshot, the RNG
        state recorded before the ``index``-th call. The caller's RNG state is restored on exit.
        """
        autocast = torch.autocast(self.device_type, dtype=self.autocast_dtype,
                                  enabled=self.autocast_enabled)
        if index is None or not self.rng:
            with autocast:
                yield
            return
        cpu, cuda = self._states[index]
        with torch.random.fork_rng(devices=self._cuda, device_type="cuda"), autocast:
            torch.set_rng_state(cpu)
            for d, state in zip(self._cuda, cuda):
                torch.cuda.set_rng_state(state, d)
            yield


@contextmanager
def recording(tape: Tape | None) -> Iterator[None]:
    """Make ``tape`` the one that :func:`call` records into (on this thread)."""
    previous = getattr(_active, "tape", None)
    _active.tape = tape
    try:
        yield
    finally:
        _active.tape = previous


def call(net: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``net(x)``, with a snapshot of the RNG state taken first when a tape is recording."""
    tape = getattr(_active, "tape", None)
    if tape is not None:
        tape.record()
    return net(x)


def replaying(tape: Tape | None, index: int | None):
    """``tape.replay(index)``, or nothing when there is no tape (a direct, engine-less call)."""
    return nullcontext() if tape is None else tape.replay(index)
