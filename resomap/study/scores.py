"""The metrics of a run's test predictions: point estimates and vectorised scores of resamples.

Metrics (ISIC's): balanced accuracy, the mean per-class recall, and one-vs-rest AUROC per class
and its macro mean, plus per-class average precision. Point estimates come from scikit-learn;
the scores of many resamples at once are written with numpy (see below). Kept apart from the
bootstrap (:mod:`resomap.study.bootstrap`), which only needs a :data:`Scorer`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats
from sklearn.metrics import average_precision_score, balanced_accuracy_score, roc_auc_score

# The metrics a recommendation can be driven by (``report.metric``), with their names in text.
METRICS = {"balanced_accuracy": "balanced accuracy", "macro_auroc": "macro AUROC"}

# A scorer maps one run's arrays and a (B, n) matrix of resampled image indices to B scores.
Scorer = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


# ----------------------------------------------------------------------------- point estimates


def balanced_accuracy(labels: Sequence[int], predictions: Sequence[int]) -> float:
    """ISIC's balanced accuracy: the mean recall over the classes present in ``labels``."""
    return float(balanced_accuracy_score(np.asarray(labels), np.asarray(predictions)))


def per_class_auroc(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """One-vs-rest ROC AUC of each class (NaN for a class absent from ``labels`` or present alone)."""
    labels, probabilities = np.asarray(labels), np.asarray(probabilities, dtype=np.float64)
    values = np.full(probabilities.shape[1], np.nan)
    for cls in range(probabilities.shape[1]):
        member = labels == cls
        if 0 < member.sum() < member.size:
            values[cls] = roc_auc_score(member, probabilities[:, cls])
    return values


def per_class_average_precision(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """One-vs-rest average precision of each class (NaN for a class absent from ``labels``)."""
    labels, probabilities = np.asarray(labels), np.asarray(probabilities, dtype=np.float64)
    values = np.full(probabilities.shape[1], np.nan)
    for cls in range(probabilities.shape[1]):
        member = labels == cls
        if member.any():
            values[cls] = average_precision_score(member, probabilities[:, cls])
    return values


def macro(values: np.ndarray) -> float:
    """Mean over the classes that have a value; NaN when none has."""
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    return float(finite.mean()) if finite.size else math.nan


# ------------------------------------------------------------- vectorised scores of resamples
# Written with numpy because a comparison scores thousands of resamples at once; scikit-learn
# scores one sample per call (2000 resamples x 7 classes x 2 runs = 28000 calls per comparison).
# tests/study/test_stats.py checks both against scikit-learn on the full sample.


def balanced_accuracy_scores(labels: np.ndarray, predictions: np.ndarray, probabilities: np.ndarray,
                             index: np.ndarray) -> np.ndarray:
    """Balanced accuracy of each row of resampled image indices ``index`` (B, n)."""
    drawn, correct = labels[index], (predictions == labels)[index]
    recalls = []
    for cls in np.unique(labels):
        member = drawn == cls
        support = member.sum(axis=-1)
        hits = (member & correct).sum(axis=-1)
        recalls.append(np.where(support > 0, hits / np.maximum(support, 1), np.nan))
    return np.nanmean(np.stack(recalls, axis=-1), axis=-1)


def _auroc_rows(member: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUROC of each row (ties count one half), NaN for rows with one kind only."""
    ranks = stats.rankdata(scores, axis=-1)
    positives = member.sum(axis=-1)
    negatives = member.shape[-1] - positives
    u = (ranks * member).sum(axis=-1) - positives * (positives + 1) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((positives > 0) & (negatives > 0), u / (positives * negatives), np.nan)


def class_auroc_scorer(cls: int) -> Scorer:
    """A scorer of one class's one-vs-rest AUROC."""
    def score(labels: np.ndarray, predictions: np.ndarray, probabilities: np.ndarray,
              index: np.ndarray) -> np.ndarray:
        return _auroc_rows(labels[index] == cls, probabilities[:, cls][index])
    return score


def macro_auroc_scores(labels: np.ndarray, predictions: np.ndarray, probabilities: np.ndarray,
                       index: np.ndarray) -> np.ndarray:
    """Macro AUROC (mean one-vs-rest AUROC over the classes present) of each resample."""
    per_class = [class_auroc_scorer(cls)(labels, predictions, probabilities, index)
                 for cls in np.unique(labels)]
    return np.nanmean(np.stack(per_class, axis=-1), axis=-1)


SCORERS: dict[str, Scorer] = {"balanced_accuracy": balanced_accuracy_scores,
                              "macro_auroc": macro_auroc_scores}
