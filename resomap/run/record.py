"""Reading the results folder: every run's record, one run's record, and its predictions.

Every later reader (aggregate, study, report, cross-resolution matrix, explain) goes through
:func:`iter_records` / :func:`find_finished` / :func:`read_predictions`, which read each record
with :func:`~resomap.run.record_schema.read_record` (type-checked, earlier layouts upgraded) and
also read the earlier layout (a record file in ``test_results/``). The record's schema is in
:mod:`resomap.run.record_schema`, where its files are in :mod:`resomap.run.record_files`, its
writer in :mod:`resomap.run.record_write`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from resomap.run.identity import RunIdentity
from resomap.run.record_files import load_npz, predictions_path, record_path, run_dir, view_path
from resomap.run.record_schema import (
    EXPLAIN_FILE,
    PREDICTIONS_FILE,
    RECORD_FILE,
    RUNS,
    TEST_RESULTS,
    InvalidRecord,
    RunRecord,
    read_record,
)

log = logging.getLogger(__name__)


def read_predictions(results_dir: str | os.PathLike, record: RunRecord) -> dict[str, np.ndarray] | None:
    """``labels``, ``predictions`` and ``probabilities`` of a record's test split, if saved.

    Read from the record's own run folder; a record of the earlier layout reads the ``.npz``
    beside it. Raises :class:`InvalidRecord` when the file holds another run's digest: a
    record is never paired with another configuration's predictions.
    """
    path = run_dir(results_dir, record) / PREDICTIONS_FILE
    if not path.is_file():
        legacy = predictions_path(results_dir, record.run_name)
        if not (_is_legacy_file(view_path(results_dir, record.run_name), record)
                and legacy.is_file() and not legacy.is_symlink()):
            return None
        path = legacy
    saved = load_npz(path)
    stored = saved.pop("identity", None)
    if stored is not None and str(stored) != record.identity.digest:
        raise InvalidRecord(f"{path}: field identity: these predictions belong to run {str(stored)}, not to "
                            f"the record of {record.run_name} (identity {record.identity.digest}); left out")
    return saved


def _is_legacy_file(path: Path, record: RunRecord) -> bool:
    """Whether ``path`` is a record file of the earlier layout holding ``record``'s identity."""
    if not path.is_file() or path.is_symlink():
        return False
    try:
        return read_record(path).identity.digest == record.identity.digest
    except InvalidRecord:
        return False


def with_explanations(results_dir: str | os.PathLike, record: RunRecord) -> RunRecord:
    """``record`` with the explain section that ``resomap explain`` wrote later beside it
    (``explain.json`` in its run folder), when that file is of this run; else as written, with a
    warning naming the file when it is not usable (the run's other results stay in the report)."""
    path = run_dir(results_dir, record) / EXPLAIN_FILE
    if not path.is_file():
        return record
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        log.warning("%s is not readable JSON (%s); the run's own explanations are used", path, error)
        return record
    if not isinstance(saved, dict) or saved.get("identity") != record.identity.digest:
        log.warning("%s is not the explanations of run %s; the run's own are used", path,
                    record.identity.digest)
        return record
    if not isinstance(saved.get("explain"), dict):
        log.warning("%s: field explain is not a mapping; the run's own explanations are used", path)
        return record
    return dataclasses.replace(record, explain=saved["explain"])


def iter_records(results_dir: str | os.PathLike) -> Iterator[tuple[Path, RunRecord | InvalidRecord]]:
    """Every record under ``results_dir``, read, or the reason it is not valid: each run folder's
    ``record.json``, then the earlier layout's files in ``test_results/`` (views skipped, and any
    identity already read)."""
    seen: set[str] = set()
    for path in sorted(Path(results_dir).glob(f"{RUNS}/*/{RECORD_FILE}")):
        try:
            record = read_record(path)
        except InvalidRecord as error:
            yield path, error
            continue
        if record.identity.digest != path.parent.name:
            yield path, InvalidRecord(f"{path}: field identity: the record is of run "
                                      f"{record.identity.digest}, not of the folder it is in "
                                      f"({path.parent.name}); left out")
            continue
        seen.add(record.identity.digest)
        yield path, with_explanations(results_dir, record)
    for path in sorted((Path(results_dir) / TEST_RESULTS).glob("*.json")):
        if path.is_symlink():
            continue
        try:
            record = read_record(path)
        except InvalidRecord as error:
            yield path, error
            continue
        if record.identity.digest not in seen:
            seen.add(record.identity.digest)
            yield path, with_explanations(results_dir, record)


def find_finished(results_dir: str | os.PathLike, identity: RunIdentity) -> RunRecord | None:
    """The record of this exact run, if it finished: a file read, nothing built. Raises
    :class:`InvalidRecord` when this run's record file exists but cannot be read."""
    path = record_path(results_dir, identity)
    if path.exists():
        record = read_record(path)
        return record if record.identity == identity else None
    legacy = view_path(results_dir, identity.run_name)
    if legacy.is_file() and not legacy.is_symlink():
        try:
            record = read_record(legacy)
        except InvalidRecord:
            return None
        return record if record.identity == identity else None
    return None
