"""Bootstrap intervals and paired differences of a metric over test images and seeds.

Intervals and paired differences come from a bootstrap over the test images (stratified by
class: every resample keeps each class's count, as the test split does) and, with several seeds,
over seeds as well: each replicate draws seeds with replacement, then images, and scores every
drawn seed on the same drawn images. Intervals are percentile intervals (the ``inverted_cdf``
quantiles of the replicates), so a point estimate may lie outside its interval; plots draw
intervals from their ends. The metrics it resamples are :mod:`resomap.study.scores`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from resomap.study.scores import Scorer

CONFIDENCE = 0.95
N_RESAMPLES = 2000


@dataclass(frozen=True)
class Predictions:
    """One run's stored test predictions: labels (n,), predicted class (n,), probabilities (n, C)."""

    labels: np.ndarray
    predictions: np.ndarray
    probabilities: np.ndarray


@dataclass(frozen=True)
class Interval:
    """A point estimate with its confidence interval and how the interval was obtained."""

    mean: float  # the point estimate: the metric on all test images, averaged over seeds
    low: float
    high: float
    spread: float  # bootstrap standard error, or the standard deviation over seeds (t)
    n: int  # seeds
    method: str


@dataclass(frozen=True)
class PairedDifference:
    """Metric of A minus metric of B on the same test images (and seeds), with its bootstrap.

    ``pvalue``: two-sided bootstrap p-value for no difference, ``2 (k + 1) / (B + 1)`` with k
    the replicates on the smaller side of 0. ``replicates`` are kept for non-inferiority
    p-values at any margin.
    """

    difference: float
    low: float
    high: float
    pvalue: float
    replicates: np.ndarray
    n_images: int
    n_seeds: int
    # Per-seed differences on all test images (training variance), and the variance of the
    # seed-mean difference over resampled images with the seeds held fixed (test-set variance):
    # the two parts of the power figures (resomap.study.power).
    seed_differences: np.ndarray = field(default_factory=lambda: np.zeros(0))
    image_variance: float = math.nan

    @property
    def width(self) -> float:
        return self.high - self.low

    @property
    def significantly_below(self) -> bool:
        """A is worse than B: the whole interval lies below zero."""
        return self.high < 0

    def one_sided_pvalue(self, threshold: float, above: bool) -> float:
        """Bootstrap p-value ``(k + 1) / (B + 1)`` of ``H0: difference <= threshold`` (``above``:
        the claim is that the difference lies above ``threshold``) or of ``H0: difference >=
        threshold`` (not ``above``); k counts the replicates on the null's side."""
        if not self.replicates.size:
            return 1.0
        against = self.replicates <= threshold if above else self.replicates >= threshold
        return min(1.0, (int(np.sum(against)) + 1) / (self.replicates.size + 1))

    def noninferiority_pvalue(self, margin: float) -> float:
        """One-sided p-value of ``H0: difference <= -margin``: the share of replicates at or below
        ``-margin``. It is below ``(1 - CONFIDENCE) / 2`` exactly when the interval's lower end
        lies above ``-margin``."""
        return float(np.mean(self.replicates <= -margin))


# ------------------------------------------------------------------------------ the bootstrap


def stratified_indices(labels: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(B, n) image indices: each row draws, with replacement, as many images of each class as
    the test split has (the split's class counts are fixed by design)."""
    columns = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        columns.append(members[rng.integers(0, members.size, (n_resamples, members.size))])
    return np.concatenate(columns, axis=1)


def _percentiles(replicates: np.ndarray, confidence: float) -> tuple[float, float]:
    finite = replicates[np.isfinite(replicates)]
    if not finite.size:
        return math.nan, math.nan
    tail = (1 - confidence) / 2
    low, high = np.quantile(finite, [tail, 1 - tail], method="inverted_cdf")
    return float(low), float(high)


def seed_draws(n_seeds: int, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(B, S) seed indices drawn with replacement; the one seed every time when there is one."""
    if n_seeds == 1:
        return np.zeros((n_resamples, 1), dtype=int)
    return rng.integers(0, n_seeds, (n_resamples, n_seeds))


def _check_same_images(runs: Sequence[Predictions]) -> np.ndarray:
    if not runs:
        raise ValueError("A bootstrap needs the predictions of at least one run.")
    labels = np.asarray(runs[0].labels)
    for run in runs[1:]:
        if not np.array_equal(run.labels, labels):
            raise ValueError("Seeds and resolutions compared together must be tested on the same images.")
    return labels


def bootstrap_metric(runs: Sequence[Predictions], scorer: Scorer, confidence: float = CONFIDENCE,
                     n_resamples: int = N_RESAMPLES, seed: int = 0) -> Interval:
    """The metric averaged over the seeds ``runs`` with a bootstrap interval over seeds and images."""
    labels = _check_same_images(runs)
    rng = np.random.default_rng(seed)
    full = np.arange(labels.size)[None]
    point = float(np.mean([scorer(run.labels, run.predictions, run.probabilities, full)[0] for run in runs]))
    index = stratified_indices(labels, n_resamples, rng)
    scores = np.stack([scorer(run.labels, run.predictions, run.probabilities, index) for run in runs])
    draws = seed_draws(len(runs), n_resamples, rng)
    replicates = np.nanmean(scores[draws.T, np.arange(n_resamples)], axis=0)
    low, high = _percentiles(replicates, confidence)
    method = "bootstrap (images)" if len(runs) == 1 else "bootstrap (seeds, images)"
    return Interval(point, low, high, float(np.nanstd(replicates, ddof=1)), len(runs), method)


def paired_difference(runs_a: Sequence[Predictions], runs_b: Sequence[Predictions], scorer: Scorer,
                      confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
                      seed: int = 0) -> PairedDifference:
    """Metric of A minus metric of B, averaged over paired seeds, on the same resampled images.

    ``runs_a[i]`` and ``runs_b[i]`` are the same seed at two resolutions. Each replicate draws
    seeds (pairs) with replacement, then images, so the pairing is kept throughout.
    """
    if len(runs_a) != len(runs_b) or not runs_a:
        raise ValueError("paired_difference needs one run of B for each run of A (the same seeds).")
    labels = _check_same_images([*runs_a, *runs_b])
    rng = np.random.default_rng(seed)
    full = np.arange(labels.size)[None]

    def scored(runs: Sequence[Predictions], index: np.ndarray) -> np.ndarray:
        return np.stack([scorer(run.labels, run.predictions, run.probabilities, index) for run in runs])

    per_seed = (scored(runs_a, full) - scored(runs_b, full))[:, 0]
    point = float(np.mean(per_seed))
    index = stratified_indices(labels, n_resamples, rng)
    differences = scored(runs_a, index) - scored(runs_b, index)
    image_only = np.nanmean(differences, axis=0)
    image_variance = float(np.nanvar(image_only, ddof=1)) if np.isfinite(image_only).sum() > 1 else math.nan
    draws = seed_draws(len(runs_a), n_resamples, rng)
    replicates = np.nanmean(differences[draws.T, np.arange(n_resamples)], axis=0)
    low, high = _percentiles(replicates, confidence)
    finite = replicates[np.isfinite(replicates)]
    pvalue = 1.0
    if finite.size:  # (k + 1) / (B + 1): a bootstrap p-value is never exactly 0
        tail = min(int(np.sum(finite <= 0)), int(np.sum(finite >= 0)))
        pvalue = min(1.0, 2 * (tail + 1) / (finite.size + 1))
    return PairedDifference(point, low, high, pvalue, finite, int(labels.size), len(runs_a), per_seed,
                            image_variance)
