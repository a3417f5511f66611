"""The per-run result file: its location, schema and atomic writing.

One schema for the exporter, the aggregator and the tests; ``docs/results.md`` is
its user guide. Keys of the seed study keep their names and meanings.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from resomap.io import atomic_write_bytes

SCHEMA_VERSION = 1
TEST_RESULTS = "test_results"
REQUIRED_KEYS = ("model", "resolution", "timestamp", "best_val_loss", "test_metrics")


class ResultContributor(Protocol):
    """A callback that adds a section (``profiling``, ``complexity``...) to the result."""

    def result_section(self, trainer: Any, pl_module: Any) -> dict[str, Any]: ...


def result_path(results_dir: str | os.PathLike, run_name: str) -> Path:
    return Path(results_dir) / TEST_RESULTS / f"{run_name}.json"


def predictions_path(results_dir: str | os.PathLike, run_name: str) -> Path:
    return Path(results_dir) / TEST_RESULTS / f"{run_name}.npz"










def write_predictions(path: str | os.PathLike, labels: np.ndarray,
                      probabilities: np.ndarray) -> None:
    """Test labels, predictions and class probabilities, for paired tests across runs."""
    import io

    buffer = io.BytesIO()
    np.savez_compressed(buffer, labels=labels.astype(np.int16),
                        predictions=probabilities.argmax(axis=1).astype(np.int16),
                        probabilities=probabilities.astype(np.float16))
    atomic_write_bytes(path, buffer.getvalue())


class InvalidResult(ValueError):
    """A file in the results folder is not a ResoMap result."""


def read_result(path: str | os.PathLike) -> dict[str, Any]:
    """Load and check one result file; raises InvalidResult naming the file and the problem."""
    path = Path(path)
    try:
        payload = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidResult(f"{path}: not readable JSON ({error})") from error
    if not isinstance(payload, dict):
        raise InvalidResult(f"{path}: expected a JSON object")
    missing = [key for key in REQUIRED_KEYS if key not in payload]
    if missing:
        raise InvalidResult(f"{path}: missing keys {missing}")
    return payload


def iter_results(results_dir: str | os.PathLike) -> Iterator[tuple[Path, dict | InvalidResult]]:
    """Every ``*.json`` under ``results_dir/test_results``, read, or the reason it is not valid."""
    for path in sorted((Path(results_dir) / TEST_RESULTS).glob("*.json")):
        try:
            yield path, read_result(path)
        except InvalidResult as error:
            yield path, error
