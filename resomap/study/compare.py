"""Paired comparisons of one model's resolutions: each against the best, and highest against lowest.

Both compare on the same test images and seeds; the decision itself is
:func:`resomap.study.decide.decide`'s, this module keeps what the report shows beside it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from resomap.study import bootstrap, classic_stats, scores
from resomap.study.decide import decide
from resomap.study.decision_settings import Settings
from resomap.study.resolution_group import Group
from resomap.study.verdicts import Decision


@dataclass(frozen=True)
class Comparison:
    """One resolution against the best of the same model, on the same test images and seeds:
    a :class:`resomap.study.verdicts.Verdict` plus what the report shows beside it.

    ``status``: ``non-inferior``, ``inferior``, ``undecided`` or ``not paired`` (``reason``
    says why); see :mod:`resomap.study.decide`.
    """

    model: str
    resolution: int
    best_resolution: int
    metric: str
    margin: float
    seeds: tuple[int, ...] = ()
    paired: bootstrap.PairedDifference | None = None
    pvalue_holm: float | None = None
    noninferiority_p: float | None = None
    noninferiority_p_holm: float | None = None
    status: str = "not paired"
    decisive_images: int | None = None
    decisive_seeds: int | None = None
    mcnemar: classic_stats.McNemar | None = None
    mcnemar_seed: int | None = None
    reason: str = ""
    inferiority_p_holm: float | None = None


def best_group(groups: list[Group], metric: str) -> Group | None:
    """The group with the highest finite point estimate; ties go to the smaller resolution."""
    finite = [g for g in groups if math.isfinite(g.value(metric))]
    return max(finite, key=lambda g: (g.value(metric), -g.resolution)) if finite else None


def compare_model(groups: list[Group], settings: Settings
                  ) -> tuple[Group | None, dict[int, Comparison], Decision | None]:
    """Every resolution of a model against its best, through :func:`resomap.study.decide.decide`.

    Resolutions with stored predictions are decided from them; when none has any, the best is the
    highest value read from the records and nothing is compared.
    """
    scored = {g.resolution: g.scored(settings.metric) for g in groups}
    if not any(scored.values()):
        return best_group(groups, settings.metric), {}, None
    decision = decide({res: seeds for res, seeds in scored.items() if seeds}, settings)
    by_res = {g.resolution: g for g in groups}
    best = by_res.get(decision.best) if decision.best is not None else None
    found: dict[int, Comparison] = {}
    if best is None:
        return best_group(groups, settings.metric), found, decision
    for group in groups:
        if group is best:
            continue
        base = Comparison(group.model, group.resolution, best.resolution, settings.metric, settings.margin)
        verdict = decision.verdicts.get(group.resolution)
        if verdict is None:
            found[group.resolution] = replace(base, reason=f"no stored predictions to pair with "
                                                           f"{best.resolution} px")
            continue
        mcnemar = first = None
        if verdict.difference is not None:
            first = verdict.seeds[0]
            mine, theirs = group.scored(settings.metric)[first], best.scored(settings.metric)[first]
            mcnemar = classic_stats.mcnemar_exact(mine.predictions == mine.labels,
                                          theirs.predictions == theirs.labels)
        paired = verdict.difference
        found[group.resolution] = replace(
            base, seeds=verdict.seeds, paired=paired, pvalue_holm=verdict.pvalue_holm,
            noninferiority_p=paired.one_sided_pvalue(-settings.margin, above=True) if paired else None,
            noninferiority_p_holm=verdict.noninferiority_p_holm, status=verdict.status,
            decisive_images=verdict.images_for_power, decisive_seeds=verdict.seeds_for_power,
            mcnemar=mcnemar, mcnemar_seed=first, reason=verdict.reason,
            inferiority_p_holm=verdict.inferiority_p_holm)
    return best, found, decision


# ------------------------------------------------------------- per class: lowest vs highest


@dataclass(frozen=True)
class Extremes:
    """Per-class AUROC (and the two headline metrics) of the highest minus the lowest resolution."""

    model: str
    low_resolution: int
    high_resolution: int
    seeds: tuple[int, ...]
    differences: dict[str, bootstrap.PairedDifference]
    pvalues_holm: dict[str, float]


def extremes(groups: list[Group], classes: Sequence[str], settings: Settings) -> Extremes | None:
    scored = [g for g in groups if g.scored("macro_auroc")]
    if len(scored) < 2:
        return None
    low, high = min(scored, key=lambda g: g.resolution), max(scored, key=lambda g: g.resolution)
    a, b = high.scored("macro_auroc"), low.scored("macro_auroc")
    seeds = tuple(sorted(set(a) & set(b)))
    if not seeds or not np.array_equal(a[seeds[0]].labels, b[seeds[0]].labels):
        return None
    labels = a[seeds[0]].labels
    scorers: dict[str, scores.Scorer] = {
        f"AUROC {name}": scores.class_auroc_scorer(i)
        for i, name in enumerate(classes) if 0 < np.sum(labels == i) < labels.size}
    scorers.update({scores.METRICS[m]: scores.SCORERS[m] for m in ("macro_auroc", "balanced_accuracy")})
    differences = {name: bootstrap.paired_difference([a[s] for s in seeds], [b[s] for s in seeds], scorer,
                                                 settings.confidence, settings.n_resamples, settings.seed)
                   for name, scorer in scorers.items()}
    per_class = [name for name in differences if name.startswith("AUROC ")]
    adjusted = dict(zip(per_class, classic_stats.holm([differences[name].pvalue for name in per_class])))
    return Extremes(groups[0].model, low.resolution, high.resolution, seeds, differences, adjusted)

