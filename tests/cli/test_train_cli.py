"""The training command end to end, as a user runs it: real subprocesses, real files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from resomap.device import resolve_precision

pytestmark = pytest.mark.slow

RESULT_KEYS = ("model", "resolution", "timestamp", "best_val_loss", "test_metrics", "seed",
               "best_epoch", "best_val_metrics", "epochs_run", "fit_time_sec", "precision",
               "device", "versions", "config", "identity", "classes", "data")
TEST_METRIC_KEYS = ("loss", "accuracy", "precision", "recall", "f1_score", "balanced_accuracy",
                    "per_class_recall", "confusion_matrix")


def _last_checkpoint(root: Path, run_name: str) -> Path:
    """The run's ``last.ckpt``, in the folder of its identity: checkpoints/{run_name}/{digest}/."""
    found = list((root / "checkpoints" / run_name).glob("*/last.ckpt"))
    assert len(found) == 1, found
    return found[0]


def _result(root: Path, name: str) -> dict:
    text = (root / "results" / "test_results" / f"{name}.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    return json.loads(text)


def test_multirun_writes_every_result(train_cli, tmp_path: Path):
    completed = train_cli("-m", "model=simple_cnn,tiny_cnn", "res=32,48")
    assert completed.returncode == 0, completed.stderr[-3000:]
    for model in ("simple_cnn", "tiny_cnn"):
        for res in (32, 48):
            result = _result(tmp_path, f"{model}_{res}")
            assert all(key in result for key in RESULT_KEYS)
            assert (result["model"], result["resolution"]) == (model, res)
            metrics = result["test_metrics"]
            assert all(key in metrics for key in TEST_METRIC_KEYS)
            assert 0 <= metrics["balanced_accuracy"] <= 1
            assert metrics["recall"] == pytest.approx(metrics["balanced_accuracy"])
            assert sum(map(sum, metrics["confusion_matrix"])) == 21
            assert result["best_val_loss"] is not None
            assert result["precision"] == resolve_precision("16-mixed", "cpu")  # bf16 where the CPU has it
            assert _last_checkpoint(tmp_path, f"{model}_{res}").is_file()
            assert (tmp_path / "results" / "test_results" / f"{model}_{res}.npz").is_file()
    header = (tmp_path / "results" / "all_results.csv").read_text().splitlines()[0]
    assert header.startswith("model,resolution,timestamp,best_val_loss,test_loss,test_accuracy")


def test_resume_continues_at_the_saved_step(train_cli, tmp_path: Path):
    first = train_cli("model=tiny_cnn", "res=32")
    assert first.returncode == 0, first.stderr[-3000:]
    checkpoint = _last_checkpoint(tmp_path, "tiny_cnn_32")
    steps_after_one_epoch = torch.load(checkpoint, weights_only=True)["global_step"]
    assert steps_after_one_epoch > 0

    second = train_cli("model=tiny_cnn", "res=32", "ckpt_path=last", "trainer.max_epochs=2")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Restoring states from the checkpoint" in second.stdout + second.stderr
    result = _result(tmp_path, "tiny_cnn_32")
    assert result["global_step"] == 2 * steps_after_one_epoch
    assert [row["epoch"] for row in result["history"]] == [0, 1]


def test_finished_run_is_skipped(train_cli, tmp_path: Path):
    assert train_cli("model=tiny_cnn", "res=32").returncode == 0
    again = train_cli("model=tiny_cnn", "res=32")
    assert again.returncode == 0
    assert "Skipping tiny_cnn_32" in again.stdout + again.stderr


def test_failing_combination_does_not_stop_the_sweep(train_cli, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-weights"))
    completed = train_cli("-m", "model=vgg11,tiny_cnn", "res=32", "model.pretrained=true",
                          env={"TORCH_HOME": str(tmp_path / "no-weights")})
    assert completed.returncode == 1
    output = completed.stdout + completed.stderr
    assert (tmp_path / "results" / "test_results" / "tiny_cnn_32.json").is_file()
    assert not (tmp_path / "results" / "test_results" / "vgg11_32.json").exists()
    assert "1 run(s) failed" in output and "vgg11_32" in output
    resume = next(line.strip() for line in output.splitlines()
                  if line.strip().startswith("python -m resomap.train"))
    assert "model=vgg11" in resume and "res=32" in resume and resume.endswith("ckpt_path=last")
    assert "tiny_cnn" not in resume


def test_mismatched_checkpoint_is_refused(train_cli, tmp_path: Path):
    assert train_cli("model=tiny_cnn", "res=32").returncode == 0
    other = _last_checkpoint(tmp_path, "tiny_cnn_32")
    refused = train_cli("model=tiny_cnn", "res=48", f"ckpt_path={other}")
    assert refused.returncode == 2
    assert refused.stderr.startswith(f"error: Refusing to resume {other}")
    assert "res: 32 -> 48" in refused.stderr and "Traceback" not in refused.stderr
    assert not (tmp_path / "results" / "test_results" / "tiny_cnn_48.json").exists()
