"""The per-run result file: its location, schema and atomic writing.

One schema for the exporter, the aggregator and the tests; ``docs/results.md`` is
its user guide. Keys of the seed study keep their names and meanings.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np

SCHEMA_VERSION = 1
_UMASK = os.umask(0)
os.umask(_UMASK)
TEST_RESULTS = "test_results"
REQUIRED_KEYS = ("model", "resolution", "timestamp", "best_val_loss", "test_metrics")


class ResultContributor(Protocol):
    """A callback that adds a section (``profiling``, ``complexity``...) to the result."""

    def result_section(self, trainer: Any, pl_module: Any) -> dict[str, Any]: ...


def result_path(results_dir: str | os.PathLike, run_name: str) -> Path:
    return Path(results_dir) / TEST_RESULTS / f"{run_name}.json"


def predictions_path(results_dir: str | os.PathLike, run_name: str) -> Path:
    return Path(results_dir) / TEST_RESULTS / f"{run_name}.npz"


def to_strict_json(value: Any) -> Any:
    """Replace NaN and infinities by None and numpy scalars by Python ones (strict JSON)."""
    if isinstance(value, dict):
        return {str(key): to_strict_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_strict_json(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp",
                                             dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual file mode
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_json(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    text = json.dumps(to_strict_json(payload), indent=2, allow_nan=False)
    atomic_write_text(path, text + "\n")


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
