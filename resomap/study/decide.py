"""The one decision path: which resolution to use for one model, and whether the seeds back it.

``decide(runs, settings)`` takes, for one model (and one configuration), every resolution's
test predictions per seed, all on the same test images, and answers:

- the *best* resolution: the highest point estimate of the metric (mean over seeds);
- each other resolution against the best (this minus best): a hierarchical bootstrap that
  draws the shared seeds with replacement, then test images within class, and scores every
  drawn seed of both resolutions on the same drawn images (:func:`stats.paired_difference`);
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
  power at the corrected level (:func:`power`);
- the winner's curse: the bootstrap estimate of how much the best's estimate is inflated by
  being the largest of several noisy ones (:func:`selection_bias`).

The report, the adaptive sweeper and the validation command all decide through here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from scipy import stats as scipy_stats

from resomap.errors import ResoMapError
from resomap.study import stats

POWER = 0.8
STATUSES = ("best", "non-inferior", "inferior", "undecided", "not paired")
ONE_RUN = "highest point estimate, one training run: not a decision"
POWER_ASSUMPTIONS = (
    "Power figures: normal approximation, the difference staying at its estimate, its variance "
    "the seed-to-seed variance of the per-seed differences over the seeds plus the test-image "
    "variance scaled by (test images now / test images), a one-sided test at alpha / (looks x "
    "comparisons) (Holm's strictest step) with 80 % power.")


@dataclass(frozen=True)
class Settings:
    """How the study decides (``report.*`` in conf/report/default.yaml)."""

    metric: str = "balanced_accuracy"
    margin: float = 0.02
    confidence: float = stats.CONFIDENCE
    n_resamples: int = stats.N_RESAMPLES
    seed: int = 0
    # Looks of a sequential (adaptive) study: every test's alpha is split evenly over them.
    looks: int = 1

    @property
    def metric_label(self) -> str:
        return stats.METRICS[self.metric]

    @property
    def alpha(self) -> float:
        """One-sided error rate of each (non-)inferiority test: half of 1 - confidence, split
        evenly over the looks."""
        return (1 - self.confidence) / 2 / self.looks


def check_settings(metric: Any = "balanced_accuracy", margin: Any = 0.02, confidence: Any = stats.CONFIDENCE,
                   n_resamples: Any = stats.N_RESAMPLES, seed: Any = 0, looks: Any = 1) -> Settings:
    """Validated :class:`Settings`; a :class:`ResoMapError` names the bad key and what is valid."""
    if metric not in stats.METRICS:
        raise ResoMapError(f"report.metric={metric!r} is not valid: choose one of {', '.join(stats.METRICS)} "
                           "(balanced_accuracy: the mean per-class recall, ISIC's headline metric; "
                           "macro_auroc: the mean one-vs-rest AUROC).")
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0 <= margin < 1:
        raise ResoMapError(f"report.margin={margin!r} is not valid: the non-inferiority margin is a number "
                           "in [0, 1) in units of report.metric, e.g. report.margin=0.02.")
    if isinstance(confidence, bool) or not isinstance(confidence, float) or not 0.5 <= confidence < 1:
        raise ResoMapError(f"report.confidence={confidence!r} is not valid: a level in [0.5, 1), e.g. 0.95.")
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, int) or n_resamples < 100:
        raise ResoMapError(f"report.n_resamples={n_resamples!r} is not valid: an integer of at least 100 "
                           "(2000 by default).")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ResoMapError(f"report.seed={seed!r} is not valid: an integer (the bootstrap's random seed).")
    if isinstance(looks, bool) or not isinstance(looks, int) or looks < 1:
        raise ResoMapError(f"report.looks={looks!r} is not valid: a positive integer, the number of looks "
                           "of a sequential study over which every test's alpha is split (1: one look).")
    return Settings(str(metric), float(margin), float(confidence), int(n_resamples), int(seed), int(looks))


@dataclass(frozen=True)
class Verdict:
    """One resolution against the best of the same model (``difference``: this minus best)."""

    resolution: int
    status: str
    difference: stats.PairedDifference | None = None
    pvalue_holm: float | None = None  # two-sided, difference = 0
    noninferiority_p_holm: float | None = None  # H0: difference <= -margin
    seeds_for_power: int | None = None  # seeds per resolution (test images as now)
    images_for_power: int | None = None  # test images (seeds as now)
    inferiority_p_holm: float | None = None  # H0: difference >= -margin
    seeds: tuple[int, ...] = ()  # the seeds paired with the best
    reason: str = ""


@dataclass(frozen=True)
class Decision:
    """The answer for one model: see the module's docstring."""

    best: int | None
    recommended: int | None
    decided: bool
    verdicts: dict[int, Verdict]
    statement: str
    estimates: dict[int, float] = field(default_factory=dict)
    seeds: dict[int, tuple[int, ...]] = field(default_factory=dict)
    optimism: float | None = None  # bootstrap estimate of the best's winner's-curse bias
    best_share: float | None = None  # share of resamples in which the best stays best
    level: float = math.nan  # the corrected one-sided level every test is compared with

    @property
    def one_run(self) -> bool:
        """Every resolution has a single training run: no decision can be stated."""
        return bool(self.seeds) and max(map(len, self.seeds.values())) < 2


