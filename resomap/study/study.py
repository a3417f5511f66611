"""Everything the sweep-level files say, computed once from the run records.

``build_study`` reads the results folder (records through :mod:`resomap.run.record`, their
stored test predictions) and answers the study's questions, separately for each data set in
the folder (runs of two data sets are never compared): per model and resolution the metrics
with their intervals, each resolution against the best one on the same test images and
seeds, the recommended resolution with its non-inferiority margin, per-class AUROC, the
validation metric at equal training cost, the Pareto set, cost scaling and the train x test
resolution matrix. Tables, text and the report only format it.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from resomap.run import record as records
from resomap.study import classic_stats, cross_res
from resomap.study.compare import Comparison, Extremes, compare_model, extremes
from resomap.study.cost_figures import SCALING_FIGURES
from resomap.study.decision_settings import Settings
from resomap.study.groups import Configurations, configurations
from resomap.study.recommend import Recommendation, recommend, with_warnings
from resomap.study.resolution_group import Group, build_group
from resomap.study.runs import RunData, load_run
from resomap.study.training_cost import Budget, Curve, budgets, curve

log = logging.getLogger(__name__)


@dataclass
class DataStudy:
    """The study of one data set: its runs grouped by model and resolution, and the answers."""

    name: str
    classes: list[str]
    runs: list[RunData]
    groups: dict[tuple[str, int], Group]
    comparisons: dict[tuple[str, int], Comparison]
    recommendations: dict[str, Recommendation]
    scaling: dict[str, dict[str, classic_stats.PowerLaw]]
    extremes: dict[str, Extremes]
    curves: list[Curve]
    budgets: dict[str, list[Budget]]
    cross_res: cross_res.CrossRes | None = None
    cross_res_error: Exception | None = None
    configs: Configurations | None = None

    @property
    def models(self) -> list[str]:
        return sorted({model for model, _ in self.groups})

    @property
    def resolutions(self) -> list[int]:
        return sorted({res for _, res in self.groups})

    def model_groups(self, model: str) -> list[Group]:
        return [self.groups[key] for key in sorted(self.groups) if key[0] == model]

    def figures_present(self) -> set[str]:
        return {name for group in self.groups.values() for name in group.costs}

    def model_labels(self, model: str) -> np.ndarray | None:
        """The test labels of ``model``'s first run with stored predictions (None: none has any)."""
        for group in self.model_groups(model):
            for run in group.paired:
                return run.predictions.labels
        return None


@dataclass
class Study:
    results_dir: Path
    settings: Settings
    runs: list[RunData]
    invalid: list[str]
    data_sets: dict[str, DataStudy]
    notes: list[str] = field(default_factory=list)

    @property
    def models(self) -> list[str]:
        return sorted({run.record.model for run in self.runs})

    @property
    def resolutions(self) -> list[int]:
        return sorted({run.record.resolution for run in self.runs})


def load_runs(results_dir: Path, digests: Collection[str] | None = None) -> tuple[list[RunData], list[str]]:
    """Valid runs sorted by data set, model, resolution and seed, and the problems of the others;
    ``digests``: only the runs whose identity digest is in it (None: every run)."""
    valid, problems = [], []
    wanted = None if digests is None else set(digests)
    for path, found in records.iter_records(results_dir):
        if isinstance(found, records.InvalidRecord):
            problems.append(str(found))
        elif wanted is None or found.identity.digest in wanted:
            valid.append(load_run(results_dir, path, found))
    valid.sort(key=lambda r: (r.record.identity.data_name, r.record.model, r.record.resolution,
                              r.record.seed))
    return valid, problems


def _cross_resolution(runs: list[RunData], results_dir: Path, resolutions: list[int],
                      evaluate: bool) -> cross_res.CrossRes:
    return cross_res.build([run.record for run in runs], results_dir, resolutions, evaluate_missing=evaluate)


def build_data_study(name: str, runs: list[RunData], results_dir: Path, settings: Settings,
                     evaluate_cross_res: bool, notes: list[str]) -> DataStudy:
    configs = configurations([run.record for run in runs])
    for run, label, values in zip(runs, configs.labels, configs.values):
        run.model, run.config = label, values
    by_key: dict[tuple[str, int], list[RunData]] = defaultdict(list)
    for run in runs:
        by_key[(run.model, run.record.resolution)].append(run)
    groups = {key: build_group(name, *key, members, settings, notes)
              for key, members in sorted(by_key.items())}
    classes = list(max(runs, key=lambda run: run.record.timestamp).record.classes)
    study = DataStudy(name, classes, runs, groups, {}, {}, {}, {}, [], {}, configs=configs)
    for model in study.models:
        members = study.model_groups(model)
        best, comparisons, decision = compare_model(members, settings)
        study.comparisons.update({(model, res): c for res, c in comparisons.items()})
        study.recommendations[model] = with_warnings(
            recommend(model, members, best, comparisons, settings, decision), members)
        study.scaling[model] = fit_scaling(members)
        if (found := extremes(members, classes, settings)) is not None:
            study.extremes[model] = found
    study.curves = [c for run in runs if (c := curve(run, settings.metric)) is not None]
    for model in study.models:
        study.budgets[model] = budgets([c for c in study.curves if c.model == model])
    try:
        study.cross_res = _cross_resolution(runs, results_dir, study.resolutions, evaluate_cross_res)
        notes.extend(study.cross_res.notes)
    except Exception as error:  # reported by the report's cross-resolution section
        log.exception("Train x test resolution matrix of %s failed", name)
        study.cross_res_error = error
    return study


def fit_scaling(groups: list[Group]) -> dict[str, classic_stats.PowerLaw]:
    fits = {}
    for name in SCALING_FIGURES:
        pairs = [(g.resolution, g.costs[name]) for g in groups if name in g.costs]
        if len({res for res, _ in pairs}) >= 2:
            fits[name] = classic_stats.power_law_fit(*zip(*pairs))
    return fits


def build_study(results_dir: str | Path, evaluate_cross_res: bool = True,
                settings: Settings | None = None, digests: Collection[str] | None = None) -> Study:
    """Read every record under ``results_dir`` (``digests``: only those runs) and compute the
    study's answers per data set."""
    results_dir = Path(results_dir)
    settings = settings or Settings()
    runs, invalid = load_runs(results_dir, digests)
    for problem in invalid:
        log.warning("Ignored, not a valid result: %s", problem)
    notes = [f"{run.record.run_name}: metrics read from the record, not computed from predictions: "
             f"{run.problem}." if run.source == "record" else f"{run.record.run_name}: {run.problem}."
             for run in runs if run.problem]
    by_data: dict[str, list[RunData]] = defaultdict(list)
    for run in runs:
        by_data[run.record.identity.data_name].append(run)
    data_sets = {name: build_data_study(name, members, results_dir, settings, evaluate_cross_res, notes)
                 for name, members in sorted(by_data.items())}
    for data in data_sets.values():
        if data.configs is not None:
            notes.extend(data.configs.warnings)
    return Study(results_dir, settings, runs, invalid, data_sets, notes)
