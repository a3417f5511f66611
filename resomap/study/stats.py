"""The metrics of a run's test predictions, their confidence intervals and paired comparisons.

Metrics (ISIC's): balanced accuracy, the mean per-class recall, and one-vs-rest AUROC per class
and its macro mean, plus per-class average precision. Point estimates come from scikit-learn;
intervals and paired differences from a bootstrap over the test images (stratified by class:
every resample keeps each class's count, as the test split does) and, with several seeds, over
seeds as well: each replicate draws seeds with replacement, then images, and scores every drawn
seed on the same drawn images. Intervals are percentile intervals (the ``inverted_cdf``
quantiles of the replicates), so a point estimate may lie outside its interval; plots draw
intervals from their ends.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats
from sklearn.metrics import average_precision_score, balanced_accuracy_score, roc_auc_score

CONFIDENCE = 0.95
N_RESAMPLES = 2000
# The metrics a recommendation can be driven by (``report.metric``), with their names in text.
METRICS = {"balanced_accuracy": "balanced accuracy", "macro_auroc": "macro AUROC"}

# A scorer maps one run's arrays and a (B, n) matrix of resampled image indices to B scores.
Scorer = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


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
class McNemar:
    """Exact McNemar test: ``only_a``/``only_b`` count images only one of the two got right."""

    only_a: int
    only_b: int
    pvalue: float


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
    # the two parts of the power figures (resomap.study.decide).
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


@dataclass(frozen=True)
class PowerLaw:
    """``y = a * x**k`` fitted by least squares in log-log space."""

    a: float
    k: float
    r2: float
    n: int


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


# ------------------------------------------------------------------------------ the bootstrap


@dataclass(frozen=True)
class Predictions:
    """One run's stored test predictions: labels (n,), predicted class (n,), probabilities (n, C)."""

    labels: np.ndarray
    predictions: np.ndarray
    probabilities: np.ndarray


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


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error over the comparisons given).

    Written by hand: scipy has only Benjamini-Hochberg (``false_discovery_control``) and the
    project does not depend on statsmodels for this one loop.
    """
    order = np.argsort(pvalues, kind="stable")
    adjusted = np.empty(len(pvalues))
    running = 0.0
    for rank, position in enumerate(order):
        running = max(running, min(1.0, (len(pvalues) - rank) * float(pvalues[position])))
        adjusted[position] = running
    return adjusted.tolist()


# ------------------------------------------------------------------------ other tests and fits


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """Mean and Student-t interval of per-seed values (needs at least two); used for a metric
    read from the records when the runs' predictions are not there to bootstrap."""
    data = np.asarray(values, dtype=float)
    if data.size < 2:
        raise ValueError(f"A t interval needs at least two values, got {data.size}.")
    mean, std = float(data.mean()), float(data.std(ddof=1))
    if std == 0:
        return Interval(mean, mean, mean, 0.0, data.size, "t")
    low, high = stats.t.interval(confidence, data.size - 1, loc=mean, scale=std / math.sqrt(data.size))
    return Interval(mean, float(low), float(high), std, data.size, "t")


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> McNemar:
    """Exact (binomial) McNemar test on per-image correctness: a test of plain accuracy."""
    correct_a, correct_b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if correct_a.shape != correct_b.shape:
        raise ValueError(f"McNemar needs the same images: shapes {correct_a.shape} and {correct_b.shape}.")
    only_a = int(np.sum(correct_a & ~correct_b))
    only_b = int(np.sum(~correct_a & correct_b))
    if only_a + only_b == 0:
        return McNemar(0, 0, 1.0)
    return McNemar(only_a, only_b, float(stats.binomtest(only_a, only_a + only_b, 0.5).pvalue))


def power_law_fit(x: Sequence[float], y: Sequence[float]) -> PowerLaw:
    """Fit ``y = a * x**k`` on the positive pairs by least squares of ``log y`` on ``log x``."""
    pairs = [(float(u), float(v)) for u, v in zip(x, y)
             if u is not None and v is not None and u > 0 and v > 0]
    if len({u for u, _ in pairs}) < 2:
        raise ValueError("A power-law fit needs positive values at two or more distinct x.")
    log_x, log_y = np.log([u for u, _ in pairs]), np.log([v for _, v in pairs])
    fit = stats.linregress(log_x, log_y)
    r2 = float(fit.rvalue) ** 2 if np.ptp(log_y) > 0 else 1.0  # a constant y is fitted exactly
    return PowerLaw(float(math.exp(fit.intercept)), float(fit.slope), r2, len(pairs))
