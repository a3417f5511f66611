"""Scoring simulated studies against the known answer: the reference, each comparison, the rates.

The truth comes from a reference study with many seeds and a large test set
(:class:`Reference`), whose mean metric per resolution is taken as the true value. Three rates:

- recovery: the share of studies whose recommendation is the planted answer (the smallest
  resolution that keeps the texture, :func:`resomap.study.simulate.planted_answer`);
- wrong confident claims: the share of comparisons (a resolution against the study's best)
  called ``inferior`` while truly within the margin of that best, or ``non-inferior`` while
  truly worse than the margin;
- coverage: the share of the comparisons' nominal intervals of the difference (resolution minus
  best) that hold the true difference.

Each rate comes with a Wilson interval for its Monte Carlo error. Comparisons of one study share
its test set and seeds, so their rates' intervals are somewhat too narrow; the per-study rates
(recovery, studies with any wrong claim) are exact binomials.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from scipy import stats as scipy_stats

from resomap.study.decision_settings import Settings
from resomap.study.validation_design import Design
from resomap.study.verdicts import Decision


def _ci(successes: int, trials: int) -> tuple[float, float] | None:
    if trials == 0:
        return None
    found = scipy_stats.binomtest(successes, trials).proportion_ci(0.95, method="wilson")
    return float(found.low), float(found.high)


@dataclass(frozen=True)
class Rate:
    """``count`` of ``total`` with its 95 % Wilson interval (None when ``total`` is 0)."""

    count: int
    total: int

    @property
    def value(self) -> float:
        return self.count / self.total if self.total else math.nan

    @property
    def interval(self) -> tuple[float, float] | None:
        return _ci(self.count, self.total)

    def as_dict(self) -> dict[str, Any]:
        interval = self.interval
        return {"count": self.count, "total": self.total, "rate": self.value if self.total else None,
                "wilson_95": list(interval) if interval else None}

    def text(self) -> str:
        if not self.total:
            return "n/a (0 cases)"
        low, high = self.interval
        return f"{self.value:.1%} ({self.count}/{self.total}; 95 % CI {low:.1%}-{high:.1%})"


@dataclass(frozen=True)
class Reference:
    """The large-sample truth: mean metric over many seeds on a large test set."""

    means: dict[int, float]
    standard_errors: dict[int, float]  # seed-to-seed spread / sqrt(seeds): the truth's own noise
    decision: Decision
    seeds: int
    test_images: int

    def difference(self, resolution: int, best: int) -> float:
        return self.means[resolution] - self.means[best]

    def within_margin(self, resolution: int, best: int, margin: float) -> bool:
        return self.difference(resolution, best) > -margin

    def answer(self, margin: float) -> int:
        """The smallest resolution truly within the margin of the truly best one."""
        top = max(self.means.values())
        return min(res for res, mean in self.means.items() if mean - top > -margin)


@dataclass(frozen=True)
class Comparison:
    """One resolution against one study's best, scored against the reference."""

    study: int
    resolution: int
    best: int
    status: str
    estimate: float
    low: float
    high: float
    truth: float
    truly_within: bool

    @property
    def wrong(self) -> bool:
        return ((self.status == "inferior" and self.truly_within)
                or (self.status == "non-inferior" and not self.truly_within))

    @property
    def covered(self) -> bool:
        return self.low <= self.truth <= self.high


@dataclass(frozen=True)
class StudyOutcome:
    study: int
    recommended: int | None
    best: int | None
    decided: bool
    comparisons: tuple[Comparison, ...]


@dataclass
class Validation:
    """Everything the command found: the set-up, the reference, each study, the rates."""

    resolutions: list[int]
    kept: dict[int, float]
    planted: int
    nyquist_cut: float
    reference: Reference
    outcomes: list[StudyOutcome]
    settings: Settings
    design: Design
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def comparisons(self) -> list[Comparison]:
        return [c for outcome in self.outcomes for c in outcome.comparisons]

    def rates(self) -> dict[str, Rate]:
        """The three rates and their parts (see the module's docstring)."""
        n = len(self.outcomes)
        compared = self.comparisons
        within = [c for c in compared if c.truly_within]
        worse = [c for c in compared if not c.truly_within]
        return {
            "recovery": Rate(sum(o.recommended == self.planted for o in self.outcomes), n),
            "decided": Rate(sum(o.decided for o in self.outcomes), n),
            "decided_and_recovered": Rate(sum(o.decided and o.recommended == self.planted
                                              for o in self.outcomes), n),
            "wrong_claims": Rate(sum(c.wrong for c in compared), len(compared)),
            "wrongly_inferior": Rate(sum(c.status == "inferior" for c in within), len(within)),
            "wrongly_non_inferior": Rate(sum(c.status == "non-inferior" for c in worse), len(worse)),
            "studies_with_a_wrong_claim": Rate(sum(any(c.wrong for c in o.comparisons)
                                                   for o in self.outcomes), n),
            "coverage": Rate(sum(c.covered for c in compared), len(compared)),
            "coverage_truly_within": Rate(sum(c.covered for c in within), len(within)),
            "coverage_truly_worse": Rate(sum(c.covered for c in worse), len(worse)),
        }


def score(study: int, decision: Decision, reference: Reference, margin: float) -> StudyOutcome:
    """One study's decision against the reference."""
    found = []
    for res, verdict in sorted(decision.verdicts.items()):
        if verdict.difference is None or decision.best is None:
            continue
        d = verdict.difference
        found.append(Comparison(study, res, decision.best, verdict.status, d.difference, d.low, d.high,
                                reference.difference(res, decision.best),
                                reference.within_margin(res, decision.best, margin)))
    return StudyOutcome(study, decision.recommended, decision.best, decision.decided, tuple(found))
