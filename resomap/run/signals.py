"""SIGTERM is an interruption, like Ctrl-C: the run saves its checkpoint, is marked resumable,
its MLflow run ends KILLED, and the command exits 143, stopping a sweep.

Schedulers (SLURM, ``timeout``, Kubernetes) send SIGTERM to the whole process group. Lightning
turns it into a clean stop only during ``fit`` and only at a step boundary; elsewhere (data set-up,
testing, profiling, a child's DataLoader workers dying of the same signal) the run would fail with
an unrelated error. Inside :func:`sigterm_interrupts` the first SIGTERM raises
:class:`Terminated` wherever the run is, and :func:`received` tells any later handler that an
error came from the stop, not from a bug.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from lightning.pytorch.utilities.exceptions import SIGTERMException

_received = False


class Terminated(SIGTERMException):
    """The process was sent SIGTERM."""


def received() -> bool:
    """Whether this process was sent SIGTERM while a run was under way."""
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
