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
import math
import zipfile
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from resomap.run import record as records
from resomap.run.record_schema import RunRecord
from resomap.study import cross_res, degenerate, stats
from resomap.study.decide import Decision, Settings, check_settings, decide  # noqa: F401 (re-exported)
from resomap.study.groups import Configurations, configurations

log = logging.getLogger(__name__)

# A scaling exponent further than this from 2 (cost proportional to pixel count) is flagged.
EXPONENT_TOLERANCE = 0.5
# Training FLOPs per image = this x forward FLOPs (forward + backward, the usual approximation).
TRAIN_FLOPS_PER_FORWARD = 3


# ------------------------------------------------------------------------------- one run


@dataclass(frozen=True)
class Figure:
    """A cost figure read from a record section; the first key present is used. ``units``:
    the unit of a key whose unit differs from ``unit`` (memory: MiB on the GPU, MB on the CPU)."""

    label: str
    unit: str
    section: str
    keys: tuple[str, ...]
    scale: float = 1.0
    units: tuple[tuple[str, str], ...] = ()

    def unit_of(self, key: str) -> str:
        return dict(self.units).get(key, self.unit)


# Median latency first: the seed's mean was inflated by a first-batch outlier.
FIGURES = {
    "latency": Figure("Latency per batch", "ms", "profiling",
                      ("median_time_sec", "p50_time_sec", "avg_time_sec"), 1000.0),
    "throughput": Figure("Throughput", "images/s", "profiling", ("throughput_samples_sec",)),
    # The model's own memory first (GPU: weights + the passes' peak, data cache excluded, in MiB; CPU:
    # the passes' rise of resident memory, in decimal MB), the whole process's peak only for records
    # without them.
    "memory": Figure("Peak memory", "MB", "profiling",
                     ("gpu_memory_peak_mb", "cpu_memory_increase_mb", "peak_cpu_memory_mb"),
                     units=(("gpu_memory_peak_mb", "MiB"),)),
    # fvcore counts one multiply-add once: the record's "flops" are multiply-accumulates.
    "flops": Figure("Multiply-adds", "GMACs", "complexity", ("flops",), 1e-9),
    "params": Figure("Parameters", "M", "complexity", ("params_total",), 1e-6),
}
SCALING_FIGURES = ("latency", "memory", "flops")


def number(value: Any) -> float | None:
    """A finite float, or None for anything else (None, NaN, a string...)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def figure_value(record: RunRecord, name: str) -> tuple[float, str] | None:
    """The run's value of figure ``name`` (scaled to its unit) and the key it came from."""
    figure = FIGURES[name]
    section = getattr(record, figure.section) or {}
    for key in figure.keys:
        value = number(section.get(key))
        if value is not None and value > 0:
            return value * figure.scale, key
    return None


@dataclass
class RunData:
    """One run: its record, its stored test predictions and the metrics computed from them.

    ``source`` says where the metrics come from: ``predictions`` (the ``.npz``; the study's
    own computation, the same one its intervals and comparisons use) or ``record`` (the
    record's values, when the predictions are missing or unusable: ``problem`` says why).
    """

    path: Path
    record: RunRecord
    predictions: stats.Predictions | None
    metrics: dict[str, float | None]
    per_class_auroc: dict[str, float | None]
    per_class_average_precision: dict[str, float | None]
    source: str
    problem: str = ""
    flags: list[str] = field(default_factory=list)  # why the run is degenerate (resomap.study.degenerate)
    model: str = ""  # the model, with its configuration when runs of the model differ (groups.py)
    config: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.model = self.model or self.record.model

    @property
    def seed(self) -> int:
        return self.record.seed

    @property
    def scorable(self) -> bool:
        """Predictions with finite probabilities: every metric can be bootstrapped."""
        return self.predictions is not None and bool(np.isfinite(self.predictions.probabilities).all())


def _by_class(classes: Sequence[str], values: np.ndarray) -> dict[str, float | None]:
    return {name: number(value) for name, value in zip(classes, values)}


def _read_saved(results_dir: Path, record: RunRecord) -> tuple[stats.Predictions | None, str]:
    try:
        saved = records.read_predictions(results_dir, record)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
        return None, f"its predictions file is not readable ({type(error).__name__}: {error})"
    if saved is None:
        return None, "no stored test predictions (.npz)"
    try:
        labels = np.asarray(saved["labels"]).astype(np.int64)
        probabilities = np.asarray(saved["probabilities"], dtype=np.float64)
        predictions = np.asarray(saved["predictions"]).astype(np.int64)
    except KeyError as error:
        return None, f"its predictions file lacks {error}"
    classes = len(record.classes)
    if (labels.ndim != 1 or predictions.shape != labels.shape or probabilities.shape != (labels.size, classes)
            or labels.size == 0 or labels.min() < 0 or labels.max() >= classes):
        return None, (f"its predictions file does not match the record ({labels.size} labels, probabilities "
                      f"{probabilities.shape}, {classes} classes)")
    return stats.Predictions(labels, predictions, probabilities), ""


