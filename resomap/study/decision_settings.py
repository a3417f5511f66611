"""How the study decides: the ``report.*`` settings of every decision, and their checks.

Apart from :mod:`resomap.study.decide` so that the report, the adaptive sweeper and the
validation command can read and check the settings without the decision's machinery.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from resomap.errors import ResoMapError
from resomap.study.bootstrap import CONFIDENCE, N_RESAMPLES
from resomap.study.scores import METRICS


@dataclass(frozen=True)
class Settings:
    """How the study decides (``report.*`` in conf/report/default.yaml)."""

    metric: str = "balanced_accuracy"
    margin: float = 0.02
    confidence: float = CONFIDENCE
    n_resamples: int = N_RESAMPLES
    seed: int = 0
    # Looks of a sequential (adaptive) study: every test's alpha is split evenly over them.
    looks: int = 1

    @property
    def metric_label(self) -> str:
        return METRICS[self.metric]

    @property
    def alpha(self) -> float:
        """One-sided error rate of each (non-)inferiority test: half of 1 - confidence, split
        evenly over the looks."""
        return (1 - self.confidence) / 2 / self.looks


def check_settings(metric: Any = "balanced_accuracy", margin: Any = 0.02, confidence: Any = CONFIDENCE,
                   n_resamples: Any = N_RESAMPLES, seed: Any = 0, looks: Any = 1) -> Settings:
    """Validated :class:`Settings`; a :class:`ResoMapError` names the bad key and what is valid."""
    if metric not in METRICS:
        raise ResoMapError(f"report.metric={metric!r} is not valid: choose one of {', '.join(METRICS)} "
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
