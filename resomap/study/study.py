"""Everything the sweep-level files say, computed once from the per-run results.

``build_study`` reads the results folder and answers the study's questions: per model
and resolution the balanced accuracy with its CI, each resolution against the best one
on the same test images, the recommended resolution, the Pareto set, the cost scaling
exponents and the train x test resolution matrix. Tables, text and report only format it.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from resomap.run import record as results
from resomap.study import cross_res, stats

log = logging.getLogger(__name__)

# A scaling exponent further than this from 2 (cost proportional to pixel count) is flagged.
EXPONENT_TOLERANCE = 0.5


@dataclass(frozen=True)
class Figure:
    """A cost figure read from a result section; the first key present is used."""

    label: str
    unit: str
    section: str
    keys: tuple[str, ...]
    scale: float = 1.0


# Median latency first: the seed's mean was inflated by a first-batch outlier.
FIGURES = {
    "latency": Figure("Latency per batch", "ms", "profiling",
                      ("median_time_sec", "p50_time_sec", "avg_time_sec"), 1000.0),
    "throughput": Figure("Throughput", "images/s", "profiling", ("throughput_samples_sec",)),
    "memory": Figure("Peak memory", "MB", "profiling", ("gpu_memory_peak_mb", "peak_cpu_memory_mb")),
    "flops": Figure("FLOPs", "GFLOPs", "complexity", ("flops", "total_flops"), 1e-9),
    "params": Figure("Parameters", "M", "complexity", ("params", "total_params", "params_total"), 1e-6),
}
SCALING_FIGURES = ("latency", "memory", "flops")


def figure_value(run: dict[str, Any], name: str) -> tuple[float, str] | None:
    """The run's value of figure ``name`` (scaled to its unit) and the key it came from."""
    figure = FIGURES[name]
    section = run.get(figure.section) or {}
    for key in figure.keys:
        value = section.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return float(value) * figure.scale, key
    return None


@dataclass
class Group:
    """All seeds of one model at one resolution."""

    model: str
    resolution: int
    runs: list[dict[str, Any]]
    balanced_accuracy: stats.Interval
    f1: stats.Interval | None
    accuracy: float
    costs: dict[str, float] = field(default_factory=dict)
    cost_keys: dict[str, str] = field(default_factory=dict)
    labels: np.ndarray | None = None
    predictions: dict[int, np.ndarray] = field(default_factory=dict)

    @property
    def seeds(self) -> list[int]:
        return [int(run.get("seed", 0)) for run in self.runs]


@dataclass(frozen=True)
class Comparison:
    """One resolution against the best resolution of the same model, on the same images."""

    best_resolution: int
    paired: stats.PairedDifference | None
    mcnemar: stats.McNemar | None
    seeds: tuple[int, ...]
    reason: str = ""


@dataclass(frozen=True)
class Recommendation:
    model: str
    resolution: int
    best_resolution: int
    candidates: tuple[int, ...]
    pareto: tuple[int, ...]
    pareto_axes: tuple[str, ...]


@dataclass
class Study:
    results_dir: Path
    runs: list[dict[str, Any]]
    invalid: list[str]
    groups: dict[tuple[str, int], Group]
    comparisons: dict[tuple[str, int], Comparison]
    recommendations: dict[str, Recommendation]
    scaling: dict[str, dict[str, stats.PowerLaw]]
    cross_res: cross_res.CrossRes
    notes: list[str] = field(default_factory=list)

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


