"""Results written before keys were named for their units stay readable under the new names:
fvcore's ``flops``/``gflops`` (multiply-adds) as ``macs``/``gmacs``, GPU ``*_mb`` (MiB) as ``*_mib``."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from resomap.run import record as records
from resomap.run import record_schema as schema
from resomap.run import record_write as writer
from resomap.run.identity import RunIdentity
from resomap.study import costs
from resomap.study.cost_figures import figure_value
from resomap.study.results_table import SEED_COLUMNS, record_row
from resomap.study.runs import RunData

OLD_PROFILING = {"median_time_sec": 0.01, "peak_cpu_memory_mb": 900.0, "cpu_memory_increase_mb": 12.0,
                 "gpu_memory_peak_mb": 48.0, "gpu_memory_allocated_mb": 60.0, "gpu_memory_reserved_mb": 64.0,
                 "data_cache_gpu_mb": 300.0,
                 "training": {"gpu_memory_peak_mb": 200.0, "gpu_memory_peak_reserved_mb": 256.0,
                              "peak_cpu_memory_mb": 1000.0}}
OLD_COMPLEXITY = {"flops": 2_000_000, "gflops": 0.002, "mult_adds": 1_900_000, "memory_mb": 1.5,
                  "conventions": {"flops": "fvcore", "memory_mb": "MB = 10^6 bytes"}}


def _old_record_file(results: Path) -> Path:
    identity = RunIdentity("tiny_cnn", 32, 0, "synthetic", "d0", "t0")
    metrics = schema.TestMetrics(loss=1.0, accuracy=0.5, precision=0.5, recall=0.5, f1_score=0.5,
                                 balanced_accuracy=0.5, per_class_recall={"a": 0.5, "b": 0.5},
                                 confusion_matrix=[[1, 1], [1, 1]], num_images=4)
    record = schema.RunRecord(identity=identity, timestamp="2026-01-01T00:00:00", classes=["a", "b"],
                              test_metrics=metrics, data=schema.DataInfo("synthetic", "/data", "d0"))
    path = writer.write_record(results, record)
    payload = json.loads(path.read_text())
    payload.update(profiling=OLD_PROFILING, complexity=OLD_COMPLEXITY)  # as written before the rename
    path.write_text(json.dumps(payload))
    return path


def test_a_record_with_the_old_key_names_is_read_under_the_new_ones(tmp_path: Path):
    path = _old_record_file(tmp_path)
    ((found_path, record),) = list(records.iter_records(tmp_path))
    assert found_path == path and not isinstance(record, Exception)
    assert record.complexity["macs"] == 2_000_000 and record.complexity["gmacs"] == 0.002
    assert record.complexity["conventions"] == {"macs": "fvcore", "memory_mb": "MB = 10^6 bytes"}
    assert "flops" not in record.complexity and "gflops" not in record.complexity
    assert record.profiling["gpu_memory_peak_mib"] == 48.0 and record.profiling["data_cache_gpu_mib"] == 300.0
    training = {"gpu_memory_peak_mib": 200.0, "gpu_memory_peak_reserved_mib": 256.0,
                "peak_cpu_memory_mb": 1000.0}
    assert record.profiling["training"] == training
    # Decimal MB (bytes / 10^6) keeps its name.
    assert record.profiling["peak_cpu_memory_mb"] == 900.0 and record.complexity["memory_mb"] == 1.5
    assert figure_value(record, "memory") == (48.0, "gpu_memory_peak_mib")
    assert figure_value(record, "macs") == (0.002, "macs")

    # all_results.csv's row of that record has the new columns, the seed's first.
    run = RunData(path, record, None, {"balanced_accuracy": 0.5, "accuracy": 0.5, "macro_auroc": None},
                  {}, {}, "record")
    row = record_row(run)
    gpu_columns = {"profile_gpu_memory_peak_mib", "profile_gpu_memory_allocated_mib",
                   "profile_gpu_memory_reserved_mib"}
    assert gpu_columns <= set(SEED_COLUMNS) and gpu_columns <= set(row)
    assert row["profile_gpu_memory_peak_mib"] == 48.0 and row["complexity_macs"] == 2_000_000
    assert not [key for key in row if key.endswith("flops") or key.endswith("gpu_mb") or "gpu_memory" in key
                and key.endswith("_mb")]


def test_a_cost_summary_with_the_old_key_names_is_read_under_the_new_ones(tmp_path: Path):
    old = {"model": "tiny_cnn", "family": "cnn", "resolution": 64, "num_classes": 7, "total_params": 1000,
           "trainable_params": 1000, "gflops": 0.25, "gmult_adds": 0.24, "memory_mb": 1.5}
    folder = tmp_path / "tiny_cnn" / "64"
    folder.mkdir(parents=True)
    (folder / costs.RECORD).write_text(json.dumps(old))
    assert costs.load_records(tmp_path)[0]["gmacs"] == 0.25
    written = costs.write_tables(tmp_path)
    assert tmp_path / "summary_gmacs.csv" in written
    with (tmp_path / "summary_gmacs.csv").open() as handle:
        header, row = list(csv.reader(handle))
    assert header[0].startswith("model [GMACs per image") and row == ["tiny_cnn", "0.25"]
    with (tmp_path / "model_summary_detailed.csv").open() as handle:
        assert "gmacs" in next(csv.reader(handle))
