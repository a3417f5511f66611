"""The sweep-level files of the seed study, rebuilt from the run records.

``all_results.csv`` (one row per run), ``results_summary.json`` and ``detailed_report.txt``
keep the seed's names, columns and layout; new figures are added after them. Runs are ranked
by the study's metric (``report.metric``: balanced accuracy by default, or macro AUROC).
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Any

import numpy as np

from resomap.io import atomic_write_text, write_csv, write_json
from resomap.study import spent, stats
from resomap.study.decide import Settings, check_settings
from resomap.study.runs import RunData
from resomap.study.study import DataStudy, Study, build_study

# The seed study's columns, in its order; new columns follow them.
SEED_COLUMNS = (
    "model", "resolution", "timestamp", "best_val_loss", "test_loss", "test_accuracy",
    "test_precision", "test_recall", "test_f1_score", "profile_avg_time_sec",
    "profile_std_time_sec", "profile_min_time_sec", "profile_max_time_sec",
    "profile_throughput_samples_sec", "profile_peak_cpu_memory_mb",
    "profile_gpu_memory_allocated_mb", "profile_gpu_memory_reserved_mb",
    "profile_gpu_memory_peak_mb",
)
SUMMARY_KEYS = ("num_experiments", "avg_test_accuracy", "best_test_accuracy", "worst_test_accuracy",
                "avg_test_f1", "avg_inference_time_sec", "avg_throughput_samples_sec")


def _flatten(prefix: str, value: Any, row: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(f"{prefix}_{key}" if prefix else str(key), item, row)
    elif not isinstance(value, list):
        row[prefix] = value


def result_row(run: RunData) -> dict[str, Any]:
    """One CSV row: the record's scalars, nested keys joined with ``_``.

    Balanced accuracy, accuracy and the AUROC and average-precision figures are the study's own,
    computed from the stored predictions (``metrics_source``), so the table, the report and
    the statistics show the same numbers.
    """
    record = run.record
    row: dict[str, Any] = {
        "model": record.model, "resolution": record.resolution, "timestamp": record.timestamp,
        "best_val_loss": record.best_val_loss, "seed": record.seed, "run_name": record.run_name,
    }
    metrics = record.to_dict()["test_metrics"]
    metrics.pop("confusion_matrix", None)
    metrics.update({key: run.metrics[key] for key in ("balanced_accuracy", "accuracy", "macro_auroc")})
    metrics["per_class_auroc"] = run.per_class_auroc
    metrics["per_class_average_precision"] = run.per_class_average_precision
    _flatten("test", metrics, row)
    _flatten("profile", record.profiling, row)
    _flatten("complexity", record.complexity, row)
    _flatten("timing", record.timing, row)
    for key in ("best_epoch", "epochs_run", "global_step", "fit_time_sec", "precision", "accelerator",
                "device", "num_devices"):
        row[key] = getattr(record, key)
    _flatten("best", record.best_val_metrics, row)
    identity = record.identity
    row.update(data_name=identity.data_name, data_fingerprint=identity.data_fingerprint,
               training_hash=identity.training_hash, metrics_source=run.source,
               configuration=", ".join(f"{key}={value}" for key, value in sorted(run.config.items())),
               degenerate="; ".join(run.flags))
    return row


def results_table(runs: list[RunData]) -> tuple[list[str], list[dict[str, Any]]]:
    """Columns (the seed's 18, then seed, then every other figure sorted) and rows."""
    rows = [result_row(run) for run in runs]
    extra = sorted({key for row in rows for key in row} - set(SEED_COLUMNS) - {"seed"})
    return [*SEED_COLUMNS, "seed", *extra], rows


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def ranked(rows: list[dict[str, Any]], column: str) -> list[dict[str, Any]]:
    """Rows best first by ``column``, then accuracy; rows without a value last."""
    def key(row: dict[str, Any]) -> tuple[float, float]:
        score, accuracy = _number(row.get(column)), _number(row.get("test_accuracy"))
        return (-score if score is not None else math.inf, -accuracy if accuracy is not None else math.inf)
    return sorted(rows, key=key)


def _mean(values: list[Any]) -> float | None:
    numbers = [v for v in map(_number, values) if v is not None]
    return float(np.mean(numbers)) if numbers else None


def _extreme(values: list[Any], pick: Any) -> float | None:
    numbers = [v for v in map(_number, values) if v is not None]
    return pick(numbers) if numbers else None


def seed_statistics(rows: list[dict[str, Any]], column: str) -> dict[str, Any]:
    """The seed's seven keys for a set of rows, plus the ranking metric and its spread."""
    accuracy = [row.get("test_accuracy") for row in rows]
    ranking = [v for row in rows if (v := _number(row.get(column))) is not None]
    best = ranked(rows, column)[0]
    return {
        "num_experiments": len(rows),
        "avg_test_accuracy": _mean(accuracy),
        "best_test_accuracy": _extreme(accuracy, max),
        "worst_test_accuracy": _extreme(accuracy, min),
        "avg_test_f1": _mean([row.get("test_f1_score") for row in rows]),
        "avg_inference_time_sec": _mean([row.get("profile_avg_time_sec") for row in rows]),
        "avg_throughput_samples_sec": _mean([row.get("profile_throughput_samples_sec") for row in rows]),
        f"avg_{column}": _mean(ranking),
        f"std_{column}": float(np.std(ranking, ddof=1)) if len(ranking) > 1 else None,
        f"best_{column}": _extreme(ranking, max),
        "best_run": best.get("run_name"),
    }


def _interval(interval: stats.Interval | None, confidence: float) -> dict[str, Any] | None:
    if interval is None:
        return None
    return {"estimate": interval.mean, "spread": interval.spread, "ci_low": interval.low,
            "ci_high": interval.high, "ci_level": confidence, "seeds": interval.n, "method": interval.method}


def _recommendation(data: DataStudy, model: str, rec: Any, settings: Settings) -> dict[str, Any]:
    decision = rec.decision
    found = spent.spent(model, data.model_groups(model))
    step = spent.next_step(data.model_groups(model), decision)
    return {
        "recommended_resolution": rec.resolution, "best_resolution": rec.best_resolution,
        "decided": rec.decided, "non_inferior": list(rec.non_inferior), "undecided": list(rec.undecided),
        "statement": rec.statement, "warnings": list(rec.warnings), "pareto_optimal": list(rec.pareto),
        "pareto_axes": [settings.metric, *rec.pareto_axes],
        "level_one_sided": decision.level if decision else None,
        "winners_curse_optimism": decision.optimism if decision else None,
        "best_share_of_resamples": decision.best_share if decision else None,
        "cost": {"runs": found.runs, "seconds": found.seconds, "timed_runs": found.timed,
                 "seeds_per_resolution": {str(res): n for res, n in found.seeds.items()}, "k": found.k,
                 "grid_runs": found.grid_runs, "grid_seconds": found.grid_seconds,
                 "devices": list(found.devices)},
        "more_seeds": ({"resolutions": list(step.resolutions), "seeds": step.seeds, "runs": step.runs,
                        "seconds": step.seconds} if step is not None else None),
    }


def _data_summary(data: DataStudy, settings: Settings) -> dict[str, Any]:
    pairs = []
    for (model, res), group in data.groups.items():
        entry: dict[str, Any] = {
            "model": model, "resolution": res, "seeds": group.seeds,
            **{metric: _interval(group.intervals[metric], settings.confidence) for metric in stats.METRICS},
            "f1_score": _interval(group.f1, settings.confidence), "accuracy": group.accuracy,
            "per_class_auroc": group.per_class_auroc,
            "per_class_average_precision": group.per_class_average_precision,
            "costs": group.costs, "cost_keys": group.cost_keys,
            "configuration": group.config,
            "degenerate_runs": [{"seed": run.seed, "run_name": run.record.run_name, "flags": run.flags}
                                for run in group.flagged],
        }
        comparison = data.comparisons.get((model, res))
        if comparison is not None:
            paired = comparison.paired
            entry["vs_best"] = {
                "metric": comparison.metric, "best_resolution": comparison.best_resolution,
                "paired_seeds": list(comparison.seeds),
                "difference": paired.difference if paired else None,
                "ci_low": paired.low if paired else None, "ci_high": paired.high if paired else None,
                "pvalue_holm": comparison.pvalue_holm, "margin": comparison.margin,
                "inferiority_pvalue_holm": comparison.inferiority_p_holm,
                "noninferiority_pvalue": comparison.noninferiority_p,
                "noninferiority_pvalue_holm": comparison.noninferiority_p_holm,
                "status": comparison.status,
                "power80_test_images": comparison.decisive_images,
                "power80_seeds": comparison.decisive_seeds,
                "mcnemar_plain_accuracy_pvalue": comparison.mcnemar.pvalue if comparison.mcnemar else None,
                "mcnemar_seed": comparison.mcnemar_seed,
                "note": comparison.reason or None,
            }
        pairs.append(entry)
    cross = {}
    if data.cross_res is not None:
        cross = {model: {str(train): {str(test): value for test, value in row.items()}
                         for train, row in data.cross_res.matrix(model).items()}
                 for model in data.cross_res.models()}
    return {
        "models": data.models, "resolutions": data.resolutions, "classes": data.classes,
        "by_model_resolution": pairs,
        "recommendations": {
            model: _recommendation(data, model, rec, settings)
            for model, rec in data.recommendations.items()},
        "configurations": ({"keys": data.configs.keys, "linked_to_resolution": data.configs.linked,
                            "warnings": data.configs.warnings} if data.configs is not None else {}),
        "runs": [{"model": run.model, "resolution": run.record.resolution, "seed": run.seed,
                  "run_name": run.record.run_name, "identity": run.record.identity.digest,
                  "configuration": run.config, "degenerate": run.flags} for run in data.runs],
        "highest_vs_lowest_resolution": {
            model: {"high": found.high_resolution, "low": found.low_resolution, "seeds": list(found.seeds),
                    "differences": {name: {"difference": d.difference, "ci_low": d.low, "ci_high": d.high,
                                           "pvalue": d.pvalue, "pvalue_holm": found.pvalues_holm.get(name)}
                                    for name, d in found.differences.items()}}
            for model, found in data.extremes.items()},
        "equal_training_cost": {
            model: [{"budget_of": budget.reference, "axis": budget.axis, "budget": budget.budget,
                     "best_resolution": budget.best,
                     "reached": {str(res): value for res, value in budget.reached.items()}}
                    for budget in found]
            for model, found in data.budgets.items()},
        "cost_scaling": {model: {name: {"a": fit.a, "k": fit.k, "r2": fit.r2, "points": fit.n}
                                 for name, fit in fits.items()} for model, fits in data.scaling.items()},
        "cross_resolution": cross,
    }


def summary(study: Study, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """``results_summary.json``: the seed's keys first, then per data set the intervals,
    comparisons and answers."""
    settings = study.settings
    column = f"test_{settings.metric}"
    by_model = {m: seed_statistics([r for r in rows if r["model"] == m], column) for m in study.models}
    by_res = {str(res): seed_statistics([r for r in rows if int(r["resolution"]) == res], column)
              for res in study.resolutions}
    top = [{"model": r["model"], "resolution": r["resolution"], "test_accuracy": r.get("test_accuracy"),
            "test_f1_score": r.get("test_f1_score"),
            "test_balanced_accuracy": r.get("test_balanced_accuracy"),
            "test_macro_auroc": r.get("test_macro_auroc"), "seed": r.get("seed"),
            "data_name": r.get("data_name")}
           for r in ranked(rows, column)[:5]]
    return {
        "generated_at": dt.datetime.now().isoformat(),
        "total_experiments": len(rows),
        "models": study.models,
        "resolutions": study.resolutions,
        "statistics": {"by_model": by_model, "by_resolution": by_res},
        "top_5_results": top,
        "ranking_metric": column,
        "settings": {"metric": settings.metric, "margin": settings.margin, "confidence": settings.confidence,
                     "n_resamples": settings.n_resamples, "bootstrap_seed": settings.seed,
                     "looks": settings.looks},
        "data_sets": {name: _data_summary(data, settings) for name, data in study.data_sets.items()},
        "invalid_files": study.invalid,
        "notes": study.notes,
    }


def _fmt(value: Any, spec: str = ".4f") -> str:
    number = _number(value)
    return format(number, spec) if number is not None else "n/a"


def _block(title: str, rule: str = "=") -> list[str]:
    return ["", rule * 80, title, rule * 80]


def detailed_report(study: Study, rows: list[dict[str, Any]]) -> str:
    """``detailed_report.txt`` in the seed's layout, ranked by the study's metric."""
    column = f"test_{study.settings.metric}"
    label = study.settings.metric_label
    order = ranked(rows, column)
    lines = ["=" * 80, "RESOMAP - DETAILED RESULTS REPORT", "=" * 80,
             f"Generated: {dt.datetime.now():%Y-%m-%d %H:%M:%S}",
             f"Total Experiments: {len(rows)}",
             f"Models: {', '.join(study.models)}",
             f"Resolutions: {', '.join(map(str, study.resolutions))}",
             f"Data sets: {', '.join(study.data_sets)}",
             f"Ranked by: test {label} ({column})"]
    lines += _block("TOP 10 BEST RESULTS")
    for rank, row in enumerate(order[:10], 1):
        seed = f" seed {row.get('seed')}" if row.get("seed") else ""
        data = f" [{row.get('data_name')}]" if len(study.data_sets) > 1 else ""
        lines.append(f"{rank:2d}. {row['model']} @ {row['resolution']}px{seed}{data} | "
                     f"Balanced Accuracy: {_fmt(row.get('test_balanced_accuracy'))} | "
                     f"Macro AUROC: {_fmt(row.get('test_macro_auroc'))} | "
                     f"Accuracy: {_fmt(row.get('test_accuracy'))} | "
                     f"F1: {_fmt(row.get('test_f1_score'))} | Val Loss: {_fmt(row.get('best_val_loss'))}")
    for title, key, values in (("RESULTS BY MODEL", "model", study.models),
                               ("RESULTS BY RESOLUTION", "resolution", study.resolutions)):
        lines += _block(title)
        for value in values:
            mine = [row for row in order if row[key] == value]
            found = seed_statistics(mine, column)
            best = mine[0]
            where = f"@ {best['resolution']}px" if key == "model" else f"({best['model']})"
            lines += [f"\n{value}{'px' if key == 'resolution' else ''}:",
                      f"  Experiments: {found['num_experiments']}",
                      f"  Average {label}: {_fmt(found[f'avg_{column}'])}",
                      f"  Best {label}: {_fmt(best.get(column))} {where}",
                      f"  Average Accuracy: {_fmt(found['avg_test_accuracy'])}",
                      f"  Best Accuracy: {_fmt(found['best_test_accuracy'])}",
                      f"  Average F1: {_fmt(found['avg_test_f1'])}",
                      f"  Average Inference Time: {_fmt(found['avg_inference_time_sec'])} s per batch"]
            if key == "resolution":
                lines.append(f"  Best Model: {best['model']}")
            else:
                for name, data in study.data_sets.items():
                    for label, rec in data.recommendations.items():
                        if label != value and not label.startswith(f"{value} ["):
                            continue
                        where = f" ({name})" if len(study.data_sets) > 1 else ""
                        config = label[len(value):].strip()
                        where += f" {config}" if config else ""
                        chosen = f"{rec.resolution}px" if rec.resolution is not None else "none"
                        decided = "" if rec.decided else " (not a decision)"
                        lines.append(f"  Recommended Resolution{where}: {chosen}{decided}")
    lines += _block("DETAILED RESULTS TABLE")
    header = (f"{'Model':<22}{'Res':>6}{'Seed':>6}{'BalAcc':>9}{'AUROC':>9}{'Acc':>9}{'Prec':>9}{'Recall':>9}"
              f"{'F1':>9}{'ValLoss':>9}{'Time(s)':>10}{'Img/s':>10}")
    lines += [header, "-" * len(header)]
    for row in rows:
        lines.append(f"{row['model']:<22}{row['resolution']:>6}{row.get('seed', 0):>6}"
                     f"{_fmt(row.get('test_balanced_accuracy')):>9}{_fmt(row.get('test_macro_auroc')):>9}"
                     f"{_fmt(row.get('test_accuracy')):>9}"
                     f"{_fmt(row.get('test_precision')):>9}{_fmt(row.get('test_recall')):>9}"
                     f"{_fmt(row.get('test_f1_score')):>9}{_fmt(row.get('best_val_loss')):>9}"
                     f"{_fmt(row.get('profile_avg_time_sec')):>10}"
                     f"{_fmt(row.get('profile_throughput_samples_sec'), '.1f'):>10}")
    if study.invalid:
        lines += _block("IGNORED FILES (not valid results)")
        lines += [f"  {problem}" for problem in study.invalid]
    lines += ["", "=" * 80, "End of Report", "=" * 80, ""]
    return "\n".join(lines)


def write_aggregates(results_dir: str | Path, evaluate_cross_res: bool = True, digests: Any = None,
                     metric: str = "balanced_accuracy", margin: float = 0.02, strict: bool = False,
                     **settings: Any) -> list[Path]:
    """Rebuild every sweep-level file from the run records; returns what was written.

    Writes ``all_results.csv``, ``results_summary.json``, ``detailed_report.txt``, ``report.md``,
    ``report.html`` and ``plots/``. ``evaluate_cross_res=False`` uses cached train x test
    resolution evaluations only. ``metric`` and ``margin`` (``report.metric``/``report.margin``)
    choose the metric that drives the recommendation and the non-inferiority margin; other
    ``report.*`` keys (confidence, n_resamples, seed, looks) pass through ``settings``.
    ``digests`` (identity digests) restricts the study to those runs, e.g. one sweep's own;
    None: every run in the folder.

    A report section that cannot be built does not cost the others: every file is written,
    the report ends with the sections that failed, and then
    :class:`resomap.study.failures.ReportIncomplete` is raised (the caller exits non-zero).
    ``strict=True`` (tests) raises the section's own error at once instead.
    """
    from resomap.study.failures import ReportIncomplete
    from resomap.study.report import write_report

    chosen = check_settings(metric, margin, **settings)
    results_dir = Path(results_dir)
    study = build_study(results_dir, evaluate_cross_res=evaluate_cross_res, settings=chosen,
                        digests=None if digests is None else set(digests))
    columns, rows = results_table(study.runs)
    written = [results_dir / "all_results.csv"]
    write_csv(written[0], rows, columns)
    if not rows:
        return written
    written.append(results_dir / "results_summary.json")
    write_json(written[-1], summary(study, rows))
    written.append(results_dir / "detailed_report.txt")
    atomic_write_text(written[-1], detailed_report(study, rows))
    report = write_report(study, strict=strict)
    written += report.files
    if report.failures:
        raise ReportIncomplete(written, report.failures)
    return written