def load_results(results_dir: str | Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Valid results sorted by model, resolution and seed, and the problems of the others."""
    valid, problems = [], []
    for _path, payload in results.iter_results(results_dir):
        if isinstance(payload, results.InvalidResult):
            problems.append(str(payload))
        else:
            valid.append(payload)
    valid.sort(key=lambda r: (r["model"], int(r["resolution"]), int(r.get("seed", 0))))
    return valid, problems


def run_name(run: dict[str, Any]) -> str:
    """The run's name; results of the seed study have none and are named ``{model}_{res}``."""
    seed = int(run.get("seed", 0))
    return run.get("run_name") or f"{run['model']}_{run['resolution']}" + (f"_seed{seed}" if seed else "")


def load_predictions(results_dir: Path, run: dict[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
    """Test labels and predictions saved beside the run's JSON, or None when absent or unreadable."""
    name = run.get("predictions_file") or f"{run_name(run)}.npz"
    path = results_dir / results.TEST_RESULTS / name
    try:
        with np.load(path) as saved:
            return saved["labels"].astype(np.int64), saved["predictions"].astype(np.int64)
    except (OSError, KeyError, ValueError):
        return None


def _metric(run: dict[str, Any], key: str) -> float | None:
    value = run["test_metrics"].get(key)
    return float(value) if isinstance(value, (int, float)) else None


def _balanced_accuracy(run: dict[str, Any]) -> float | None:
    # Macro recall is balanced accuracy; the seed's results only have ``recall``.
    value = _metric(run, "balanced_accuracy")
    return value if value is not None else _metric(run, "recall")


def build_group(results_dir: Path, model: str, resolution: int, runs: list[dict[str, Any]],
                notes: list[str]) -> Group:
    values = [v for v in map(_balanced_accuracy, runs) if v is not None]
    f1_values = [v for run in runs if (v := _metric(run, "f1_score")) is not None]
    labels, predictions = None, {}
    for run in runs:
        saved = load_predictions(results_dir, run)
        if saved is None:
            continue
        if labels is not None and not np.array_equal(labels, saved[0]):
            notes.append(f"{run_name(run)}: test labels differ from the other seeds; not paired.")
            continue
        labels = saved[0]
        predictions[int(run.get("seed", 0))] = saved[1]
    mean = float(np.mean(values)) if values else float("nan")
    if len(values) >= 2:
        interval = stats.t_interval(values)
    elif predictions:
        interval = stats.bootstrap_interval(labels, next(iter(predictions.values())))
        interval = stats.Interval(mean, interval.low, interval.high, interval.spread, 1, interval.method)
    else:
        interval = stats.Interval(mean, float("nan"), float("nan"), float("nan"), len(values), "none")
    f1 = None
    if len(f1_values) >= 2:
        f1 = stats.t_interval(f1_values)
    elif f1_values:
        f1 = stats.Interval(f1_values[0], float("nan"), float("nan"), float("nan"), 1, "none")
    accuracies = [v for run in runs if (v := _metric(run, "accuracy")) is not None]
    group = Group(model, resolution, runs, interval, f1,
                  float(np.mean(accuracies)) if accuracies else float("nan"),
                  labels=labels, predictions=predictions)
    for name in FIGURES:
        found = [value for run in runs if (value := figure_value(run, name))]
        if found:
            group.costs[name] = float(np.mean([value for value, _ in found]))
            group.cost_keys[name] = found[0][1]
    return group


def compare(group: Group, best: Group) -> Comparison:
    """Paired bootstrap of balanced accuracy and exact McNemar, ``group`` against ``best``."""
    seeds = tuple(sorted(set(group.predictions) & set(best.predictions)))
    if not seeds:
        return Comparison(best.resolution, None, None, (), "no saved test predictions to pair")
    if not np.array_equal(group.labels, best.labels):
        return Comparison(best.resolution, None, None, (), "the runs were tested on different images")
    paired = stats.paired_bootstrap(group.labels, [group.predictions[s] for s in seeds],
                                    [best.predictions[s] for s in seeds])
    first = seeds[0]
    mcnemar = stats.mcnemar_exact(group.predictions[first] == group.labels,
                                  best.predictions[first] == best.labels)
    return Comparison(best.resolution, paired, mcnemar, seeds)


def pareto_optimal(points: dict[int, tuple[float, ...]]) -> list[int]:
    """Keys whose point no other point dominates; the first coordinate is maximised, the rest minimised."""

    def dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
        better_or_equal = a[0] >= b[0] and all(x <= y for x, y in zip(a[1:], b[1:]))
        return better_or_equal and a != b

    return sorted(key for key, point in points.items()
                  if not any(dominates(other, point) for other in points.values()))


def recommend(model: str, groups: list[Group],
              comparisons: dict[tuple[str, int], Comparison]) -> Recommendation:
    """Smallest resolution not significantly below the best, and the Pareto set of the model."""
    best = max(groups, key=lambda g: (g.balanced_accuracy.mean, -g.resolution))
    candidates = [best.resolution] + [
        g.resolution for g in groups
        if g is not best and (c := comparisons.get((model, g.resolution))) and c.paired
        and not c.paired.significantly_below
    ]
    axes = [name for name in ("latency", "memory") if all(name in g.costs for g in groups)]
    if not axes:
        axes = ["flops"] if all("flops" in g.costs for g in groups) else []
    points = {g.resolution: (g.balanced_accuracy.mean,
                             *([g.costs[name] for name in axes] if axes else [float(g.resolution)]))
              for g in groups}
    return Recommendation(model, min(candidates), best.resolution, tuple(sorted(candidates)),
                          tuple(pareto_optimal(points)), tuple(axes) or ("resolution",))


def fit_scaling(groups: list[Group]) -> dict[str, stats.PowerLaw]:
    fits = {}
    for name in SCALING_FIGURES:
        pairs = [(g.resolution, g.costs[name]) for g in groups if name in g.costs]
        if len({res for res, _ in pairs}) >= 2:
            fits[name] = stats.power_law_fit(*zip(*pairs))
    return fits


def build_study(results_dir: str | Path, evaluate_cross_res: bool = True) -> Study:
    """Read every result under ``results_dir`` and compute the study's answers."""
    results_dir = Path(results_dir)
    runs, invalid = load_results(results_dir)
    for problem in invalid:
        log.warning("Ignored, not a valid result: %s", problem)
    notes: list[str] = []
    by_key: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        by_key[(run["model"], int(run["resolution"]))].append(run)
    groups = {key: build_group(results_dir, *key, members, notes) for key, members in sorted(by_key.items())}
    comparisons: dict[tuple[str, int], Comparison] = {}
    recommendations, scaling = {}, {}
    for model in sorted({model for model, _ in groups}):
        members = [groups[key] for key in sorted(groups) if key[0] == model]
        best = max(members, key=lambda g: (g.balanced_accuracy.mean, -g.resolution))
        for group in members:
            if group is not best:
                comparisons[(model, group.resolution)] = compare(group, best)
        recommendations[model] = recommend(model, members, comparisons)
        scaling[model] = fit_scaling(members)
    resolutions = sorted({res for _, res in groups})
    matrix = cross_res.build(runs, results_dir, resolutions, evaluate=evaluate_cross_res)
    notes.extend(matrix.notes)
    return Study(results_dir, runs, invalid, groups, comparisons, recommendations, scaling, matrix, notes)
