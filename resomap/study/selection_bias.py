"""The winner's curse of a decision: how much the best resolution's estimate is inflated by
being the largest of several noisy ones, estimated by a bootstrap.

One concern of :func:`resomap.study.decide.decide`, kept apart as its own resampling loop.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from resomap.study.bootstrap import Predictions, seed_draws, stratified_indices
from resomap.study.decision_settings import Settings
from resomap.study.scores import Scorer


def selection_bias(runs: Mapping[int, Mapping[int, Predictions]], scorer: Scorer,
                   settings: Settings) -> tuple[float, float, int] | None:
    """Bootstrap estimate of the winner's curse: (optimism, share of resamples whose best is
    the observed best, the observed best).

    Each replicate draws the test images within class (the same for every resolution) and
    each resolution's seeds with replacement, picks the resolution with the highest replicate,
    and measures by how much that replicate exceeds the same resolution's full-sample estimate.
    The mean of this excess estimates how much the best's estimate is inflated by having been
    picked as the largest (Efron-style bootstrap of the selection's optimism).
    """
    usable = {res: seeds for res, seeds in runs.items() if seeds}
    if len(usable) < 2:
        return None
    first = next(iter(next(iter(usable.values())).values()))
    labels = np.asarray(first.labels)
    if any(not np.array_equal(p.labels, labels) for seeds in usable.values() for p in seeds.values()):
        return None
    rng = np.random.default_rng(settings.seed)
    index = stratified_indices(labels, settings.n_resamples, rng)
    full = np.arange(labels.size)[None]
    order = sorted(usable)
    estimates, replicates = [], []
    for res in order:
        predictions = [usable[res][seed] for seed in sorted(usable[res])]
        scores = np.stack([scorer(p.labels, p.predictions, p.probabilities, index) for p in predictions])
        points = [scorer(p.labels, p.predictions, p.probabilities, full)[0] for p in predictions]
        draws = seed_draws(len(predictions), settings.n_resamples, rng)
        replicates.append(np.nanmean(scores[draws.T, np.arange(settings.n_resamples)], axis=0))
        estimates.append(float(np.mean(points)))
    table = np.stack(replicates)  # (resolutions, B)
    finite = np.isfinite(table).all(axis=0)
    if not finite.any() or not np.isfinite(estimates).all():
        return None
    table = table[:, finite]
    observed = int(np.argmax(estimates))
    chosen = np.argmax(table, axis=0)
    excess = table[chosen, np.arange(table.shape[1])] - np.asarray(estimates)[chosen]
    return float(np.mean(excess)), float(np.mean(chosen == observed)), order[observed]
