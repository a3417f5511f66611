"""The sweep-level files of the seed study, rebuilt from the per-run results.

``all_results.csv`` (one row per run), ``results_summary.json`` and ``detailed_report.txt``
keep the seed's names, columns and layout; new figures are added after them. Runs are
ranked by test balanced accuracy (macro recall), the study's headline metric.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from resomap.io import atomic_write_text, write_json
from resomap.study.study import Study, build_study

# The seed study's columns, in its order; new columns follow them.
SEED_COLUMNS = (
    "model", "resolution", "timestamp", "best_val_loss", "test_loss", "test_accuracy",
    "test_precision", "test_recall", "test_f1_score", "profile_avg_time_sec",
    "profile_std_time_sec", "profile_min_time_sec", "profile_max_time_sec",
    "profile_throughput_samples_sec", "profile_peak_cpu_memory_mb",
    "profile_gpu_memory_allocated_mb", "profile_gpu_memory_reserved_mb",
    "profile_gpu_memory_peak_mb",
)
RANKING = "test_balanced_accuracy"
SUMMARY_KEYS = ("num_experiments", "avg_test_accuracy", "best_test_accuracy", "worst_test_accuracy",
                "avg_test_f1", "avg_inference_time_sec", "avg_throughput_samples_sec")


def _flatten(prefix: str, value: Any, row: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(f"{prefix}_{key}" if prefix else str(key), item, row)
    elif not isinstance(value, list):
        row[prefix] = value


def result_row(result: dict[str, Any]) -> dict[str, Any]:
    """One CSV row: scalars of the result, nested keys joined with ``_``."""
    row: dict[str, Any] = {
        "model": result["model"], "resolution": result["resolution"],
        "timestamp": result["timestamp"], "best_val_loss": result.get("best_val_loss"),
        "seed": result.get("seed", 0), "run_name": result.get("run_name"),
    }
    _flatten("test", result.get("test_metrics", {}), row)
    if row.get("test_balanced_accuracy") is None:
        row["test_balanced_accuracy"] = row.get("test_recall")  # macro recall, in seed results
    _flatten("profile", result.get("profiling", {}), row)
    _flatten("complexity", result.get("complexity", {}), row)
    for key in ("best_epoch", "epochs_run", "global_step", "fit_time_sec", "precision",
                "accelerator", "device", "num_devices", "config_fingerprint"):
        row[key] = result.get(key)
    _flatten("best", result.get("best_val_metrics", {}), row)
    data = result.get("data") or {}
    row["data_name"], row["data_fingerprint"] = data.get("name"), data.get("fingerprint")
    return row


def results_table(runs: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    """Columns (the seed's 18, then seed, then every other figure sorted) and rows."""
    rows = [result_row(run) for run in runs]
    extra = sorted({key for row in rows for key in row} - set(SEED_COLUMNS) - {"seed"})
    return [*SEED_COLUMNS, "seed", *extra], rows


def write_csv(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def ranked(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows best first by balanced accuracy, then accuracy; rows without it last."""
    def key(row: dict[str, Any]) -> tuple[float, float]:
        score, accuracy = row.get(RANKING), row.get("test_accuracy")
        return (-score if score is not None else math.inf, -accuracy if accuracy is not None else math.inf)
    return sorted(rows, key=key)


def _mean(values: list[Any]) -> float | None:
    numbers = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return float(np.mean(numbers)) if numbers else None


def _extreme(values: list[Any], pick: Any) -> float | None:
    numbers = [float(v) for v in values if isinstance(v, (int, float))]
    return pick(numbers) if numbers else None


def seed_statistics(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The seed's seven keys for a set of rows, plus balanced accuracy and its spread."""
    accuracy = [row.get("test_accuracy") for row in rows]
    balanced = [row.get(RANKING) for row in rows if row.get(RANKING) is not None]
    best = ranked(rows)[0]
    return {
        "num_experiments": len(rows),
        "avg_test_accuracy": _mean(accuracy),
        "best_test_accuracy": _extreme(accuracy, max),
        "worst_test_accuracy": _extreme(accuracy, min),
        "avg_test_f1": _mean([row.get("test_f1_score") for row in rows]),
        "avg_inference_time_sec": _mean([row.get("profile_avg_time_sec") for row in rows]),
        "avg_throughput_samples_sec": _mean([row.get("profile_throughput_samples_sec") for row in rows]),
        "avg_test_balanced_accuracy": _mean(balanced),
        "std_test_balanced_accuracy": float(np.std(balanced, ddof=1)) if len(balanced) > 1 else None,
        "best_test_balanced_accuracy": _extreme(balanced, max),
        "best_run": best.get("run_name"),
    }


def _interval(interval: Any) -> dict[str, Any] | None:
    if interval is None:
        return None
    return {"mean": interval.mean, "spread": interval.spread, "ci_low": interval.low,
            "ci_high": interval.high, "ci_level": 0.95, "n": interval.n, "method": interval.method}


def summary(study: Study, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """``results_summary.json``: the seed's keys first, then CIs, comparisons and answers."""
    by_model = {m: seed_statistics([r for r in rows if r["model"] == m]) for m in study.models}
    by_res = {str(res): seed_statistics([r for r in rows if int(r["resolution"]) == res])
              for res in study.resolutions}
    by_pair = []
    for (model, res), group in study.groups.items():
        comparison = study.comparisons.get((model, res))
        entry: dict[str, Any] = {
            "model": model, "resolution": res, "seeds": group.seeds,
            "balanced_accuracy": _interval(group.balanced_accuracy), "f1_score": _interval(group.f1),
            "accuracy": group.accuracy, "costs": group.costs, "cost_keys": group.cost_keys,
        }
        if comparison is not None:
            entry["vs_best"] = {
                "best_resolution": comparison.best_resolution, "paired_seeds": list(comparison.seeds),
                "difference": comparison.paired.difference if comparison.paired else None,
                "ci_low": comparison.paired.low if comparison.paired else None,
                "ci_high": comparison.paired.high if comparison.paired else None,
                "bootstrap_pvalue": comparison.paired.pvalue if comparison.paired else None,
                "mcnemar_pvalue": comparison.mcnemar.pvalue if comparison.mcnemar else None,
                "significantly_below": comparison.paired.significantly_below if comparison.paired else None,
                "note": comparison.reason or None,
            }
        by_pair.append(entry)
    top = [{"model": r["model"], "resolution": r["resolution"], "test_accuracy": r.get("test_accuracy"),
            "test_f1_score": r.get("test_f1_score"), "test_balanced_accuracy": r.get(RANKING),
            "seed": r.get("seed")} for r in ranked(rows)[:5]]
    return {
        "generated_at": dt.datetime.now().isoformat(),
        "total_experiments": len(rows),
        "models": study.models,
        "resolutions": study.resolutions,
        "statistics": {"by_model": by_model, "by_resolution": by_res, "by_model_resolution": by_pair},
        "top_5_results": top,
        "ranking_metric": RANKING,
        "recommendations": {
            model: {"recommended_resolution": rec.resolution, "best_resolution": rec.best_resolution,
                    "not_significantly_below_best": list(rec.candidates), "pareto_optimal": list(rec.pareto),
                    "pareto_axes": ["balanced_accuracy", *rec.pareto_axes]}
            for model, rec in study.recommendations.items()},
        "cost_scaling": {model: {name: {"a": fit.a, "k": fit.k, "r2": fit.r2, "points": fit.n}
                                 for name, fit in fits.items()} for model, fits in study.scaling.items()},
        "cross_resolution": {model: {str(train): {str(test): value for test, value in row.items()}
                                     for train, row in study.cross_res.matrix(model).items()}
                             for model in study.cross_res.models()},
        "invalid_files": study.invalid,
        "notes": study.notes,
    }


def _fmt(value: Any, spec: str = ".4f") -> str:
    return format(value, spec) if isinstance(value, (int, float)) and not isinstance(value, bool) else "n/a"


def _block(title: str, rule: str = "=") -> list[str]:
    return ["", rule * 80, title, rule * 80]


def detailed_report(study: Study, rows: list[dict[str, Any]]) -> str:
    """``detailed_report.txt`` in the seed's layout, ranked by balanced accuracy."""
    order = ranked(rows)
    lines = ["=" * 80, "RESOMAP - DETAILED RESULTS REPORT", "=" * 80,
             f"Generated: {dt.datetime.now():%Y-%m-%d %H:%M:%S}",
             f"Total Experiments: {len(rows)}",
             f"Models: {', '.join(study.models)}",
             f"Resolutions: {', '.join(map(str, study.resolutions))}",
             "Ranked by: test balanced accuracy (macro recall over all classes)"]
    lines += _block("TOP 10 BEST RESULTS")
    for rank, row in enumerate(order[:10], 1):
        seed = f" seed {row.get('seed')}" if row.get("seed") else ""
        lines.append(f"{rank:2d}. {row['model']} @ {row['resolution']}px{seed} | "
                     f"Balanced Accuracy: {_fmt(row.get(RANKING))} | "
                     f"Accuracy: {_fmt(row.get('test_accuracy'))} | "
                     f"F1: {_fmt(row.get('test_f1_score'))} | Val Loss: {_fmt(row.get('best_val_loss'))}")
    for title, field, values, other in (("RESULTS BY MODEL", "model", study.models, "resolution"),
                                        ("RESULTS BY RESOLUTION", "resolution", study.resolutions, "model")):
        lines += _block(title)
        for value in values:
            mine = [row for row in order if row[field] == value]
            stats = seed_statistics(mine)
            best = mine[0]
            where = f"@ {best['resolution']}px" if other == "resolution" else f"({best['model']})"
            lines += [f"\n{value}{'px' if field == 'resolution' else ''}:",
                      f"  Experiments: {stats['num_experiments']}",
                      f"  Average Balanced Accuracy: {_fmt(stats['avg_test_balanced_accuracy'])}",
                      f"  Best Balanced Accuracy: {_fmt(best.get(RANKING))} {where}",
                      f"  Average Accuracy: {_fmt(stats['avg_test_accuracy'])}",
                      f"  Best Accuracy: {_fmt(stats['best_test_accuracy'])}",
                      f"  Average F1: {_fmt(stats['avg_test_f1'])}",
                      f"  Average Inference Time: {_fmt(stats['avg_inference_time_sec'])} s per batch"]
            if field == "resolution":
                lines.append(f"  Best Model: {best['model']}")
            elif value in study.recommendations:
                lines.append(f"  Recommended Resolution: {study.recommendations[value].resolution}px")
    lines += _block("DETAILED RESULTS TABLE")
    header = (f"{'Model':<22}{'Res':>6}{'Seed':>6}{'BalAcc':>9}{'Acc':>9}{'Prec':>9}{'Recall':>9}"
              f"{'F1':>9}{'ValLoss':>9}{'Time(s)':>10}{'Img/s':>10}")
    lines += [header, "-" * len(header)]
    for row in rows:
        lines.append(f"{row['model']:<22}{row['resolution']:>6}{row.get('seed', 0):>6}"
                     f"{_fmt(row.get(RANKING)):>9}{_fmt(row.get('test_accuracy')):>9}"
                     f"{_fmt(row.get('test_precision')):>9}{_fmt(row.get('test_recall')):>9}"
                     f"{_fmt(row.get('test_f1_score')):>9}{_fmt(row.get('best_val_loss')):>9}"
                     f"{_fmt(row.get('profile_avg_time_sec')):>10}"
                     f"{_fmt(row.get('profile_throughput_samples_sec'), '.1f'):>10}")
    if study.invalid:
        lines += _block("IGNORED FILES (not valid results)")
        lines += [f"  {problem}" for problem in study.invalid]
    lines += ["", "=" * 80, "End of Report", "=" * 80, ""]
    return "\n".join(lines)


def write_aggregates(results_dir: str | Path, evaluate_cross_res: bool = True) -> list[Path]:
    """Rebuild every sweep-level file from the per-run results; returns what was written.

    Writes ``all_results.csv``, ``results_summary.json``, ``detailed_report.txt``,
    ``report.md``, ``report.html`` and ``plots/``. ``evaluate_cross_res=False`` uses cached
    train x test resolution evaluations only and computes no new ones.
    """
    from resomap.study.report import write_report

    results_dir = Path(results_dir)
    study = build_study(results_dir, evaluate_cross_res=evaluate_cross_res)
    columns, rows = results_table(study.runs)
    written = [results_dir / "all_results.csv"]
    write_csv(written[0], columns, rows)
    if not rows:
        return written
    written.append(results_dir / "results_summary.json")
    write_json(written[-1], summary(study, rows))
    written.append(results_dir / "detailed_report.txt")
    atomic_write_text(written[-1], detailed_report(study, rows))
    written += write_report(study)
    return written
