"""A sweep job's ``job.json``: which run one job of a multirun was and how it ended.

Written by :func:`resomap.sweep.write_job` in the job's Hydra output folder; read back (as data:
types and names checked) by the end-of-sweep report, the adaptive sweeper, the progress lines
and a DDP job's parent.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from resomap.names import UnsafeName, safe_name

log = logging.getLogger(__name__)

JOB_FILE = "job.json"
JOB_STATUSES = ("finished", "skipped", "failed", "interrupted")


def read_job(output_dir: str | Path) -> dict | None:
    """The validated ``job.json`` of a job's output folder; None when absent or not valid."""
    path = Path(output_dir) / JOB_FILE
    try:
        job = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    types = {"identity": str, "run_name": str, "model": str, "res": int, "seed": int, "status": str}
    if not isinstance(job, dict) or any(not isinstance(job.get(key), kind) or isinstance(job.get(key), bool)
                                        for key, kind in types.items()):
        log.warning("%s is not a valid job file; ignored", path)
        return None
    try:
        if job["identity"]:
            safe_name(job["identity"], "identity", path)
        safe_name(job["run_name"], "run_name", path)
        safe_name(job["model"], "model", path)
    except UnsafeName as error:
        log.warning("%s", error)
        return None
    if job["status"] not in JOB_STATUSES:
        log.warning("%s: status %r is not one of %s; ignored", path, job["status"], ", ".join(JOB_STATUSES))
        return None
    return {key: job[key] for key in types}
