"""One writer per run: a lock file per run name, held for the whole run.

Two terminals, two joblib workers or two machines on a shared folder starting the same run
would otherwise write the same ``best.ckpt`` and result file. The lock is an OS advisory lock
(``fcntl.lockf``: POSIX record locks, which NFS clients forward to the server), released by the
kernel when the process dies, so a SIGKILLed run never leaves a stale lock behind. The second
starter waits, saying for whom, and then re-checks whether the run has finished meanwhile.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

LOCK_FILE = "run.lock"


def _holder(handle) -> str:
    try:
        handle.seek(0)
        owner = json.loads(handle.read() or "{}")
        return f"pid {owner.get('pid')} on {owner.get('host')}"
    except (OSError, ValueError):
        return "another process"


@contextmanager
def run_lock(folder: str | os.PathLike, run_name: str, poll_seconds: float = 2.0) -> Iterator[None]:
    """Hold ``folder/run.lock`` exclusively; wait (with one log line) while another process has it."""
    path = Path(folder) / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            log.warning("Run %s is being trained by %s (lock %s); waiting for it to finish", run_name,
                        _holder(handle), path)
            while True:
                try:
                    fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError:
                    time.sleep(poll_seconds)
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
        handle.flush()
        try:
            yield
        finally:
            fcntl.lockf(handle, fcntl.LOCK_UN)
