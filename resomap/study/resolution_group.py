"""All seeds of one model at one resolution: their intervals, per-class figures and mean costs."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from resomap.study.bootstrap import Interval, Predictions, bootstrap_metric
from resomap.study.classic_stats import t_interval
from resomap.study.cost_figures import FIGURES, figure_value, number
from resomap.study.decision_settings import Settings
from resomap.study.runs import RunData
from resomap.study.scores import METRICS, SCORERS


@dataclass
class Group:
    """All seeds of one model at one resolution, on one data set."""

    data_name: str
    model: str
    resolution: int
    runs: list[RunData]
    intervals: dict[str, Interval]
    f1: Interval | None
    accuracy: float
    per_class_auroc: dict[str, float | None] = field(default_factory=dict)
    per_class_average_precision: dict[str, float | None] = field(default_factory=dict)
    costs: dict[str, float] = field(default_factory=dict)
    cost_keys: dict[str, str] = field(default_factory=dict)
    paired: list[RunData] = field(default_factory=list)

    @property
    def seeds(self) -> list[int]:
        return [run.seed for run in self.runs]

    @property
    def config(self) -> dict[str, Any]:
        """The configuration keys' values shared by the group's runs (empty: one configuration)."""
        return self.runs[0].config if self.runs else {}

    @property
    def flagged(self) -> list[RunData]:
        """The group's degenerate runs."""
        return [run for run in self.runs if run.flags]

    def seconds(self) -> float | None:
        """Mean wall time of one run (the records' ``timing.total_sec``), None when not recorded."""
        values = [v for run in self.runs if (v := number((run.record.timing or {}).get("total_sec")))]
        return float(np.mean(values)) if values else None

    def value(self, metric: str) -> float:
        """Point estimate of ``metric`` (NaN when unknown)."""
        interval = self.intervals.get(metric)
        return interval.mean if interval is not None else math.nan

    def scored(self, metric: str) -> dict[int, Predictions]:
        """Seed -> predictions usable for ``metric``'s bootstrap."""
        usable = [run for run in self.paired if metric == "balanced_accuracy" or run.scorable]
        return {run.seed: run.predictions for run in usable}


def _mean_by_class(dicts: list[dict[str, float | None]]) -> dict[str, float | None]:
    names = list(dict.fromkeys(name for values in dicts for name in values))
    means = {}
    for name in names:
        values = [v for values in dicts if (v := values.get(name)) is not None]
        means[name] = float(np.mean(values)) if values else None
    return means


def _interval(runs: list[RunData], bootstrap: dict[int, Predictions], metric: str,
              settings: Settings) -> Interval:
    if bootstrap:
        return bootstrap_metric(list(bootstrap.values()), SCORERS[metric], settings.confidence,
                                      settings.n_resamples, settings.seed)
    values = [v for run in runs if (v := run.metrics.get(metric)) is not None]
    if len(values) >= 2:
        return t_interval(values, settings.confidence)
    value = values[0] if values else math.nan
    return Interval(value, math.nan, math.nan, math.nan, len(values), "none")


def build_group(data_name: str, model: str, resolution: int, runs: list[RunData], settings: Settings,
                notes: list[str]) -> Group:
    paired: list[RunData] = []
    for run in runs:
        if run.predictions is None:
            continue
        if paired and not np.array_equal(paired[0].predictions.labels, run.predictions.labels):
            notes.append(f"{run.record.run_name}: its test labels differ from seed {paired[0].seed}'s; "
                         "left out of the intervals and comparisons.")
            continue
        paired.append(run)
    group = Group(data_name, model, resolution, runs, {}, None, math.nan, paired=paired)
    for metric in METRICS:
        group.intervals[metric] = _interval(runs, group.scored(metric), metric, settings)
    f1_values = [v for run in runs if (v := run.metrics.get("f1_score")) is not None]
    if len(f1_values) >= 2:
        group.f1 = t_interval(f1_values, settings.confidence)
    elif f1_values:
        group.f1 = Interval(f1_values[0], math.nan, math.nan, math.nan, 1, "none")
    accuracies = [v for run in runs if (v := run.metrics.get("accuracy")) is not None]
    group.accuracy = float(np.mean(accuracies)) if accuracies else math.nan
    group.per_class_auroc = _mean_by_class([run.per_class_auroc for run in runs])
    group.per_class_average_precision = _mean_by_class([run.per_class_average_precision for run in runs])
    for name in FIGURES:
        found = [value for run in runs if (value := figure_value(run.record, name))]
        if found:
            group.costs[name] = float(np.mean([value for value, _ in found]))
            group.cost_keys[name] = found[0][1]
    return group

