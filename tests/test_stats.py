"""The statistics behind the recommendation, checked against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from resomap.study import stats
from resomap.study.study import pareto_optimal


def test_balanced_accuracy_is_the_mean_per_class_recall():
    # class 0: 2 of 3 right, class 1: 1 of 1 right -> (2/3 + 1) / 2
    assert stats.balanced_accuracy([0, 0, 0, 1], [0, 0, 1, 1]) == pytest.approx(5 / 6)


@pytest.mark.parametrize(("only_a", "only_b", "expected"), [
    (5, 0, 2 * 0.5**5),                        # all discordant pairs favour A
    (10, 2, 2 * (1 + 12 + 66) / 2**12),        # two-sided binomial tail of 2 in 12
    (4, 4, 1.0),
    (0, 0, 1.0),                               # no discordant pair: no evidence
])
def test_exact_mcnemar_matches_the_binomial_tail(only_a: int, only_b: int, expected: float):
    both = 7
    correct_a = np.array([True] * only_a + [False] * only_b + [True] * both + [False] * 3)
    correct_b = np.array([False] * only_a + [True] * only_b + [True] * both + [False] * 3)
    result = stats.mcnemar_exact(correct_a, correct_b)
    assert (result.only_a, result.only_b) == (only_a, only_b)
    assert result.pvalue == pytest.approx(expected)


def test_bootstrap_interval_matches_the_normal_approximation():
    # One class, 300 of 400 right: balanced accuracy = accuracy = 0.75, se = sqrt(.75 * .25 / 400).
    labels = np.zeros(400, dtype=int)
    predictions = np.where(np.arange(400) < 300, 0, 1)
    interval = stats.bootstrap_interval(labels, predictions, n_resamples=4000)
    half_width = 1.96 * math.sqrt(0.75 * 0.25 / 400)
    assert interval.mean == pytest.approx(0.75)
    assert interval.low == pytest.approx(0.75 - half_width, abs=0.01)
    assert interval.high == pytest.approx(0.75 + half_width, abs=0.01)
    assert interval.method == "bootstrap"


def test_t_interval_of_three_seeds():
    interval = stats.t_interval([1.0, 2.0, 3.0])
    half_width = 4.302653 / math.sqrt(3)  # t(0.975, df=2) * std / sqrt(n), std = 1
    assert (interval.mean, interval.spread, interval.n) == (2.0, 1.0, 3)
    assert interval.low == pytest.approx(2 - half_width, rel=1e-5)
    assert interval.high == pytest.approx(2 + half_width, rel=1e-5)


def test_paired_bootstrap_of_identical_predictions_is_exactly_zero():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 120)
    predictions = rng.integers(0, 3, 120)
    result = stats.paired_bootstrap(labels, [predictions], [predictions.copy()])
    assert (result.difference, result.low, result.high, result.pvalue) == (0.0, 0.0, 0.0, 1.0)
    assert not result.significantly_below


def test_paired_bootstrap_detects_a_clearly_worse_resolution():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 150)
    good = np.where(rng.random(150) < 0.9, labels, (labels + 1) % 3)
    bad = np.where(rng.random(150) < 0.4, labels, (labels + 1) % 3)
    worse = stats.paired_bootstrap(labels, [bad, bad], [good, good])
    assert worse.difference == pytest.approx(stats.balanced_accuracy(labels, bad)
                                              - stats.balanced_accuracy(labels, good))
    assert worse.high < 0 and worse.significantly_below and worse.pvalue < 0.01
    better = stats.paired_bootstrap(labels, [good], [bad])
    assert better.low > 0 and not better.significantly_below


@pytest.mark.parametrize("k", [1.0, 2.0, 2.6])
def test_power_law_fit_recovers_the_exponent(k: float):
    rng = np.random.default_rng(2)
    resolutions = np.array([224, 256, 320, 384, 512])
    costs = 3e-6 * resolutions**k * np.exp(rng.normal(0, 0.02, resolutions.size))
    fit = stats.power_law_fit(resolutions, costs)
    assert fit.k == pytest.approx(k, abs=0.1)
    assert fit.a == pytest.approx(3e-6, rel=0.5)
    assert fit.r2 > 0.98 and fit.n == 5


def test_power_law_fit_needs_two_resolutions():
    with pytest.raises(ValueError, match="two or more distinct"):
        stats.power_law_fit([224, 224], [1.0, 2.0])


def test_pareto_set_keeps_only_undominated_points():
    # (accuracy up, latency down, memory down)
    points = {224: (0.80, 1.0, 10.0), 256: (0.80, 1.2, 11.0), 320: (0.85, 1.5, 12.0),
              384: (0.84, 2.0, 15.0), 512: (0.86, 3.0, 20.0)}
    assert pareto_optimal(points) == [224, 320, 512]