# --------------------------------------------------------------------------------- power


def power(difference: stats.PairedDifference, margin: float, level: float,
          target: float = POWER) -> tuple[int | None, int | None]:
    """(seeds per resolution, test images) at which a one-sided test at ``level`` of the
    side the estimate points to (non-inferior above ``-margin``, inferior below) has ``target``
    power; see :data:`POWER_ASSUMPTIONS`. None where the figure is unknown (one seed: no
    seed variance) or out of reach by that route alone (e.g. the image variance alone already
    exceeds what the effect allows, so no number of seeds is enough)."""
    distance = abs(difference.difference + margin)
    image_variance = difference.image_variance
    if distance == 0 or not math.isfinite(image_variance) or difference.n_seeds < 2:
        return None, None
    z = scipy_stats.norm.ppf(1 - level) + scipy_stats.norm.ppf(target)
    allowed = (distance / z) ** 2  # the variance of the estimate at which the power is reached
    per_seed = float(np.var(difference.seed_differences, ddof=1))
    seed_variance = per_seed / difference.n_seeds
    seeds = images = None
    if allowed > image_variance:
        seeds = max(2, math.ceil(per_seed / (allowed - image_variance)))
    if allowed > seed_variance:
        images = math.ceil(difference.n_images * image_variance / (allowed - seed_variance))
        images = max(images, 1)
    return seeds, images


# ------------------------------------------------------------------------- selection bias


