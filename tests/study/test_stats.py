"""The statistics behind the recommendation, checked against scikit-learn and hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from resomap.study import bootstrap, classic_stats, scores
from resomap.study.recommend import pareto_optimal


def _run(labels: np.ndarray, probabilities: np.ndarray) -> bootstrap.Predictions:
    return bootstrap.Predictions(labels, probabilities.argmax(axis=1), probabilities)


def _random_run(rng: np.random.Generator, labels: np.ndarray, classes: int = 4, skill: float = 1.0,
                decimals: int | None = None) -> bootstrap.Predictions:
    logits = rng.normal(0, 1, (labels.size, classes))
    logits[np.arange(labels.size), labels] += skill
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    if decimals is not None:  # coarse values: many ties, as float16 probabilities have
        probabilities = probabilities.round(decimals)
    return _run(labels, probabilities)


def test_balanced_accuracy_is_the_mean_per_class_recall():
    # class 0: 2 of 3 right, class 1: 1 of 1 right -> (2/3 + 1) / 2
    assert scores.balanced_accuracy([0, 0, 0, 1], [0, 0, 1, 1]) == pytest.approx(5 / 6)


@pytest.mark.parametrize("decimals", [None, 1])
def test_vectorised_scores_equal_scikit_learn_on_the_full_sample(decimals):
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 4, 150)
    run = _random_run(rng, labels, decimals=decimals)
    full = np.arange(labels.size)[None]
    found = scores.balanced_accuracy_scores(labels, run.predictions, run.probabilities, full)[0]
    assert found == pytest.approx(balanced_accuracy_score(labels, run.predictions))
    for cls in range(4):
        found = scores.class_auroc_scorer(cls)(labels, run.predictions, run.probabilities, full)[0]
        assert found == pytest.approx(roc_auc_score(labels == cls, run.probabilities[:, cls]))
    assert scores.macro_auroc_scores(labels, run.predictions, run.probabilities, full)[0] == pytest.approx(
        roc_auc_score(labels, run.probabilities / run.probabilities.sum(1, keepdims=True), multi_class="ovr")
        if decimals is None else scores.macro(scores.per_class_auroc(labels, run.probabilities)))
    # and on resamples: each row equals scikit-learn on that row's images
    index = bootstrap.stratified_indices(labels, 5, rng)
    rows = scores.macro_auroc_scores(labels, run.predictions, run.probabilities, index)
    for row, drawn in zip(rows, index):
        expected = scores.macro(scores.per_class_auroc(labels[drawn], run.probabilities[drawn]))
        assert row == pytest.approx(expected)


def test_resamples_keep_each_class_count():
    labels = np.repeat([0, 1, 2], [5, 30, 2])
    index = bootstrap.stratified_indices(labels, 50, np.random.default_rng(0))
    assert index.shape == (50, 37)
    assert all(np.bincount(labels[row], minlength=3).tolist() == [5, 30, 2] for row in index)


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
    result = classic_stats.mcnemar_exact(correct_a, correct_b)
    assert (result.only_a, result.only_b) == (only_a, only_b)
    assert result.pvalue == pytest.approx(expected)


def test_bootstrap_interval_matches_the_normal_approximation():
    # One class, 300 of 400 right: balanced accuracy = accuracy = 0.75, se = sqrt(.75 * .25 / 400).
    labels = np.zeros(400, dtype=int)
    probabilities = np.zeros((400, 2))
    probabilities[np.arange(400), np.where(np.arange(400) < 300, 0, 1)] = 1
    interval = bootstrap.bootstrap_metric([_run(labels, probabilities)], scores.balanced_accuracy_scores,
                                      n_resamples=4000)
    half_width = 1.96 * math.sqrt(0.75 * 0.25 / 400)
    assert interval.mean == pytest.approx(0.75)
    assert interval.low == pytest.approx(0.75 - half_width, abs=0.01)
    assert interval.high == pytest.approx(0.75 + half_width, abs=0.01)
    assert interval.method == "bootstrap (images)" and interval.n == 1


def test_seeds_widen_the_interval_when_they_disagree():
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 3, 300)
    good, bad = _random_run(rng, labels, 3, skill=3.0), _random_run(rng, labels, 3, skill=0.5)
    one = bootstrap.bootstrap_metric([good], scores.balanced_accuracy_scores)
    mixed = bootstrap.bootstrap_metric([good, bad], scores.balanced_accuracy_scores)
    assert mixed.method == "bootstrap (seeds, images)" and mixed.n == 2
    per_seed = [scores.balanced_accuracy(labels, r.predictions) for r in (good, bad)]
    assert mixed.mean == pytest.approx(np.mean(per_seed))
    # Resampling the two seeds lets a replicate be good+good or bad+bad: far wider than images alone.
    assert mixed.high - mixed.low > 3 * (one.high - one.low)


def test_t_interval_of_three_seeds():
    interval = classic_stats.t_interval([1.0, 2.0, 3.0])
    half_width = 4.302653 / math.sqrt(3)  # t(0.975, df=2) * std / sqrt(n), std = 1
    assert (interval.mean, interval.spread, interval.n) == (2.0, 1.0, 3)
    assert interval.low == pytest.approx(2 - half_width, rel=1e-5)
    assert interval.high == pytest.approx(2 + half_width, rel=1e-5)


def test_paired_difference_of_identical_runs_is_exactly_zero():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 120)
    run = _random_run(rng, labels, 3)
    for scorer in scores.SCORERS.values():
        result = bootstrap.paired_difference([run], [run], scorer)
        assert (result.difference, result.low, result.high, result.pvalue) == (0.0, 0.0, 0.0, 1.0)
        assert not result.significantly_below


def test_paired_difference_has_the_sign_of_a_minus_b_and_finds_a_worse_run():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 150)
    good, bad = _random_run(rng, labels, 3, skill=4.0), _random_run(rng, labels, 3, skill=0.3)
    worse = bootstrap.paired_difference([bad, bad], [good, good], scores.macro_auroc_scores)
    expected = (scores.macro(scores.per_class_auroc(labels, bad.probabilities))
                - scores.macro(scores.per_class_auroc(labels, good.probabilities)))
    assert worse.difference == pytest.approx(expected) and expected < 0
    assert worse.high < 0 and worse.significantly_below
    # every replicate below 0, never p = 0
    assert worse.pvalue == pytest.approx(2 / (bootstrap.N_RESAMPLES + 1))
    better = bootstrap.paired_difference([good], [bad], scores.macro_auroc_scores)
    assert better.low > 0 and not better.significantly_below


def test_non_inferiority_p_value_agrees_with_the_interval_end():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 3, 200)
    a, b = _random_run(rng, labels, 3, skill=1.6), _random_run(rng, labels, 3, skill=1.8)
    difference = bootstrap.paired_difference([a], [b], scores.balanced_accuracy_scores)
    alpha = (1 - bootstrap.CONFIDENCE) / 2
    for margin in np.linspace(0, 0.3, 61):
        shown = difference.noninferiority_pvalue(margin) < alpha
        assert shown == (difference.low > -margin), margin


def test_holm_adjusts_step_down():
    # Sorted 0.01, 0.02, 0.04 -> 3 * 0.01, max(0.03, 2 * 0.02), max(0.04, 1 * 0.04); original order kept.
    assert classic_stats.holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert classic_stats.holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])
    assert classic_stats.holm([]) == []


@pytest.mark.parametrize("k", [1.0, 2.0, 2.6])
def test_power_law_fit_recovers_the_exponent(k: float):
    rng = np.random.default_rng(2)
    resolutions = np.array([224, 256, 320, 384, 512])
    costs = 3e-6 * resolutions**k * np.exp(rng.normal(0, 0.02, resolutions.size))
    fit = classic_stats.power_law_fit(resolutions, costs)
    assert fit.k == pytest.approx(k, abs=0.1)
    assert fit.a == pytest.approx(3e-6, rel=0.5)
    assert fit.r2 > 0.98 and fit.n == 5


def test_power_law_fit_needs_two_resolutions():
    with pytest.raises(ValueError, match="two or more distinct"):
        classic_stats.power_law_fit([224, 224], [1.0, 2.0])


def test_pareto_set_keeps_only_undominated_points():
    # (accuracy up, latency down, memory down)
    points = {224: (0.80, 1.0, 10.0), 256: (0.80, 1.2, 11.0), 320: (0.85, 1.5, 12.0),
              384: (0.84, 2.0, 15.0), 512: (0.86, 3.0, 20.0)}
    assert pareto_optimal(points) == [224, 320, 512]


def _reference_hierarchical(runs_a: list[bootstrap.Predictions], runs_b: list[bootstrap.Predictions],
                            n_resamples: int, seed: int) -> np.ndarray:
    """The hierarchical bootstrap written plainly, one replicate at a time: draw seeds (pairs)
    with replacement, then draw each class's images with replacement, and score every drawn
    seed of A and of B on those same images (balanced accuracy: the mean of the class recalls)."""
    rng = np.random.default_rng(seed)
    labels = runs_a[0].labels
    classes = [np.flatnonzero(labels == c) for c in np.unique(labels)]

    def balanced(run: bootstrap.Predictions, drawn: list[np.ndarray]) -> float:
        return float(np.mean([np.mean(run.predictions[rows] == labels[rows]) for rows in drawn]))

    replicates = []
    for _ in range(n_resamples):
        drawn_seeds = rng.integers(0, len(runs_a), len(runs_a))
        drawn = [rng.choice(members, members.size, replace=True) for members in classes]
        replicates.append(np.mean([balanced(runs_a[s], drawn) - balanced(runs_b[s], drawn)
                                   for s in drawn_seeds]))
    return np.asarray(replicates)


def test_hierarchical_bootstrap_matches_a_plain_reference_implementation():
    rng = np.random.default_rng(11)
    labels = np.repeat(np.arange(3), [40, 25, 15])
    # Seeds that disagree (skills vary by seed), so the seed level carries real variance.
    runs_a = [_random_run(rng, labels, 3, skill=skill) for skill in (0.6, 1.4, 2.2, 1.0)]
    runs_b = [_random_run(rng, labels, 3, skill=skill) for skill in (1.2, 1.5, 1.1, 1.9)]
    ours = bootstrap.paired_difference(runs_a, runs_b, scores.balanced_accuracy_scores, n_resamples=2000,
                                       seed=3)
    reference = _reference_hierarchical(runs_a, runs_b, n_resamples=2000, seed=99)
    per_seed = [balanced_accuracy_score(labels, a.predictions)
                - balanced_accuracy_score(labels, b.predictions) for a, b in zip(runs_a, runs_b)]
    assert ours.difference == pytest.approx(np.mean(per_seed))
    np.testing.assert_allclose(ours.seed_differences, per_seed)
    # Two independent Monte Carlo runs of the same distribution: the spread agrees within a few
    # percent, the interval ends within its Monte Carlo error, and a two-sample test finds no difference.
    spread = reference.std(ddof=1)
    assert ours.replicates.std(ddof=1) == pytest.approx(spread, rel=0.08)
    low, high = np.quantile(reference, [0.025, 0.975])
    assert ours.low == pytest.approx(low, abs=0.2 * spread)
    assert ours.high == pytest.approx(high, abs=0.2 * spread)
    assert scipy_stats.ks_2samp(ours.replicates, reference).pvalue > 0.001
    # The seeds matter here: the images-only bootstrap of the same runs is clearly narrower.
    images_only = np.sqrt(ours.image_variance)
    assert images_only < 0.8 * spread
