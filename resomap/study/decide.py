"""The one decision path: which resolution to use for one model, and whether the seeds back it.

``decide(runs, settings)`` takes, for one model (and one configuration), every resolution's
test predictions per seed, all on the same test images, and answers:

- the *best* resolution: the highest point estimate of the metric (mean over seeds);
- each other resolution against the best (this minus best): a hierarchical bootstrap that
  draws the shared seeds with replacement, then test images within class, and scores every
  drawn seed of both resolutions on the same drawn images
  (:func:`resomap.study.bootstrap.paired_difference`);
- a verdict per resolution. *non-inferior*: the one-sided test of ``difference <= -margin``
  rejects; *inferior*: the one-sided test of ``difference >= -margin`` rejects. Both p-values
  are Holm-corrected over the model's comparisons and compared with the same level,
  ``alpha / looks`` (``alpha`` = half of 1 - confidence; ``looks``: the looks of a sequential
  study, a Bonferroni split). A comparison resting on one training run per resolution is
  *undecided* whatever its p-values: with one seed the training variance is unknown;
- the *recommended* resolution: the smallest among the best and the non-inferior ones;
- ``decided``: every resolution below the recommended one is shown inferior, each on at least
  two seeds (so never with one seed per resolution);
- the power figures of an undecided comparison: seeds per resolution, or test images, for 80 %
  power at the corrected level (:func:`resomap.study.power.power`);
- the winner's curse: the bootstrap estimate of how much the best's estimate is inflated by
  being the largest of several noisy ones (:mod:`resomap.study.selection_bias`).

The report, the adaptive sweeper and the validation command all decide through here. This
module holds the rules; the settings (:mod:`~resomap.study.decision_settings`), the answer's
types (:mod:`~resomap.study.verdicts`) and its wording (:mod:`~resomap.study.decision_text`)
live beside it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace

import numpy as np

from resomap.study import decision_text
from resomap.study.bootstrap import Predictions, paired_difference
from resomap.study.classic_stats import holm
from resomap.study.decision_settings import Settings
from resomap.study.power import power
from resomap.study.scores import SCORERS, Scorer
from resomap.study.selection_bias import selection_bias
from resomap.study.verdicts import Decision, Verdict


def _usable(runs: Mapping[int, Mapping[int, Predictions]], metric: str
            ) -> dict[int, dict[int, Predictions]]:
    """Seeds whose predictions the metric can score (AUROC needs finite probabilities)."""
    found = {}
    for res, seeds in runs.items():
        kept = {seed: p for seed, p in seeds.items()
                if metric == "balanced_accuracy" or np.isfinite(p.probabilities).all()}
        found[int(res)] = dict(sorted(kept.items()))
    return found


def _estimate(predictions: Mapping[int, Predictions], scorer: Scorer) -> float:
    if not predictions:
        return math.nan
    values = []
    for p in predictions.values():
        full = np.arange(np.asarray(p.labels).size)[None]
        values.append(float(scorer(p.labels, p.predictions, p.probabilities, full)[0]))
    return float(np.nanmean(values)) if np.isfinite(values).any() else math.nan


def _pair(res: int, mine: Mapping[int, Predictions], best_res: int,
          theirs: Mapping[int, Predictions], settings: Settings) -> Verdict:
    shared = tuple(sorted(set(mine) & set(theirs)))
    if not shared:
        missing = "no stored predictions" if not mine or not theirs else "no seed in common"
        return Verdict(res, "not paired", reason=f"{missing} to pair with {best_res} px")
    if not np.array_equal(mine[shared[0]].labels, theirs[shared[0]].labels):
        return Verdict(res, "not paired", seeds=shared, reason=f"tested on other images than {best_res} px")
    difference = paired_difference([mine[s] for s in shared], [theirs[s] for s in shared],
                                   SCORERS[settings.metric], settings.confidence,
                                   settings.n_resamples, settings.seed)
    return Verdict(res, "undecided", difference, seeds=shared)


def decide(runs: Mapping[int, Mapping[int, Predictions]], settings: Settings | None = None) -> Decision:
    """Decide for one model: ``runs`` maps resolution -> seed -> test predictions (the same
    test images everywhere). See the module's docstring for what is computed."""
    settings = settings or Settings()
    label, margin = settings.metric_label, settings.margin
    scorer = SCORERS[settings.metric]
    usable = _usable(runs, settings.metric)
    estimates = {res: _estimate(seeds, scorer) for res, seeds in sorted(usable.items())}
    seeds = {res: tuple(found) for res, found in usable.items()}
    finite = {res: value for res, value in estimates.items() if math.isfinite(value)}
    if not finite:
        return Decision(None, None, False, {}, f"No {label} can be computed for any resolution (no usable "
                        "test predictions): no recommendation.", estimates, seeds, level=settings.alpha)
    best = max(finite, key=lambda res: (finite[res], -res))
    verdicts = {best: Verdict(best, "best", seeds=seeds[best])}
    for res in sorted(usable):
        if res != best:
            verdicts[res] = _pair(res, usable[res], best, usable[best], settings)
    tested = [res for res, v in verdicts.items() if v.difference is not None]
    level = settings.alpha
    two_sided = holm([verdicts[r].difference.pvalue for r in tested])
    above = holm([verdicts[r].difference.one_sided_pvalue(-margin, above=True) for r in tested])
    below = holm([verdicts[r].difference.one_sided_pvalue(-margin, above=False) for r in tested])
    power_level = level / max(1, len(tested))
    for res, p_two, p_above, p_below in zip(tested, two_sided, above, below):
        verdict = verdicts[res]
        difference = verdict.difference
        reason = ""
        if difference.n_seeds < 2:
            status = "undecided"
            reason = "one training run per resolution: the seed-to-seed variance is unknown"
        elif p_above < level:
            status = "non-inferior"
        elif p_below < level:
            status = "inferior"
        else:
            status = "undecided"
        seeds_needed = images_needed = None
        if status == "undecided":
            seeds_needed, images_needed = power(difference, margin, power_level)
        verdicts[res] = Verdict(res, status, difference, p_two, p_above, seeds_needed, images_needed, p_below,
                                verdict.seeds, reason)
    verdicts = dict(sorted(verdicts.items()))
    recommended = min([best] + [r for r, v in verdicts.items() if v.status == "non-inferior"])
    below_recommended = [v for r, v in verdicts.items() if r < recommended]
    one_run = max(map(len, seeds.values())) < 2
    decided = (not one_run and len(seeds[best]) >= 2
               and all(v.status == "inferior" for v in below_recommended))
    bias = selection_bias(usable, scorer, settings)
    optimism = share = None
    if bias is not None and bias[2] == best:
        optimism, share = bias[0], bias[1]
    decision = Decision(best, recommended, decided, verdicts, "", estimates, seeds, optimism, share, level)
    return _with_statement(decision, settings)


def _with_statement(decision: Decision, settings: Settings) -> Decision:
    return replace(decision, statement=decision_text.statement(decision, settings))

