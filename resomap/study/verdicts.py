"""What a decision answers: a :class:`Verdict` per resolution and the model's :class:`Decision`.

The plain data every reader of a decision uses (the report, the adaptive sweeper, the
validation); :mod:`resomap.study.decide` makes them, :mod:`resomap.study.decision_text` words them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from resomap.study.bootstrap import PairedDifference

STATUSES = ("best", "non-inferior", "inferior", "undecided", "not paired")


@dataclass(frozen=True)
class Verdict:
    """One resolution against the best of the same model (``difference``: this minus best)."""

    resolution: int
    status: str
    difference: PairedDifference | None = None
    pvalue_holm: float | None = None  # two-sided, difference = 0
    noninferiority_p_holm: float | None = None  # H0: difference <= -margin
    seeds_for_power: int | None = None  # seeds per resolution (test images as now)
    images_for_power: int | None = None  # test images (seeds as now)
    inferiority_p_holm: float | None = None  # H0: difference >= -margin
    seeds: tuple[int, ...] = ()  # the seeds paired with the best
    reason: str = ""


@dataclass(frozen=True)
class Decision:
    """The answer for one model: see :mod:`resomap.study.decide`'s docstring."""

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
