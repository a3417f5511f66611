"""``python -m resomap.summarize`` as a user runs it: no training, no data, real files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from conftest import run_module

TABLES = ("summary_total_params", "summary_gmacs", "summary_mult_adds", "summary_memory_mb")


def _table(path: Path) -> tuple[list[str], dict[str, dict[str, float]]]:
    with path.open() as handle:
        reader = csv.reader(handle)
        header = next(reader)
        return header, {row[0]: dict(zip(header[1:], map(float, row[1:]))) for row in reader}


def _summarize(tmp_path: Path, *args: str, multirun: bool = False):
    paths = [f"paths.root_dir={tmp_path}", f"hydra.run.dir={tmp_path}/outputs",
             f"hydra.sweep.dir={tmp_path}/multirun"]
    return run_module("resomap.summarize", ["-m"] * multirun + [*paths, *args], cwd=tmp_path)


def test_tables_have_a_row_per_model_and_a_column_per_resolution(tmp_path: Path):
    completed = _summarize(tmp_path, "models=[tiny_cnn,resnet18]", "resolutions=[64,96]")
    assert completed.returncode == 0, completed.stderr[-3000:]
    summary = tmp_path / "summary"
    for stem in TABLES:
        header, rows = _table(summary / f"{stem}.csv")
        assert header[0].startswith("model [") and header[1:] == ["64", "96"]
        assert sorted(rows) == ["resnet18", "tiny_cnn"]
        assert all(value > 0 for row in rows.values() for value in row.values())
    _, params = _table(summary / "summary_total_params.csv")
    assert params["resnet18"]["64"] == params["resnet18"]["96"] == 11_180_103  # 7 classes
    _, gmacs = _table(summary / "summary_gmacs.csv")
    assert gmacs["tiny_cnn"]["96"] > gmacs["tiny_cnn"]["64"]
    assert "one multiply-add counts as one" in (summary / "summary_gmacs.csv").read_text()

    detailed = json.loads((summary / "model_summary_detailed.json").read_text())
    assert {(row["model"], row["resolution"]) for row in detailed["rows"]} == {
        (model, res) for model in ("tiny_cnn", "resnet18") for res in (64, 96)}
    assert set(detailed["conventions"]) >= {"macs", "mult_adds", "memory_mb"}
    with (summary / "model_summary_detailed.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 4
    text = (summary / "resnet18" / "96" / "architecture_summary.txt").read_text()
    assert "layer4.1.conv2 (Conv2d)" in text and "Estimated total size (MB)" in text


def test_multirun_jobs_add_up_to_one_table(tmp_path: Path):
    completed = _summarize(tmp_path, "models=tiny_cnn", "resolutions=32,48", multirun=True)
    assert completed.returncode == 0, completed.stderr[-3000:]
    header, rows = _table(tmp_path / "summary" / "summary_gmacs.csv")
    assert header[1:] == ["32", "48"] and list(rows) == ["tiny_cnn"]


def test_unknown_model_is_named(tmp_path: Path):
    completed = _summarize(tmp_path, "models=[resnet19]")
    assert completed.returncode == 2
    output = completed.stdout + completed.stderr
    assert "'resnet19' is not a model config" in output and "resnet18, resnet34" in output
