"""The statistics in closed form beside the bootstrap: Holm's correction, the t interval,
McNemar's exact test and the power-law fit of cost against resolution."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from resomap.study.bootstrap import CONFIDENCE, Interval


@dataclass(frozen=True)
class McNemar:
    """Exact McNemar test: ``only_a``/``only_b`` count images only one of the two got right."""

    only_a: int
    only_b: int
    pvalue: float


@dataclass(frozen=True)
class PowerLaw:
    """``y = a * x**k`` fitted by least squares in log-log space."""

    a: float
    k: float
    r2: float
    n: int


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
