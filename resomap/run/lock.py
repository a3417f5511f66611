"""One writer per run: a lock file per run name, held for the whole run.

Two terminals, two joblib workers or two machines on a shared folder starting the same run
would otherwise write the same ``best.ckpt`` and result file. The lock is an OS advisory lock
(``fcntl.lockf``: POSIX record locks, which NFS clients forward to the server), released by the
kernel when the process dies, so a SIGKILLed run never leaves a stale lock behind. The second
starter waits, saying for whom, and then re-checks whether the run has finished meanwhile.

The lock lives in a folder others may write to (a shared checkpoints folder), so it is opened
without following a symbolic link (``O_NOFOLLOW``), only as a regular file with no other name (a
hard link to another file is refused), and is never truncated: the holder's pid and host are
written over its first bytes.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from resomap.errors import ResoMapError

log = logging.getLogger(__name__)

LOCK_FILE = "run.lock"
HOLDER_BYTES = 256  # the holder's pid and host, padded with blanks


class UnsafeLockError(ResoMapError):
    """The lock file is a symbolic link, not a regular file, or a hard link to another file."""


def open_no_follow(path: str | os.PathLike, flags: int, mode: int = 0o666) -> int:
    """``os.open`` that refuses a symbolic link at ``path`` and anything but a regular file.

    Returns the descriptor; raises :class:`UnsafeLockError` naming the file. ``mode`` is
    filtered by the umask, as for any new file.
    """
    try:
        descriptor = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC | getattr(os, "O_NONBLOCK", 0), mode)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise UnsafeLockError(
                f"{path} is a symbolic link. ResoMap never follows a link where it writes into a shared "
                "folder (it could point at any file of yours). Remove the link and start again.") from error
        raise
    info = os.fstat(descriptor)
    if not stat.S_ISREG(info.st_mode):
        os.close(descriptor)
        raise UnsafeLockError(f"{path} is not a regular file; remove it and start again.")
    os.set_blocking(descriptor, True)
    return descriptor


def _check_single_name(descriptor: int, path: Path) -> None:
    """Refuse a lock file with another name (a hard link to some other file)."""
    links = os.fstat(descriptor).st_nlink
    if links != 1:
        raise UnsafeLockError(
            f"{path} has {links} names (it is a hard link to another file): a lock file never has more "
            "than one, so it is left alone. Remove it and start again.")


def _holder(descriptor: int) -> str:
    try:
        owner = json.loads(os.pread(descriptor, HOLDER_BYTES, 0).decode().strip("\0 \n") or "{}")
        return f"pid {owner.get('pid')} on {owner.get('host')}"
    except (OSError, ValueError, AttributeError):
        return "another process"


@contextmanager
def run_lock(folder: str | os.PathLike, run_name: str, poll_seconds: float = 2.0) -> Iterator[None]:
    """Hold ``folder/run.lock`` exclusively; wait (with one log line) while another process has it."""
    path = Path(folder) / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = open_no_follow(path, os.O_RDWR | os.O_CREAT)
    try:
        _check_single_name(descriptor, path)
        try:
            fcntl.lockf(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            log.warning("Run %s is being trained by %s (lock %s); waiting for it to finish", run_name,
                        _holder(descriptor), path)
            while True:
                try:
                    fcntl.lockf(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError:
                    time.sleep(poll_seconds)
        # Written over the start, padded to a fixed length: the file is never truncated.
        owner = json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).ljust(HOLDER_BYTES)
        os.pwrite(descriptor, owner.encode()[:HOLDER_BYTES], 0)
        try:
            yield
        finally:
            fcntl.lockf(descriptor, fcntl.LOCK_UN)
    finally:
        os.close(descriptor)
