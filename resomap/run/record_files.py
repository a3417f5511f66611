"""Where a run's files are in the results folder, and opening a predictions file.

``results/runs/{digest}/`` holds everything one run wrote, so two configurations of one model
and resolution (a sweep over ``optimizer.lr``) never share a file. ``results/test_results/
{run_name}.json`` and ``.npz`` are a readable view: links to the latest finished run of that
name, never read as the key (or, in the layout before schema version 3, the files themselves).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from resomap.names import contained, safe_name
from resomap.run.identity import RunIdentity
from resomap.run.record_schema import RECORD_FILE, RUNS, TEST_RESULTS, RunRecord


def _digest_of(record_or_identity: RunRecord | RunIdentity | str) -> str:
    if isinstance(record_or_identity, RunRecord):
        return record_or_identity.identity.digest
    if isinstance(record_or_identity, RunIdentity):
        return record_or_identity.digest
    return safe_name(record_or_identity, "identity digest")


def run_dir(results_dir: str | os.PathLike, record_or_identity: RunRecord | RunIdentity | str) -> Path:
    """``results_dir/runs/{digest}``: the folder of everything one run wrote (record, predictions,
    explanation maps), named by its identity digest, so no two configurations share a file."""
    return contained(results_dir, RUNS, _digest_of(record_or_identity))


def record_path(results_dir: str | os.PathLike, record_or_identity: RunRecord | RunIdentity | str) -> Path:
    return run_dir(results_dir, record_or_identity) / RECORD_FILE


def view_path(results_dir: str | os.PathLike, run_name: str) -> Path:
    """``results_dir/test_results/{run_name}.json``: the readable view of the latest finished run
    of that name (a link into its run folder), or a record of the earlier layout."""
    return Path(results_dir) / TEST_RESULTS / f"{run_name}.json"


def predictions_path(results_dir: str | os.PathLike, run_name: str) -> Path:
    """The view of the latest finished run's predictions of that name (see :func:`view_path`)."""
    return Path(results_dir) / TEST_RESULTS / f"{run_name}.npz"


def load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as saved:
        return {key: saved[key] for key in saved.files}
