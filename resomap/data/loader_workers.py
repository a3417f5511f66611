"""Setting up a DataLoader worker process of the cached pipeline: memory reuse, then seeding."""

from __future__ import annotations

import ctypes
import os


def keep_freed_memory() -> None:
    """Make glibc keep freed memory for reuse instead of returning it to the OS (Linux).

    Every image-sized tensor the augmentation allocates is larger than glibc's default mmap
    threshold, so each one is a fresh mapping whose pages fault in one by one: at 512 px that
    doubled the per-image cost of augmenting. Called in DataLoader worker processes only
    (they end with the loader), it has no effect elsewhere or on other C libraries.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 1 << 30)
    libc.mallopt(m_trim_threshold, 1 << 31)


def worker_init(rank: int, worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: :func:`keep_freed_memory`, then Lightning's worker seeding
    when ``seed_everything(workers=True)`` asked for it (a loader with its own init function
    does not get Lightning's)."""
    keep_freed_memory()
    if int(os.environ.get("PL_SEED_WORKERS", 0)):
        from lightning.fabric.utilities.seed import pl_worker_init_function

        pl_worker_init_function(worker_id, rank=rank)
