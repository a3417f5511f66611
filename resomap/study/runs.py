"""One run of the study: its record, its stored test predictions and the metrics computed from them.

Kept apart from the grouping and the answers so anything that reads a single run (the adaptive
sweep, the tables) needs only this.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from resomap.run import record as records
from resomap.run.record import RunRecord
from resomap.study import bootstrap, degenerate, scores
from resomap.study.cost_figures import number


@dataclass
class RunData:
    """One run: its record, its stored test predictions and the metrics computed from them.

    ``source`` says where the metrics come from: ``predictions`` (the ``.npz``; the study's
    own computation, the same one its intervals and comparisons use) or ``record`` (the
    record's values, when the predictions are missing or unusable: ``problem`` says why).
    """

    path: Path
    record: RunRecord
    predictions: bootstrap.Predictions | None
    metrics: dict[str, float | None]
    per_class_auroc: dict[str, float | None]
    per_class_average_precision: dict[str, float | None]
    source: str
    problem: str = ""
    flags: list[str] = field(default_factory=list)  # why the run is degenerate (resomap.study.degenerate)
    model: str = ""  # the model, with its configuration when runs of the model differ (groups.py)
    config: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.model = self.model or self.record.model

    @property
    def seed(self) -> int:
        return self.record.seed

    @property
    def scorable(self) -> bool:
        """Predictions with finite probabilities: every metric can be bootstrapped."""
        return self.predictions is not None and bool(np.isfinite(self.predictions.probabilities).all())


def _by_class(classes: Sequence[str], values: np.ndarray) -> dict[str, float | None]:
    return {name: number(value) for name, value in zip(classes, values)}


def _read_saved(results_dir: Path, record: RunRecord) -> tuple[bootstrap.Predictions | None, str]:
    try:
        saved = records.read_predictions(results_dir, record)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
        return None, f"its predictions file is not readable ({type(error).__name__}: {error})"
    if saved is None:
        return None, "no stored test predictions (.npz)"
    try:
        labels = np.asarray(saved["labels"]).astype(np.int64)
        probabilities = np.asarray(saved["probabilities"], dtype=np.float64)
        predictions = np.asarray(saved["predictions"]).astype(np.int64)
    except KeyError as error:
        return None, f"its predictions file lacks {error}"
    classes = len(record.classes)
    if (labels.ndim != 1 or predictions.shape != labels.shape or probabilities.shape != (labels.size, classes)
            or labels.size == 0 or labels.min() < 0 or labels.max() >= classes):
        return None, (f"its predictions file does not match the record ({labels.size} labels, probabilities "
                      f"{probabilities.shape}, {classes} classes)")
    return bootstrap.Predictions(labels, predictions, probabilities), ""


def load_run(results_dir: Path, path: Path, record: RunRecord) -> RunData:
    """A run's metrics from its stored predictions, or from its record when they are unusable."""
    predictions, problem = _read_saved(results_dir, record)
    metrics = record.test_metrics
    if predictions is None:
        flags = degenerate.run_flags(record)
        return RunData(path, record, None, {
            "balanced_accuracy": number(metrics.balanced_accuracy),
            "macro_auroc": number(metrics.macro_auroc),
            "accuracy": number(metrics.accuracy), "f1_score": number(metrics.f1_score)},
            {name: number(value) for name, value in (metrics.per_class_auroc or {}).items()},
            {name: number(value) for name, value in (metrics.per_class_average_precision or {}).items()},
            "record", problem, flags)
    labels, guessed = predictions.labels, predictions.predictions
    found = {"balanced_accuracy": scores.balanced_accuracy(labels, guessed),
             "accuracy": float(np.mean(labels == guessed)), "f1_score": number(metrics.f1_score),
             "macro_auroc": None}
    auroc: dict[str, float | None] = dict.fromkeys(record.classes)
    precision: dict[str, float | None] = dict.fromkeys(record.classes)
    if np.isfinite(predictions.probabilities).all():
        per_class = scores.per_class_auroc(labels, predictions.probabilities)
        auroc = _by_class(record.classes, per_class)
        precision = _by_class(record.classes,
                              scores.per_class_average_precision(labels, predictions.probabilities))
        found["macro_auroc"] = number(scores.macro(per_class))
    else:
        problem = "its stored probabilities are not finite (NaN or infinite): no AUROC"
    flags = degenerate.run_flags(record, labels, guessed)
    return RunData(path, record, predictions, found, auroc, precision, "predictions", problem, flags)

