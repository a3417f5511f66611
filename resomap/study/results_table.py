"""``all_results.csv``: one row per run in the seed study's columns, and the seed's statistics
over a set of rows (ranked by the study's metric), shared by the summary and the text report."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from resomap.study.cost_figures import number as _number
from resomap.study.runs import RunData

# The seed study's columns, in its order; new columns follow them.
SEED_COLUMNS = (
    "model", "resolution", "timestamp", "best_val_loss", "test_loss", "test_accuracy",
    "test_precision", "test_recall", "test_f1_score", "profile_avg_time_sec",
    "profile_std_time_sec", "profile_min_time_sec", "profile_max_time_sec",
    "profile_throughput_samples_sec", "profile_peak_cpu_memory_mb",
    "profile_gpu_memory_allocated_mib", "profile_gpu_memory_reserved_mib",
    "profile_gpu_memory_peak_mib",
)
SUMMARY_KEYS = ("num_experiments", "avg_test_accuracy", "best_test_accuracy", "worst_test_accuracy",
                "avg_test_f1", "avg_inference_time_sec", "avg_throughput_samples_sec")


def _flatten(prefix: str, value: Any, row: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(f"{prefix}_{key}" if prefix else str(key), item, row)
    elif not isinstance(value, list):
        row[prefix] = value


def record_row(run: RunData) -> dict[str, Any]:
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
    rows = [record_row(run) for run in runs]
    extra = sorted({key for row in rows for key in row} - set(SEED_COLUMNS) - {"seed"})
    return [*SEED_COLUMNS, "seed", *extra], rows


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