def load_run(results_dir: Path, path: Path, record: RunRecord) -> RunData:
    """A run's metrics from its stored predictions, or from its record when they are unusable."""
    predictions, problem = _read_saved(results_dir, record)
    metrics = record.test_metrics
    if predictions is None:
        flags = degenerate.run_flags(record)
        return RunData(path, record, None, {
            "balanced_accuracy": number(metrics.balanced_accuracy),
            "macro_auroc": number(metrics.macro_auroc),
            "accuracy": number(metrics.accuracy), "f1_score": number(metrics.f1_score)},
            {name: number(value) for name, value in (metrics.per_class_auroc or {}).items()},
            {name: number(value) for name, value in (metrics.per_class_average_precision or {}).items()},
            "record", problem, flags)
    labels, guessed = predictions.labels, predictions.predictions
    found = {"balanced_accuracy": stats.balanced_accuracy(labels, guessed),
             "accuracy": float(np.mean(labels == guessed)), "f1_score": number(metrics.f1_score),
             "macro_auroc": None}
    auroc: dict[str, float | None] = dict.fromkeys(record.classes)
    precision: dict[str, float | None] = dict.fromkeys(record.classes)
    if np.isfinite(predictions.probabilities).all():
        per_class = stats.per_class_auroc(labels, predictions.probabilities)
        auroc = _by_class(record.classes, per_class)
        precision = _by_class(record.classes,
                              stats.per_class_average_precision(labels, predictions.probabilities))
        found["macro_auroc"] = number(stats.macro(per_class))
    else:
        problem = "its stored probabilities are not finite (NaN or infinite): no AUROC"
    flags = degenerate.run_flags(record, labels, guessed)
    return RunData(path, record, predictions, found, auroc, precision, "predictions", problem, flags)


# ------------------------------------------------------------------------ model x resolution


@dataclass
class Group:
    """All seeds of one model at one resolution, on one data set."""

    data_name: str
    model: str
    resolution: int
    runs: list[RunData]
    intervals: dict[str, stats.Interval]
    f1: stats.Interval | None
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

    def scored(self, metric: str) -> dict[int, stats.Predictions]:
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


def _interval(runs: list[RunData], bootstrap: dict[int, stats.Predictions], metric: str,
              settings: Settings) -> stats.Interval:
    if bootstrap:
        return stats.bootstrap_metric(list(bootstrap.values()), stats.SCORERS[metric], settings.confidence,
                                      settings.n_resamples, settings.seed)
    values = [v for run in runs if (v := run.metrics.get(metric)) is not None]
    if len(values) >= 2:
        return stats.t_interval(values, settings.confidence)
    value = values[0] if values else math.nan
    return stats.Interval(value, math.nan, math.nan, math.nan, len(values), "none")


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
    for metric in stats.METRICS:
        group.intervals[metric] = _interval(runs, group.scored(metric), metric, settings)
    f1_values = [v for run in runs if (v := run.metrics.get("f1_score")) is not None]
    if len(f1_values) >= 2:
        group.f1 = stats.t_interval(f1_values, settings.confidence)
    elif f1_values:
        group.f1 = stats.Interval(f1_values[0], math.nan, math.nan, math.nan, 1, "none")
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


# ---------------------------------------------------------------------- comparisons, answer


