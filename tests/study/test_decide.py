"""decide(): the one decision path, on synthetic predictions with known effects."""

from __future__ import annotations

import numpy as np
import pytest

from resomap.errors import ResoMapError
from resomap.study import bootstrap, classic_stats
from resomap.study.decide import decide
from resomap.study.decision_settings import Settings, check_settings
from resomap.study.decision_text import ONE_RUN
from resomap.study.power import power

COUNTS = [30, 30, 30, 30]  # 120 test images, 4 classes
FAST = Settings(n_resamples=600)


def labels_of(counts: list[int] = COUNTS) -> np.ndarray:
    return np.repeat(np.arange(len(counts)), counts)


def run_with_recall(recall: float, seed: int, labels: np.ndarray | None = None,
                    jitter: float = 0.0) -> bootstrap.Predictions:
    """A run right on a share ``recall`` (+- seed jitter) of each class's images, chosen at random
    per seed: the expected balanced accuracy is ``recall``; seeds differ as trainings do."""
    labels = labels_of() if labels is None else labels
    rng = np.random.default_rng(seed + int(1000 * recall))
    classes = labels.max() + 1
    predicted = labels.copy()
    share = np.clip(recall + rng.normal(0, jitter), 0, 1)
    for cls in range(classes):
        members = np.flatnonzero(labels == cls)
        wrong = rng.choice(members, int(round((1 - share) * members.size)), replace=False)
        predicted[wrong] = (cls + 1) % classes
    probs = np.full((labels.size, classes), 0.1 / (classes - 1))
    probs[np.arange(labels.size), predicted] = 0.9
    return bootstrap.Predictions(labels, predicted, probs)


def study(recalls: dict[int, float], seeds: int,
          jitter: float = 0.02) -> dict[int, dict[int, bootstrap.Predictions]]:
    return {res: {seed: run_with_recall(recall, seed * 7 + res, jitter=jitter) for seed in range(seeds)}
            for res, recall in recalls.items()}


def test_a_clear_winner_is_decided_and_the_smaller_resolutions_shown_worse():
    decision = decide(study({64: 0.45, 96: 0.55, 128: 0.85}, seeds=4), FAST)
    assert decision.best == 128 and decision.recommended == 128 and decision.decided
    assert decision.verdicts[128].status == "best"
    for res in (64, 96):
        verdict = decision.verdicts[res]
        assert verdict.status == "inferior" and verdict.difference.high < -0.02
        assert verdict.difference.n_seeds == 4 and verdict.seeds == (0, 1, 2, 3)
    assert "shown worse" in decision.statement and "128 px" in decision.statement


def test_equal_resolutions_are_non_inferior_and_the_smallest_is_recommended():
    decision = decide(study({64: 0.76, 96: 0.78, 128: 0.80}, seeds=4, jitter=0.005),
                      Settings(margin=0.15, n_resamples=600))
    assert decision.best == 128 and decision.recommended == 64 and decision.decided
    assert {v.status for r, v in decision.verdicts.items() if r != decision.best} == {"non-inferior"}
    assert "smallest resolution shown non-inferior" in decision.statement


def test_one_seed_per_resolution_is_never_a_decision():
    decision = decide(study({64: 0.3, 128: 0.9}, seeds=1), FAST)
    assert decision.best == 128 and not decision.decided and decision.one_run
    assert decision.verdicts[64].status == "undecided"
    assert "one training run" in decision.verdicts[64].reason
    assert ONE_RUN in decision.statement


def test_a_tie_within_noise_is_undecided_with_power_figures():
    decision = decide(study({64: 0.70, 128: 0.73}, seeds=3, jitter=0.03),
                      Settings(margin=0.0, n_resamples=600))
    verdict = decision.verdicts[64]
    assert decision.best == 128 and verdict.status == "undecided" and not decision.decided
    assert verdict.difference.low < 0 < verdict.difference.high
    expected = power(verdict.difference, 0.0, decision.level)
    assert (verdict.seeds_for_power, verdict.images_for_power) == expected
    assert decision.statement.startswith("Not decided: 128 px has the highest")


def test_inferiority_and_non_inferiority_are_corrected_alike():
    """Both one-sided p-values go through Holm over the same comparisons, at the same level."""
    decision = decide(study({32: 0.6, 64: 0.62, 96: 0.64, 128: 0.66}, seeds=3), FAST)
    tested = [v for v in decision.verdicts.values() if v.difference is not None]
    assert len(tested) == 3
    above = classic_stats.holm([v.difference.one_sided_pvalue(-0.02, above=True) for v in tested])
    below = classic_stats.holm([v.difference.one_sided_pvalue(-0.02, above=False) for v in tested])
    for verdict, p_above, p_below in zip(tested, above, below):
        assert verdict.noninferiority_p_holm == pytest.approx(p_above)
        assert verdict.inferiority_p_holm == pytest.approx(p_below)
        expected = ("non-inferior" if p_above < decision.level else "inferior" if p_below < decision.level
                    else "undecided")
        assert verdict.status == expected


def test_looks_split_the_level():
    assert Settings(looks=4).alpha == pytest.approx(0.025 / 4)
    with pytest.raises(ResoMapError, match="report.looks"):
        check_settings(looks=0)


def _difference(per_seed: list[float], image_variance: float,
                n_images: int = 100) -> bootstrap.PairedDifference:
    estimate = float(np.mean(per_seed))
    return bootstrap.PairedDifference(estimate, estimate - 0.1, estimate + 0.1, 0.5, np.zeros(10), n_images,
                                  len(per_seed), np.asarray(per_seed), image_variance)


def test_power_needs_fewer_images_with_more_seeds_and_fewer_of_both_for_larger_effects():
    level = 0.025
    few = power(_difference([0.02, 0.04], 4e-4), margin=0.0, level=level)
    many = power(_difference([0.02, 0.04] * 4, 4e-4), margin=0.0, level=level)
    assert few[1] is not None and many[1] is not None and many[1] < few[1]
    small = power(_difference([0.01, 0.03, 0.02], 2e-5), margin=0.0, level=level)
    large = power(_difference([0.05, 0.07, 0.06], 2e-5), margin=0.0, level=level)
    assert large[0] <= small[0] and large[1] < small[1]
    # The seeds figure is where the normal approximation reaches 80 % power at the level.
    z = 1.959963984540054 + 0.8416212335729143
    per_seed, image_variance = np.var([0.01, 0.03, 0.02], ddof=1), 2e-5
    seeds = small[0]
    assert 0.02 / np.sqrt(per_seed / seeds + image_variance) >= z
    assert seeds == 2 or 0.02 / np.sqrt(per_seed / (seeds - 1) + image_variance) < z
    assert power(_difference([0.02], 4e-4), margin=0.0, level=level) == (None, None)
