"""Confidence intervals, paired tests and power-law fits for comparing resolutions.

Balanced accuracy is the study's headline metric (the test sets are imbalanced), so the
intervals and the paired test are computed on it, over the same test images.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
N_RESAMPLES = 2000


@dataclass(frozen=True)
class Interval:
    """A point estimate with its confidence interval and how the interval was obtained."""

    mean: float
    low: float
    high: float
    spread: float  # standard deviation over seeds, or the bootstrap standard error
    n: int
    method: str


@dataclass(frozen=True)
class McNemar:
    """Exact McNemar test: ``only_a``/``only_b`` count images only one of the two got right."""

    only_a: int
    only_b: int
    pvalue: float


@dataclass(frozen=True)
class PairedDifference:
    """Balanced accuracy of A minus B on the same images, with a paired bootstrap CI."""

    difference: float
    low: float
    high: float
    pvalue: float

    @property
    def significantly_below(self) -> bool:
        """A is significantly worse than B: the whole interval lies below zero."""
        return self.high < 0


@dataclass(frozen=True)
class PowerLaw:
    """``y = a * x**k`` fitted by least squares in log-log space."""

    a: float
    k: float
    r2: float
    n: int


def balanced_accuracy(labels: np.ndarray, predictions: np.ndarray, axis: int = -1) -> np.ndarray:
    """Mean per-class recall along ``axis``, over classes present in ``labels``.

    Works on stacks of resamples (scipy's vectorised bootstrap); written with numpy because
    it runs on thousands of resamples at once.
    """
    labels = np.moveaxis(np.asarray(labels), axis, -1)
    predictions = np.moveaxis(np.asarray(predictions), axis, -1)
    correct = labels == predictions
    recalls = []
    for cls in np.unique(labels):
        member = labels == cls
        support = member.sum(axis=-1)
        hits = (member & correct).sum(axis=-1)
        recalls.append(np.where(support > 0, hits / np.maximum(support, 1), np.nan))
    return np.nanmean(np.stack(recalls, axis=-1), axis=-1)


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """Mean and Student-t interval of per-seed values (needs at least two)."""
    data = np.asarray(values, dtype=float)
    if data.size < 2:
        raise ValueError(f"A t interval needs at least two values, got {data.size}.")
    mean, std = float(data.mean()), float(data.std(ddof=1))
    if std == 0:
        return Interval(mean, mean, mean, 0.0, data.size, "t")
    low, high = stats.t.interval(confidence, data.size - 1, loc=mean, scale=std / math.sqrt(data.size))
    return Interval(mean, float(low), float(high), std, data.size, "t")


def bootstrap_interval(labels: np.ndarray, predictions: np.ndarray, confidence: float = CONFIDENCE,
                       n_resamples: int = N_RESAMPLES, seed: int = 0) -> Interval:
    """Balanced accuracy of one run with a percentile bootstrap CI over its test images."""
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    point = float(balanced_accuracy(labels, predictions))
    result = stats.bootstrap((labels, predictions), balanced_accuracy, paired=True, vectorized=True,
                             n_resamples=n_resamples, confidence_level=confidence,
                             method="percentile", rng=np.random.default_rng(seed))
    low, high = result.confidence_interval
    return Interval(point, float(low), float(high), float(result.standard_error), 1, "bootstrap")


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> McNemar:
    """Exact (binomial) McNemar test on per-image correctness of two models on the same images."""
    correct_a, correct_b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if correct_a.shape != correct_b.shape:
        raise ValueError(f"McNemar needs the same images: shapes {correct_a.shape} and {correct_b.shape}.")
    only_a = int(np.sum(correct_a & ~correct_b))
    only_b = int(np.sum(~correct_a & correct_b))
    if only_a + only_b == 0:
        return McNemar(0, 0, 1.0)
    return McNemar(only_a, only_b, float(stats.binomtest(only_a, only_a + only_b, 0.5).pvalue))


def paired_bootstrap(labels: np.ndarray, predictions_a: Sequence[np.ndarray],
                     predictions_b: Sequence[np.ndarray], confidence: float = CONFIDENCE,
                     n_resamples: int = N_RESAMPLES, seed: int = 0) -> PairedDifference:
    """Balanced accuracy of A minus B, averaged over paired seeds, resampling test images.

    ``predictions_a[i]`` and ``predictions_b[i]`` are the same seed's predictions on the
    same images; images (not seeds) are resampled, so every resample keeps the pairing.
    """
    if len(predictions_a) != len(predictions_b) or not predictions_a:
        raise ValueError("paired_bootstrap needs one prediction array of B for each of A.")
    labels = np.asarray(labels)
    pairs = len(predictions_a)

    def difference(labels: np.ndarray, *predictions: np.ndarray, axis: int = -1) -> np.ndarray:
        per_seed = [balanced_accuracy(labels, predictions[i], axis)
                    - balanced_accuracy(labels, predictions[pairs + i], axis) for i in range(pairs)]
        return np.mean(per_seed, axis=0)

    data = (labels, *map(np.asarray, predictions_a), *map(np.asarray, predictions_b))
    point = float(difference(*data))
    result = stats.bootstrap(data, difference, paired=True, vectorized=True, n_resamples=n_resamples,
                             confidence_level=confidence, method="percentile",
                             rng=np.random.default_rng(seed))
    low, high = result.confidence_interval
    distribution = result.bootstrap_distribution
    pvalue = min(1.0, 2 * min(float(np.mean(distribution <= 0)), float(np.mean(distribution >= 0))))
    return PairedDifference(point, float(low), float(high), pvalue)


def power_law_fit(x: Sequence[float], y: Sequence[float]) -> PowerLaw:
    """Fit ``y = a * x**k`` on the positive pairs by least squares of ``log y`` on ``log x``."""
    pairs = [(float(u), float(v)) for u, v in zip(x, y)
             if u is not None and v is not None and u > 0 and v > 0]
    if len({u for u, _ in pairs}) < 2:
        raise ValueError("A power-law fit needs positive values at two or more distinct x.")
    log_x, log_y = np.log([u for u, _ in pairs]), np.log([v for _, v in pairs])
    k, log_a = np.polyfit(log_x, log_y, 1)
    residual = log_y - (k * log_x + log_a)
    total = np.sum((log_y - log_y.mean()) ** 2)
    r2 = 1.0 - float(np.sum(residual**2) / total) if total > 0 else 1.0
    return PowerLaw(float(math.exp(log_a)), float(k), r2, len(pairs))
