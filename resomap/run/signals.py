"""SIGTERM is an interruption, like Ctrl-C: the run saves its checkpoint, is marked resumable,
its MLflow run ends KILLED, and the command exits 143, stopping a sweep.

Schedulers (SLURM, ``timeout``, Kubernetes) send SIGTERM to the whole process group. Lightning
turns it into a clean stop only during ``fit`` and only at a step boundary; elsewhere (data set-up,
testing, profiling, a child's DataLoader workers dying of the same signal) the run would fail with
an unrelated error. Inside :func:`sigterm_interrupts` the first SIGTERM raises
:class:`Terminated` wherever the run is, and :func:`received` tells any later handler that an
error came from the stop, not from a bug.

Ctrl-C in a multi-process fit is the other case: the terminal signals every rank at once, each
rank is at a different point (one inside a gradient all-reduce, another before it), and each
would save its interrupt checkpoint through a barrier the others never reach, so the ranks wait
on each other until the collective's timeout. Lightning's SIGTERM flag has the same race (its fit
loop checks it on each rank alone at epoch end). Inside :func:`ctrl_c_at_step_boundary` Ctrl-C
only notes itself; after every training step the ranks agree (one all-reduce, as EarlyStopping
does) and, if any rank was interrupted, all raise KeyboardInterrupt at that same step.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException

_received = False


class Terminated(SIGTERMException):
    """The process was sent SIGTERM."""


def received() -> bool:
    """Whether this process was sent SIGTERM while a run was under way."""
    return _received


# torch names a DataLoader worker's death by a signal with strsignal(); see
# _error_if_any_worker_fails in torch/csrc/DataLoader.cpp.
_WORKER_TERMINATED = f"is killed by signal: {signal.strsignal(signal.SIGTERM)}"


def stopped_by_sigterm(error: BaseException) -> bool:
    """Whether ``error`` ended the run because of SIGTERM, not because of a bug.

    True when this process noted SIGTERM, or when ``error`` (or an exception it came from) is a
    DataLoader worker's death by SIGTERM. The second covers a race: the process group's SIGTERM
    kills the workers, and torch's SIGCHLD handler raises inside this process's own SIGTERM
    handler (Lightning's notifier runs first and logs) before that handler has noted anything.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if _WORKER_TERMINATED in str(current):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return _received


def _handler(signum: int, frame: object) -> None:
    global _received
    first = not _received
    _received = True
    # During fit Lightning's own handler calls this one after noting the signal, and stops at the
    # next step boundary; raising here would cut a checkpoint or tracking write short. A second
    # SIGTERM while the first one's checkpoint is being saved changes nothing.
    if first and signal.getsignal(signal.SIGTERM) is _handler:
        raise Terminated()


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` (main thread only; a no-op elsewhere)."""
    global _received
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _received = False
    previous = signal.signal(signal.SIGTERM, _handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


_ctrl_c = False


def ctrl_c_noted() -> bool:
    """Whether Ctrl-C was noted by :func:`ctrl_c_at_step_boundary` during the last fit."""
    return _ctrl_c


class _StopTogether(Callback):
    """Raises KeyboardInterrupt on every rank after the step in which any rank saw Ctrl-C."""

    def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        if trainer.strategy.reduce_boolean_decision(_ctrl_c, all=False):
            raise KeyboardInterrupt("Ctrl-C: every rank stops after this training step")


@contextmanager
def ctrl_c_at_step_boundary(trainer: pl.Trainer) -> Iterator[None]:
    """Within a multi-process fit, Ctrl-C stops every rank after the same training step.

    Lightning then saves the interrupt checkpoint on all ranks through the same barrier. Ctrl-C
    after the last step lets the fit end; :func:`ctrl_c_noted` tells the caller to stop then.
    One-process fits keep Lightning's own Ctrl-C handling.
    """
    global _ctrl_c
    _ctrl_c = False
    if trainer.world_size <= 1 or threading.current_thread() is not threading.main_thread():
        yield
        return

    def note(signum: int, frame: object) -> None:
        global _ctrl_c
        _ctrl_c = True

    stop = _StopTogether()
    trainer.callbacks.append(stop)
    previous = signal.signal(signal.SIGINT, note)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        trainer.callbacks.remove(stop)
