"""Log lines for long steps, for every command: progress through many items, and how long a stage
took. tqdm draws bars on a terminal; these lines are what a log file keeps."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


def clock(seconds: float) -> str:
    """``4:12`` or ``1:02:03``."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def approx(seconds: float) -> str:
    """``~40 s``, ``~11 min``, ``~2 h 05 min``."""
    if seconds < 60:
        return f"~{max(1, round(seconds))} s"
    minutes = round(seconds / 60)
    return f"~{minutes} min" if minutes < 90 else f"~{minutes // 60} h {minutes % 60:02d} min"


def log_progress(items: Iterable[T], total: int, what: str, every: float = 0.1,
                 logger: logging.Logger = log) -> Iterator[T]:
    """Yield ``items``, logging ``what: 120/371 (32%), ~20 s left`` at each ``every`` of them.

    For long steps whose tqdm bar would only flood a log file (data generation, decoding): one
    line per tenth by default, in the job's log file too.
    """
    started = time.perf_counter()
    step = max(1, int(total * every))
    for index, item in enumerate(items, start=1):
        yield item
        if index % step == 0 or index == total:
            elapsed = time.perf_counter() - started
            left = elapsed / index * (total - index)
            tail = f", {approx(left)} left" if index < total else f", done in {clock(elapsed)}"
            logger.info("%s: %d/%d (%d%%)%s", what, index, total, 100 * index // max(total, 1), tail)


@contextmanager
def stage(what: str, logger: logging.Logger = log) -> Iterator[None]:
    """``Building the report...`` then ``Building the report: done in 0:42``."""
    started = time.perf_counter()
    logger.info("%s...", what)
    yield
    logger.info("%s: done in %s", what, clock(time.perf_counter() - started))
