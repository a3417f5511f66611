"""The resolution to recommend for each model, with the Pareto set and its warnings."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from resomap.study.compare import Comparison
from resomap.study.decision_settings import Settings
from resomap.study.resolution_group import Group
from resomap.study.verdicts import Decision


@dataclass(frozen=True)
class Recommendation:
    """The resolution to use for one model, and the plain reason.

    ``decided`` is False when the seeds do not back the answer (one training run per resolution,
    or a smaller resolution still undecided): the report then states no decision. ``warnings``:
    e.g. the recommended resolution has a degenerate run.
    """

    model: str
    resolution: int | None
    best_resolution: int | None
    non_inferior: tuple[int, ...]
    undecided: tuple[int, ...]
    pareto: tuple[int, ...]
    pareto_axes: tuple[str, ...]
    statement: str
    decided: bool = False
    decision: Decision | None = None
    warnings: tuple[str, ...] = ()


def pareto_optimal(points: dict[int, tuple[float, ...]]) -> list[int]:
    """Keys whose point no other point dominates; the first coordinate is maximised, the rest minimised."""

    def dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
        better_or_equal = a[0] >= b[0] and all(x <= y for x, y in zip(a[1:], b[1:]))
        return better_or_equal and a != b

    return sorted(key for key, point in points.items()
                  if not any(dominates(other, point) for other in points.values()))


def _pareto(groups: list[Group], metric: str) -> tuple[tuple[int, ...], tuple[str, ...]]:
    scored = [g for g in groups if math.isfinite(g.value(metric))]
    axes = [name for name in ("latency", "memory") if scored and all(name in g.costs for g in scored)]
    if not axes:
        axes = ["macs"] if scored and all("macs" in g.costs for g in scored) else []
    points = {g.resolution: (g.value(metric), *([g.costs[name] for name in axes] or [float(g.resolution)]))
              for g in scored}
    return tuple(pareto_optimal(points)), tuple(axes) or ("resolution",)


def recommend(model: str, groups: list[Group], best: Group | None, comparisons: dict[int, Comparison],
              settings: Settings, decision: Decision | None = None) -> Recommendation:
    """The decision's answer (:func:`resomap.study.decide.decide`), with the Pareto set."""
    pareto, axes = _pareto(groups, settings.metric)
    label = settings.metric_label
    if best is None:
        return Recommendation(model, None, None, (), (), pareto, axes,
                              f"No {label} is known for any resolution of {model} (no stored predictions "
                              "and no value in the records): no recommendation.")
    if decision is None:  # no stored predictions anywhere: values read from the records only
        statement = (f"{best.resolution} px has the highest {label} read from the records "
                     f"({best.value(settings.metric):.3f}); without stored test predictions nothing can be "
                     "compared: not a decision.")
        if len(groups) == 1:
            statement = (f"Only {best.resolution} px was run for {model}: nothing to compare it with. "
                         "Run more resolutions to get a recommendation.")
        return Recommendation(model, best.resolution, best.resolution, (best.resolution,), (), pareto, axes,
                              statement)
    shown = tuple(sorted([best.resolution]
                         + [r for r, c in comparisons.items() if c.status == "non-inferior"]))
    undecided = tuple(sorted(r for r, c in comparisons.items() if c.status == "undecided"))
    statement = decision.statement
    if len(groups) == 1:
        statement = (f"Only {best.resolution} px was run for {model}: nothing to compare it with. Run more "
                     "resolutions to get a recommendation.")
    unscored = sorted(r for r, c in comparisons.items() if c.status == "not paired"
                      and r not in decision.verdicts)
    if unscored:
        statement += f" Not compared (no stored predictions): {', '.join(map(str, unscored))} px."
    return Recommendation(model, decision.recommended, best.resolution, shown, undecided, pareto, axes,
                          statement, decision.decided, decision)


def with_warnings(recommendation: Recommendation, groups: list[Group]) -> Recommendation:
    """The recommendation with a warning for each degenerate run at the recommended resolution."""
    chosen = next((g for g in groups if g.resolution == recommendation.resolution), None)
    if chosen is None or not chosen.flagged:
        return recommendation
    warnings = tuple(f"{chosen.resolution} px, seed {run.seed}, is a degenerate run: {'; '.join(run.flags)}"
                     for run in chosen.flagged)
    return replace(recommendation, warnings=warnings)