def selection_bias(runs: Mapping[int, Mapping[int, stats.Predictions]], scorer: stats.Scorer,
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
    index = stats.stratified_indices(labels, settings.n_resamples, rng)
    full = np.arange(labels.size)[None]
    order = sorted(usable)
    estimates, replicates = [], []
    for res in order:
        predictions = [usable[res][seed] for seed in sorted(usable[res])]
        scores = np.stack([scorer(p.labels, p.predictions, p.probabilities, index) for p in predictions])
        points = [scorer(p.labels, p.predictions, p.probabilities, full)[0] for p in predictions]
        draws = stats.seed_draws(len(predictions), settings.n_resamples, rng)
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


# ------------------------------------------------------------------------------ decide


def _usable(runs: Mapping[int, Mapping[int, stats.Predictions]], metric: str
            ) -> dict[int, dict[int, stats.Predictions]]:
    """Seeds whose predictions the metric can score (AUROC needs finite probabilities)."""
    found = {}
    for res, seeds in runs.items():
        kept = {seed: p for seed, p in seeds.items()
                if metric == "balanced_accuracy" or np.isfinite(p.probabilities).all()}
        found[int(res)] = dict(sorted(kept.items()))
    return found


def _estimate(predictions: Mapping[int, stats.Predictions], scorer: stats.Scorer) -> float:
    if not predictions:
        return math.nan
    values = []
    for p in predictions.values():
        full = np.arange(np.asarray(p.labels).size)[None]
        values.append(float(scorer(p.labels, p.predictions, p.probabilities, full)[0]))
    return float(np.nanmean(values)) if np.isfinite(values).any() else math.nan


def _pair(res: int, mine: Mapping[int, stats.Predictions], best_res: int,
          theirs: Mapping[int, stats.Predictions], settings: Settings) -> Verdict:
    shared = tuple(sorted(set(mine) & set(theirs)))
    if not shared:
        missing = "no stored predictions" if not mine or not theirs else "no seed in common"
        return Verdict(res, "not paired", reason=f"{missing} to pair with {best_res} px")
    if not np.array_equal(mine[shared[0]].labels, theirs[shared[0]].labels):
        return Verdict(res, "not paired", seeds=shared, reason=f"tested on other images than {best_res} px")
    difference = stats.paired_difference([mine[s] for s in shared], [theirs[s] for s in shared],
                                         stats.SCORERS[settings.metric], settings.confidence,
                                         settings.n_resamples, settings.seed)
    return Verdict(res, "undecided", difference, seeds=shared)


def decide(runs: Mapping[int, Mapping[int, stats.Predictions]], settings: Settings | None = None) -> Decision:
    """Decide for one model: ``runs`` maps resolution -> seed -> test predictions (the same
    test images everywhere). See the module's docstring for what is computed."""
    settings = settings or Settings()
    label, margin = settings.metric_label, settings.margin
    scorer = stats.SCORERS[settings.metric]
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
    two_sided = stats.holm([verdicts[r].difference.pvalue for r in tested])
    above = stats.holm([verdicts[r].difference.one_sided_pvalue(-margin, above=True) for r in tested])
    below = stats.holm([verdicts[r].difference.one_sided_pvalue(-margin, above=False) for r in tested])
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
    return replace(decision, statement=statement(decision, settings))


def _list(resolutions: list[int]) -> str:
    return ", ".join(f"{res} px" for res in resolutions)


def _decided_text(decision: Decision, settings: Settings, inferior: list[int]) -> str:
    """Why the recommended resolution is a decision."""
    label, margin = settings.metric_label, f"{settings.margin:g}"
    best, chosen = decision.best, decision.recommended
    value, level = decision.estimates[best], f"{decision.level:.3g}"
    if chosen < best:
        return (f"{chosen} px is the smallest resolution shown non-inferior to the best ({best} px, "
                f"{label} {value:.3f}) within a margin of {margin} (Holm-corrected one-sided test at "
                f"{level}).")
    if chosen == min(decision.estimates):
        return f"{chosen} px, the smallest resolution run, has the highest {label} ({value:.3f})."
    return (f"{chosen} px has the highest {label} ({value:.3f}) and every smaller resolution is "
            f"shown worse than it by more than the margin {margin} (Holm-corrected one-sided test at "
            f"{level}): {_list([r for r in inferior if r < chosen])}.")


def _power_text(verdicts: dict[int, Verdict], blocking: list[int], single: list[int],
                settings: Settings) -> str:
    """What would settle the smallest open comparison with 80 % power, if anything alone would."""
    planned = [verdicts[r] for r in blocking if verdicts[r].seeds_for_power or verdicts[r].images_for_power]
    if planned:
        first = min(planned, key=lambda v: v.resolution)
        parts = []
        if first.seeds_for_power:
            parts.append(f"{first.seeds_for_power} seeds per resolution")
        if first.images_for_power:
            parts.append(f"{first.images_for_power} test images")
        outcome = ("non-inferior" if first.difference.difference > -settings.margin
                   else "worse by more than the margin")
        return (f" With the difference at its estimate ({first.difference.difference:+.3f}), about "
                f"{' or '.join(parts)} would show {first.resolution} px {outcome} with 80 % power.")
    if [r for r in blocking if r not in single]:
        return (" At the estimated differences neither more seeds alone nor more test images alone "
                "would reach 80 % power: both are needed, or a larger margin.")
    return ""


def _undecided_text(decision: Decision, settings: Settings) -> str:
    """Why the answer is not a decision, and what is still open below it."""
    label, verdicts = settings.metric_label, decision.verdicts
    best, chosen = decision.best, decision.recommended
    text = f"Not decided: {best} px has the highest {label} ({decision.estimates[best]:.3f})"
    if chosen < best:
        text += (f"; {chosen} px is the smallest shown non-inferior to it within the margin "
                 f"{settings.margin:g}")
    blocking = sorted(r for r, v in verdicts.items() if r < chosen and v.status != "inferior")
    text += (f". Still open below {chosen} px: {_list(blocking)}." if blocking else ".")
    single = [r for r in blocking
              if verdicts[r].difference is not None and verdicts[r].difference.n_seeds < 2]
    if single:
        text += f" One training run only: {_list(single)}."
    return text + _power_text(verdicts, blocking, single, settings)


def statement(decision: Decision, settings: Settings) -> str:
    """The plain answer, every direction in it read from the decision's numbers."""
    label = settings.metric_label
    best, chosen = decision.best, decision.recommended
    if best is None:
        return f"No {label} can be computed for any resolution: no recommendation."
    value = decision.estimates[best]
    if len(decision.estimates) == 1:
        return (f"Only {best} px was run: nothing to compare it with ({label} {value:.3f}). Run more "
                "resolutions to get a recommendation.")
    if decision.one_run:
        return (f"{best} px: {ONE_RUN}. It has the highest {label} ({value:.3f}) of one training run per "
                "resolution; the seed-to-seed variance, which can exceed the differences between "
                "resolutions, is unknown until more seeds are run.")
    verdicts = decision.verdicts
    by_status = {status: sorted(r for r, v in verdicts.items() if v.status == status) for status in STATUSES}
    if decision.decided:
        text = _decided_text(decision, settings, by_status["inferior"])
    else:
        text = _undecided_text(decision, settings)
    shown_worse = [r for r in by_status["inferior"]
                   if not (decision.decided and chosen == best and r < chosen)]
    if shown_worse:
        text += f" Shown worse than the best by more than the margin: {_list(shown_worse)}."
    if by_status["not paired"]:
        text += f" Not compared (no shared seeds or other test images): {_list(by_status['not paired'])}."
    return text


def image_effect(labels: np.ndarray) -> tuple[float, int, int]:
    """(effect, class, its test images): the most one test image can move balanced accuracy,
    ``1 / (classes x images of the smallest class)`` (one image of that class changes its recall
    by ``1 / images``, and balanced accuracy averages the classes' recalls). Macro AUROC moves by
    at most as much when that image passes every other class's image in the ranking."""
    values, counts = np.unique(np.asarray(labels), return_counts=True)
    smallest = int(np.argmin(counts))
    return 1.0 / (values.size * int(counts[smallest])), int(values[smallest]), int(counts[smallest])
