"""The study on real tiny training runs: degenerate runs flagged from real records, and a sweep
over the learning rate answered once per learning rate."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_SPEC

from resomap.data.synthetic import generate
from resomap.run import record as records
from resomap.study import degenerate
from resomap.study.aggregate import write_aggregates
from resomap.study.decision_settings import Settings
from resomap.study.study import build_study

pytestmark = pytest.mark.slow
FAST = ["logger=csv", "explain=none", "callbacks.profile.warmup_runs=1", "callbacks.profile.timed_runs=2"]


def _csv(results: Path) -> list[dict[str, str]]:
    with open(results / "all_results.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_degenerate_flags_of_real_runs_match_their_predictions(train_cli, tmp_path: Path):
    # Five test images per class, so every class can be flagged; two epochs of a tiny model.
    spec = {**TINY_SPEC, "n_test": 35}
    root = generate(tmp_path / "data35", workers=1, **spec)
    completed = train_cli("-m", *FAST, f"data.root={root}", "data.generator.n_test=35", "model=tiny_cnn",
                          "res=32,48", "trainer.max_epochs=2")
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = tmp_path / "results"
    study = build_study(results, evaluate_cross_res=False, settings=Settings(n_resamples=200))
    runs = [run for data in study.data_sets.values() for run in data.runs]
    assert len(runs) == 2
    for run in runs:
        saved = records.read_predictions(results, run.record)
        labels, predicted = np.asarray(saved["labels"]), np.asarray(saved["predictions"])
        expected = []
        for cls, name in enumerate(run.record.classes):
            support = int(np.sum(labels == cls))
            if support >= 5 and not np.any((labels == cls) & (predicted == cls)):
                expected.append(name)
        named = [flag.split(" (")[0].split()[-1] for flag in run.flags if flag.startswith("never")]
        assert named == expected
        majority = np.bincount(labels).max() / labels.size
        assert any(flag.startswith("plain accuracy") for flag in run.flags) == (np.mean(labels == predicted)
                                                                                < majority)
        first = run.record.best_epoch == 0
        assert any(flag.startswith("best epoch is the first") for flag in run.flags) == first
        assert run.flags == degenerate.run_flags(run.record, labels, predicted)
    rows = {(row["resolution"], row["seed"]): row["degenerate"] for row in _csv(results)}
    for run in runs:
        assert rows[(str(run.record.resolution), str(run.seed))] == "; ".join(run.flags)
    summary = json.loads((results / "results_summary.json").read_text())
    listed = {(r["resolution"], r["seed"]): r["degenerate"] for data in summary["data_sets"].values()
              for r in data["runs"]}
    assert listed == {(run.record.resolution, run.seed): run.flags for run in runs}


def test_a_sweep_over_the_learning_rate_is_answered_per_learning_rate(train_cli, tmp_path: Path):
    completed = train_cli("-m", *FAST, "model=tiny_cnn", "res=32,48", "optimizer.lr=0.001,0.01")
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = tmp_path / "results"
    write_aggregates(results, evaluate_cross_res=False, n_resamples=200, strict=True)
    summary = json.loads((results / "results_summary.json").read_text())
    data = next(iter(summary["data_sets"].values()))
    answers = data["recommendations"]
    assert sorted(answers) == ["tiny_cnn [optimizer.lr=0.001]", "tiny_cnn [optimizer.lr=0.01]"]
    assert data["configurations"]["keys"] == {"tiny_cnn": ["optimizer.lr"]}
    for answer in answers.values():
        assert answer["cost"]["seeds_per_resolution"] == {"32": 1, "48": 1}
        assert answer["decided"] is False  # one seed per resolution
    pairs = {(entry["model"], entry["resolution"]) for entry in data["by_model_resolution"]}
    assert pairs == {(label, res) for label in answers for res in (32, 48)}
    rows = _csv(results)
    expected = ["optimizer.lr=0.001"] * 2 + ["optimizer.lr=0.01"] * 2
    assert sorted(row["configuration"] for row in rows) == expected
    markdown = (results / "report.md").read_text()
    for lr in ("0.001", "0.01"):
        assert f"| tiny\\_cnn \\[optimizer.lr={lr}\\] | **" in markdown  # its own row in the answer table
    assert "differ in optimizer.lr" in markdown