@dataclass(frozen=True)
class Comparison:
    """One resolution against the best of the same model, on the same test images and seeds:
    a :class:`resomap.study.decide.Verdict` plus what the report shows beside it.

    ``status``: ``non-inferior``, ``inferior``, ``undecided`` or ``not paired`` (``reason``
    says why); see :mod:`resomap.study.decide`.
    """

    model: str
    resolution: int
    best_resolution: int
    metric: str
    margin: float
    seeds: tuple[int, ...] = ()
    paired: stats.PairedDifference | None = None
    pvalue_holm: float | None = None
    noninferiority_p: float | None = None
    noninferiority_p_holm: float | None = None
    status: str = "not paired"
    decisive_images: int | None = None
    decisive_seeds: int | None = None
    mcnemar: stats.McNemar | None = None
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
            mcnemar = stats.mcnemar_exact(mine.predictions == mine.labels,
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
        axes = ["flops"] if scored and all("flops" in g.costs for g in scored) else []
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


# ------------------------------------------------------------- per class: lowest vs highest


@dataclass(frozen=True)
class Extremes:
    """Per-class AUROC (and the two headline metrics) of the highest minus the lowest resolution."""

    model: str
    low_resolution: int
    high_resolution: int
    seeds: tuple[int, ...]
    differences: dict[str, stats.PairedDifference]
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
    scorers: dict[str, stats.Scorer] = {
        f"AUROC {name}": stats.class_auroc_scorer(i)
        for i, name in enumerate(classes) if 0 < np.sum(labels == i) < labels.size}
    scorers.update({stats.METRICS[m]: stats.SCORERS[m] for m in ("macro_auroc", "balanced_accuracy")})
    differences = {name: stats.paired_difference([a[s] for s in seeds], [b[s] for s in seeds], scorer,
                                                 settings.confidence, settings.n_resamples, settings.seed)
                   for name, scorer in scorers.items()}
    per_class = [name for name in differences if name.startswith("AUROC ")]
    adjusted = dict(zip(per_class, stats.holm([differences[name].pvalue for name in per_class])))
    return Extremes(groups[0].model, low.resolution, high.resolution, seeds, differences, adjusted)


# -------------------------------------------------------------------- equal training cost


@dataclass(frozen=True)
class Curve:
    """One run's validation metric after each epoch against its cumulative training cost."""

    model: str
    resolution: int
    seed: int
    metric: str  # the history key used, e.g. val_balanced_accuracy
    values: tuple[float, ...]
    seconds: tuple[float, ...]  # cumulative training wall time (s)
    flops: tuple[float, ...] | None  # cumulative training FLOPs (3 x forward FLOPs x images)


def curve(run: RunData, metric: str) -> Curve | None:
    """The run's curve from its history (None when the history lacks the metric or the time)."""
    record = run.record
    key = f"val_{metric}"
    if not any(key in row for row in record.history):
        key = "val_balanced_accuracy"
    rows = [row for row in record.history
            if number(row.get(key)) is not None and number(row.get("train_time_sec")) is not None]
    if not rows:
        return None
    flops_per_image = number((record.complexity or {}).get("flops"))
    flops = None
    if flops_per_image and all(number(row.get("train_images")) is not None for row in rows):
        per_epoch = [TRAIN_FLOPS_PER_FORWARD * flops_per_image * row["train_images"] for row in rows]
        flops = tuple(np.cumsum(per_epoch))
    return Curve(run.model, record.resolution, record.seed, key,
                 tuple(float(row[key]) for row in rows), tuple(float(row["train_time_sec"]) for row in rows),
                 tuple(map(float, flops)) if flops is not None else None)


def _reached(curve_: Curve, axis: str, budget: float) -> float | None:
    """Best validation value reached within ``budget`` (the best checkpoint so far), if any epoch fits."""
    costs = curve_.flops if axis == "flops" else curve_.seconds
    values = [v for v, cost in zip(curve_.values, costs) if cost <= budget * (1 + 1e-9)]
    return max(values) if values else None


@dataclass(frozen=True)
class Budget:
    """At one training budget (the full schedule of ``reference`` px), each resolution's best
    validation value reached, averaged over seeds, on one cost axis (``flops`` or ``seconds``)."""

    model: str
    reference: int
    axis: str
    budget: float
    reached: dict[int, float | None]

    @property
    def best(self) -> int | None:
        found = {res: value for res, value in self.reached.items() if value is not None}
        return max(found, key=lambda res: (found[res], -res)) if found else None


def budget_references(resolutions: Sequence[int]) -> list[int]:
    """The resolutions whose full schedules set the budgets: the smallest, the middle, the largest."""
    ordered = sorted(set(resolutions))
    return sorted({ordered[0], ordered[len(ordered) // 2], ordered[-1]}) if ordered else []


def budgets(curves: list[Curve]) -> list[Budget]:
    """At the full-schedule cost of a few resolutions (:func:`budget_references`), on each cost
    axis, the best validation value each resolution reached and which resolution is best."""
    found = []
    for axis in ("flops", "seconds"):
        usable = [c for c in curves if (c.flops if axis == "flops" else c.seconds)]
        by_res: dict[int, list[Curve]] = defaultdict(list)
        for item in usable:
            by_res[item.resolution].append(item)
        if len(by_res) < 2:
            continue
        for reference in budget_references(list(by_res)):
            total = float(np.mean([(c.flops if axis == "flops" else c.seconds)[-1]
                                   for c in by_res[reference]]))
            reached = {}
            for res, items in sorted(by_res.items()):
                values = [v for c in items if (v := _reached(c, axis, total)) is not None]
                reached[res] = float(np.mean(values)) if len(values) == len(items) else None
            found.append(Budget(usable[0].model, reference, axis, total, reached))
    return found


# ---------------------------------------------------------------------------- whole study


@dataclass
class DataStudy:
    """The study of one data set: its runs grouped by model and resolution, and the answers."""

    name: str
    classes: list[str]
    runs: list[RunData]
    groups: dict[tuple[str, int], Group]
    comparisons: dict[tuple[str, int], Comparison]
    recommendations: dict[str, Recommendation]
    scaling: dict[str, dict[str, stats.PowerLaw]]
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
        if isinstance(found, records.InvalidResult):
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


def fit_scaling(groups: list[Group]) -> dict[str, stats.PowerLaw]:
    fits = {}
    for name in SCALING_FIGURES:
        pairs = [(g.resolution, g.costs[name]) for g in groups if name in g.costs]
        if len({res for res, _ in pairs}) >= 2:
            fits[name] = stats.power_law_fit(*zip(*pairs))
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
