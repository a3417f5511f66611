"""Writing a run's record and predictions: the run's commit point, and its readable view.

:func:`write_predictions` is called first, :func:`write_record` last: a run with a record is
finished. Each file is written atomically (:mod:`resomap.io`); the ``test_results/{run_name}``
view is then pointed at the run's folder, after moving any file of the earlier layout that
stood there into its own run folder.
"""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import numpy as np

from resomap.io import atomic_symlink, atomic_write_bytes, write_json
from resomap.run.identity import RunIdentity
from resomap.run.record_files import load_npz, predictions_path, record_path, run_dir, view_path
from resomap.run.record_schema import (
    EXPLAIN_FILE,
    PREDICTIONS_FILE,
    RECORD_FILE,
    InvalidRecord,
    RunRecord,
    read_record,
)

log = logging.getLogger(__name__)


def write_predictions(path: str | os.PathLike, labels: np.ndarray, probabilities: np.ndarray,
                      identity: RunIdentity | None = None) -> None:
    """Test labels, predictions and class probabilities, for paired tests across runs; with the
    run's identity digest, so a reader can tell whose they are."""
    buffer = io.BytesIO()
    extra = {"identity": np.array(identity.digest)} if identity is not None else {}
    np.savez_compressed(buffer, labels=labels.astype(np.int16),
                        predictions=probabilities.argmax(axis=1).astype(np.int16),
                        probabilities=probabilities.astype(np.float32), **extra)
    atomic_write_bytes(path, buffer.getvalue())


def _adopt_legacy(results_dir: Path, view: Path, npz_view: Path, record: RunRecord) -> None:
    """Before a view replaces a file of the earlier layout, move that file into its own run
    folder (nothing written is lost). A plain ``.npz`` at the view's place written just before
    ``write_record`` by a caller of the earlier API is this record's, unless it says otherwise."""
    orphan = False
    if view.is_file() and not view.is_symlink():
        try:
            old = read_record(view)
        except InvalidRecord:
            old = None
        if old is not None and old.identity.digest != record.identity.digest:
            folder = run_dir(results_dir, old)
            if not (folder / RECORD_FILE).exists():
                folder.mkdir(parents=True, exist_ok=True)
                # Predictions are written before their record: a newer .npz is another run's,
                # left by a kill before its record (it stays where it is).
                if npz_view.is_file() and not npz_view.is_symlink():
                    if npz_view.stat().st_mtime_ns <= view.stat().st_mtime_ns:
                        os.replace(npz_view, folder / PREDICTIONS_FILE)
                    else:
                        orphan = True
                os.replace(view, folder / RECORD_FILE)
    own = run_dir(results_dir, record) / PREDICTIONS_FILE
    if npz_view.is_file() and not npz_view.is_symlink() and not own.exists() and not orphan:
        stored = load_npz(npz_view).get("identity")
        if stored is None or str(stored) == record.identity.digest:
            own.parent.mkdir(parents=True, exist_ok=True)
            os.replace(npz_view, own)


def write_record(results_dir: str | os.PathLike, record: RunRecord) -> Path:
    """Write the record atomically into its run folder: the run's commit point. Then point the
    ``test_results/{run_name}`` view at it. Returns the record's path."""
    results_dir = Path(results_dir)
    path = record_path(results_dir, record)
    view, npz_view = view_path(results_dir, record.run_name), predictions_path(results_dir, record.run_name)
    _adopt_legacy(results_dir, view, npz_view, record)
    write_json(path, record.to_dict())
    try:
        atomic_symlink(path, view)
        if (path.parent / PREDICTIONS_FILE).is_file():
            atomic_symlink(path.parent / PREDICTIONS_FILE, npz_view)
    except OSError as error:  # a file system without symbolic links: the record itself is written
        log.warning("Could not update the view %s of %s: %s", view, path, error)
    return path


def remove_temporary_files(*folders: str | os.PathLike, prefixes: tuple[str, ...] = ("",)) -> list[Path]:
    """Delete the ``.{name}.*.tmp`` files an atomic writer killed mid-write left in ``folders``
    (only names starting with one of ``prefixes``): called by that writer's next start, under
    the run's lock, so no live writer owns them. Returns what was removed."""
    removed = []
    for folder in folders:
        for prefix in prefixes:
            for path in Path(folder).glob(f".{prefix}*.tmp"):
                if path.is_file() or path.is_symlink():
                    path.unlink(missing_ok=True)
                    removed.append(path)
    if removed:
        log.info("Removed %d temporary file(s) left by an interrupted writer: %s", len(removed),
                 ", ".join(str(path) for path in removed))
    return removed


def write_explanations(results_dir: str | os.PathLike, record: RunRecord, section: dict) -> Path:
    """``explain.json`` in the run's folder: explanations made after the run (``resomap explain``),
    beside its record, which stays as the run wrote it; readers see them through
    :func:`resomap.run.record.iter_records`."""
    path = run_dir(results_dir, record) / EXPLAIN_FILE
    write_json(path, {"identity": record.identity.digest, "explain": section})
    return path
