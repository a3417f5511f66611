"""A sweep SIGKILLed at random moments of its whole life, from its first second in an empty
project folder to its end-of-sweep report, and re-run with ``ckpt_path=last`` after each kill,
ends as an uninterrupted sweep would: complete records, full training, one FINISHED MLflow run
per run, a report, and nothing left unusable."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_SPEC
from mlflow.tracking import MlflowClient

from resomap.run import record as records

pytestmark = pytest.mark.slow

EPOCHS = 4
STEPS_PER_EPOCH = 3  # 42 training images in batches of 16
RESOLUTIONS = (32, 40)
LEARNING_RATES = (0.001, 0.01)

# Over the resolution and a key other than model and resolution: two runs share each run name.
GRID = (f"res={','.join(map(str, RESOLUTIONS))}", f"optimizer.lr={','.join(map(str, LEARNING_RATES))}")


def _sweep(root: Path, grid: tuple[str, ...] = GRID, sweep_dir: str = "multirun") -> list[str]:
    generator = [f"data.generator.{key}={value}" for key, value in TINY_SPEC.items()]
    return [sys.executable, "-m", "resomap.train", "-m", f"paths.root_dir={root}", *generator,
            "data.num_workers=0", "data.batch_size=16", "data.eval_batch_size=32",
            f"trainer.max_epochs={EPOCHS}", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false", "explain=none", "callbacks.profile.warmup_runs=1",
            "callbacks.profile.timed_runs=2", f"hydra.sweep.dir={root}/{sweep_dir}", "model=tiny_cnn",
            *grid, "ckpt_path=last"]


def _start(root: Path, grid: tuple[str, ...] = GRID, sweep_dir: str = "multirun") -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RESOMAP_ROOT", None)
    # Its own process group, so the kill reaches every process the sweep started.
    return subprocess.Popen(_sweep(root, grid, sweep_dir), cwd=root, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _kill_after(root: Path, seconds: float, grid: tuple[str, ...] = GRID) -> bool:
    """Run the sweep and SIGKILL it after ``seconds``; False if it finished first."""
    process = _start(root, grid)
    deadline = time.monotonic() + seconds
    while process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if process.poll() is not None:
        process.communicate()
        return False
    os.killpg(process.pid, signal.SIGKILL)
    process.communicate()
    return True


def _assert_whole(root: Path, record: records.RunRecord, client: MlflowClient, experiment: str) -> None:
    """A complete run: full training, its own predictions, one FINISHED MLflow run, whole checkpoints."""
    assert record.epochs_run == EPOCHS
    assert [row["epoch"] for row in record.history] == list(range(EPOCHS))
    assert record.global_step == EPOCHS * STEPS_PER_EPOCH
    folder = records.run_dir(root / "results", record)
    with np.load(folder / "predictions.npz") as saved:
        assert str(saved["identity"]) == record.identity.digest
        assert len(saved["labels"]) == record.test_metrics.num_images == TINY_SPEC["n_test"]
    finished = client.search_runs([experiment], f"tags.identity = '{record.identity.digest}' AND "
                                                "attributes.status = 'FINISHED'")
    assert len(finished) == 1
    assert finished[0].data.metrics["test_balanced_accuracy"] == pytest.approx(
        record.test_metrics.balanced_accuracy)
    checkpoints = record.identity.checkpoint_dir(root / "checkpoints")
    for checkpoint in checkpoints.rglob("*.ckpt"):
        saved = torch.load(checkpoint, weights_only=True)  # every checkpoint left is whole
        assert saved["hyper_parameters"]["identity"]["digest"] == record.identity.digest


def _records_by(results_dir: Path) -> dict[tuple[int, float], records.RunRecord]:
    """Every record by (resolution, learning rate), each describing the model it tested."""
    found = {}
    for path, record in records.iter_records(results_dir):
        assert isinstance(record, records.RunRecord), record
        key = (record.resolution, record.identity.training["optimizer"]["lr"])
        assert record.config["optimizer"]["lr"] == key[1], path
        assert key not in found
        found[key] = record
    return found


def test_a_sweep_killed_anywhere_ends_as_if_never_killed(tmp_path: Path):
    """Runs that share a run name (tiny_cnn_32 at two learning rates) each end with their own
    record, predictions, checkpoints and MLflow run, however the kills fell."""
    rng = random.Random(7)
    # From the first second (nothing created yet) through training and the report.
    # Each re-run resumes what the killed ones left, so the sweep advances from kill to kill.
    moments = [rng.uniform(0.2, 2.0), *sorted(rng.uniform(2.0, 25.0) for _ in range(4))]
    kills = sum(_kill_after(tmp_path, moment) for moment in moments)
    assert kills >= 3, "the sweep finished before most kills: make it longer"

    final = _start(tmp_path)
    output, _ = final.communicate(timeout=900)
    assert final.returncode == 0, output[-4000:]

    results_dir = tmp_path / "results"
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("ResoMap").experiment_id
    found = _records_by(results_dir)
    assert sorted(found) == [(res, lr) for res in RESOLUTIONS for lr in LEARNING_RATES]
    for record in found.values():
        _assert_whole(tmp_path, record, client, experiment)

    report = (results_dir / "report.md").read_text()
    assert "tiny_cnn" in report and "failed" not in report.lower()
    rows = (results_dir / "all_results.csv").read_text().splitlines()
    assert len(rows) == 1 + len(found)
    for path in tmp_path.rglob("*.json"):
        if not path.name.startswith("."):
            json.loads(path.read_text())  # every JSON file left is whole


def test_two_concurrent_sweeps_with_different_settings_keep_their_runs_apart(tmp_path: Path):
    """Two sweeps at once on one project, sharing a learning rate: every record matches its
    predictions and its config, and the shared run is trained once."""
    first = _start(tmp_path, ("res=32", "optimizer.lr=0.001,0.003"), "sweep_a")
    second = _start(tmp_path, ("res=32", "optimizer.lr=0.01,0.003"), "sweep_b")
    outputs = [process.communicate(timeout=1800)[0] for process in (first, second)]
    for process, output in zip((first, second), outputs):
        assert process.returncode == 0, output[-4000:]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("ResoMap").experiment_id
    found = _records_by(tmp_path / "results")
    assert sorted(lr for _, lr in found) == [0.001, 0.003, 0.01]
    for record in found.values():
        _assert_whole(tmp_path, record, client, experiment)
    assert sum(output.count("Record written") for output in outputs) == 3
