"""``hparams_search=lr_optuna``: Optuna tries learning rates and weight decays, each trial an
ordinary run, and the best is chosen on the validation metric, never on the test images."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml
from conftest import run_module, tiny_overrides

from resomap.run.record_schema import read_record

pytestmark = pytest.mark.slow

TRIALS = 3


def test_optuna_chooses_the_trial_whose_best_checkpoint_scores_highest_on_validation(
        tmp_path: Path, tiny_data_root: Path):
    result = run_module("resomap.train", [
        *tiny_overrides(tmp_path, tiny_data_root), "hparams_search=lr_optuna", "model=tiny_cnn", "res=32",
        "explain=none", "logger=none", "trainer.max_epochs=2", f"hydra.sweeper.n_trials={TRIALS}",
        f"hydra.sweeper.sampler.n_startup_trials={TRIALS}"], cwd=tmp_path)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]

    records = [read_record(path) for path in (tmp_path / "results" / "runs").glob("*/record.json")]
    assert len(records) == TRIALS
    tried = {(record.config["optimizer"]["lr"], record.config["optimizer"]["weight_decay"]): record
             for record in records}
    assert len(tried) == TRIALS, "every trial is its own run, with its own values"
    for lr, decay in tried:
        assert 1e-4 <= lr <= 1e-2 and 1e-6 <= decay <= 1e-2

    chosen = yaml.safe_load((tmp_path / "multirun" / "optimization_results.yaml").read_text())
    validation = {values: record.best_val_metrics["val_balanced_accuracy"]
                  for values, record in tried.items()}
    assert math.isclose(chosen["best_value"], max(validation.values()), rel_tol=1e-9)
    best = (chosen["best_params"]["optimizer.lr"], chosen["best_params"]["optimizer.weight_decay"])
    assert math.isclose(validation[best], max(validation.values()), rel_tol=1e-9)


def test_a_test_metric_is_refused_as_the_objective_before_any_training(tmp_path: Path, tiny_data_root: Path):
    result = run_module("resomap.train", [
        *tiny_overrides(tmp_path, tiny_data_root), "hparams_search=lr_optuna", "model=tiny_cnn", "res=32",
        "explain=none", "logger=none", "hydra.sweeper.n_trials=1", "objective=test_balanced_accuracy"],
        cwd=tmp_path)
    assert result.returncode == 2, (result.stdout + result.stderr)[-3000:]
    assert "objective='test_balanced_accuracy' must name a validation metric" in result.stderr
    assert not (tmp_path / "checkpoints").exists()
