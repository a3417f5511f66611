"""Runs and bootstrap distributions that must not be read at face value.

A *degenerate run* learned something other than the task, or stopped learning at once:

- a class with at least :data:`MIN_CLASS_IMAGES` test images that the run never predicts, or
  predicts but never correctly (its recall is 0: balanced accuracy then rests on the others);
- plain accuracy below the majority-class rate (always answering the largest class would do
  better);
- the best epoch is the first epoch of the schedule (the checkpoint tested is from before
  training settled; later epochs only got worse on the validation split).

A *degenerate bootstrap distribution* has a percentile interval that shows the method's
limit, not certainty: zero width, a metric at its bound (AUROC = 1, a recall of 0 or 1), or a
class with fewer than :data:`FEW_POSITIVES` test images behind a per-class figure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

MIN_CLASS_IMAGES = 5
FEW_POSITIVES = 10


def confusion_of(labels: np.ndarray, predictions: np.ndarray, classes: int) -> np.ndarray:
    """(classes, classes) counts: rows true class, columns predicted class."""
    matrix = np.zeros((classes, classes), dtype=int)
    np.add.at(matrix, (np.asarray(labels), np.asarray(predictions)), 1)
    return matrix


def confusion_flags(matrix: Sequence[Sequence[int]], classes: Sequence[str]) -> list[str]:
    """Flags read from a confusion matrix: classes never (rightly) predicted, accuracy below the
    majority-class rate."""
    counts = np.asarray(matrix, dtype=int)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.sum() == 0:
        return []
    names = list(classes) + [str(i) for i in range(len(classes), counts.shape[0])]
    support, predicted, right = counts.sum(axis=1), counts.sum(axis=0), np.diag(counts)
    flags = []
    for cls in range(counts.shape[0]):
        if support[cls] < MIN_CLASS_IMAGES or right[cls] > 0:
            continue
        if predicted[cls] == 0:
            flags.append(f"never predicts {names[cls]} ({support[cls]} test images)")
        else:
            flags.append(f"never right on {names[cls]} ({support[cls]} test images, predicted "
                         f"{predicted[cls]} times)")
    total = counts.sum()
    accuracy, majority = right.sum() / total, support.max() / total
    if accuracy < majority:
        flags.append(f"plain accuracy {accuracy:.3f} below the majority-class rate {majority:.3f} "
                     f"(always answering {names[int(support.argmax())]})")
    return flags


def epoch_flags(best_epoch: int | None, history: Sequence[dict[str, Any]], epochs_run: int) -> list[str]:
    """The best epoch is the schedule's first (and the run trained more than one epoch)."""
    epochs = [row.get("epoch") for row in history if isinstance(row.get("epoch"), int)]
    first = min(epochs) if epochs else 0
    ran = max(epochs_run, len(set(epochs)))
    if best_epoch is not None and best_epoch == first and ran > 1:
        return [f"best epoch is the first of {ran}: the checkpoint tested is from before training settled"]
    return []


def run_flags(record: Any, labels: np.ndarray | None = None,
              predictions: np.ndarray | None = None) -> list[str]:
    """Every flag of one run record: from its stored predictions when given, else from its
    recorded confusion matrix; and from its history's best epoch."""
    if labels is not None and predictions is not None:
        matrix = confusion_of(labels, predictions, len(record.classes))
    else:
        matrix = record.test_metrics.confusion_matrix or []
    return confusion_flags(matrix, record.classes) + epoch_flags(record.best_epoch, record.history,
                                                                 record.epochs_run)


# ------------------------------------------------------------------- bootstrap distributions


def interval_flag(low: float, high: float, estimate: float | None = None, bounded: bool = True,
                  positives: int | None = None) -> str:
    """Why an interval must not be read as certainty ('' when nothing is wrong): zero width,
    an estimate at the metric's bound 0 or 1 (``bounded``), fewer than :data:`FEW_POSITIVES`
    test images of the class behind it."""
    reasons = []
    if math.isfinite(low) and math.isfinite(high) and high - low <= 1e-12:
        reasons.append("zero width")
    if bounded and estimate is not None and math.isfinite(estimate) and (estimate <= 0 or estimate >= 1):
        reasons.append(f"at the bound {estimate:g}")
    if positives is not None and positives < FEW_POSITIVES:
        reasons.append(f"{positives} test images of the class")
    return ", ".join(reasons)
