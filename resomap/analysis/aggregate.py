"""Flatten every per-run result into ``all_results.csv``: one row per run."""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Any

from resomap import results

log = logging.getLogger(__name__)

# The seed study's columns, in its order; new columns follow them.
SEED_COLUMNS = (
    "model", "resolution", "timestamp", "best_val_loss", "test_loss", "test_accuracy",
    "test_precision", "test_recall", "test_f1_score", "profile_avg_time_sec",
    "profile_std_time_sec", "profile_min_time_sec", "profile_max_time_sec",
    "profile_throughput_samples_sec", "profile_peak_cpu_memory_mb",
    "profile_gpu_memory_allocated_mb", "profile_gpu_memory_reserved_mb",
    "profile_gpu_memory_peak_mb",
)


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
    _flatten("profile", result.get("profiling", {}), row)
    _flatten("complexity", result.get("complexity", {}), row)
    for key in ("best_epoch", "epochs_run", "global_step", "fit_time_sec", "precision",
                "accelerator", "device", "num_devices", "config_fingerprint"):
        row[key] = result.get(key)
    _flatten("best", result.get("best_val_metrics", {}), row)
    return row


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


def results_table(runs: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    rows = [result_row(run) for run in runs]
    extra = sorted({key for row in rows for key in row} - set(SEED_COLUMNS))
    return [*SEED_COLUMNS, *extra], rows


def write_csv(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    results.atomic_write_text(path, buffer.getvalue())


def write_aggregates(results_dir: str | Path) -> list[Path]:
    """Rebuild the sweep-level files from the per-run results; returns what was written."""
    results_dir = Path(results_dir)
    runs, problems = load_results(results_dir)
    for problem in problems:
        log.warning("Ignored, not a valid result: %s", problem)
    columns, rows = results_table(runs)
    csv_path = results_dir / "all_results.csv"
    write_csv(csv_path, columns, rows)
    return [csv_path]
