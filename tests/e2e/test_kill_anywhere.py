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


def _sweep(root: Path) -> list[str]:
    generator = [f"data.generator.{key}={value}" for key, value in TINY_SPEC.items()]
    return [sys.executable, "-m", "resomap.train", "-m", f"paths.root_dir={root}", *generator,
            "data.num_workers=0", "data.batch_size=16", "data.eval_batch_size=32",
            f"trainer.max_epochs={EPOCHS}", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false", "explain=none", "callbacks.profile.warmup_runs=1",
            "callbacks.profile.timed_runs=2", f"hydra.sweep.dir={root}/multirun", "model=tiny_cnn",
            f"res={','.join(map(str, RESOLUTIONS))}", "ckpt_path=last"]


def _start(root: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RESOMAP_ROOT", None)
    # Its own process group, so the kill reaches every process the sweep started.
    return subprocess.Popen(_sweep(root), cwd=root, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _kill_after(root: Path, seconds: float) -> bool:
    """Run the sweep and SIGKILL it after ``seconds``; False if it finished first."""
    process = _start(root)
    deadline = time.monotonic() + seconds
    while process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if process.poll() is not None:
        process.communicate()
        return False
    os.killpg(process.pid, signal.SIGKILL)
    process.communicate()
    return True


def test_a_sweep_killed_anywhere_ends_as_if_never_killed(tmp_path: Path):
    rng = random.Random(7)
    # From the first second (nothing created yet) through training and the report.
    # Each re-run resumes what the killed ones left, so the sweep advances from kill to kill.
    moments = [rng.uniform(0.2, 2.0), *sorted(rng.uniform(2.0, 20.0) for _ in range(4))]
    kills = sum(_kill_after(tmp_path, moment) for moment in moments)
    assert kills >= 3, "the sweep finished before most kills: make it longer"

    final = _start(tmp_path)
    output, _ = final.communicate(timeout=900)
    assert final.returncode == 0, output[-4000:]

    results_dir = tmp_path / "results"
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("ResoMap").experiment_id
    for res in RESOLUTIONS:
        record = records.read_record(records.result_path(results_dir, f"tiny_cnn_{res}"))
        assert record.epochs_run == EPOCHS
        assert [row["epoch"] for row in record.history] == list(range(EPOCHS))
        assert record.global_step == EPOCHS * STEPS_PER_EPOCH
        with np.load(records.predictions_path(results_dir, record.run_name)) as saved:
            assert len(saved["labels"]) == record.test_metrics.num_images == TINY_SPEC["n_test"]
        finished = client.search_runs([experiment], f"tags.identity = '{record.identity.digest}' AND "
                                                    "attributes.status = 'FINISHED'")
        assert len(finished) == 1
        assert finished[0].data.metrics["test_balanced_accuracy"] == pytest.approx(
            record.test_metrics.balanced_accuracy)
        folder = record.identity.checkpoint_dir(tmp_path / "checkpoints")
        for checkpoint in folder.glob("*.ckpt"):
            torch.load(checkpoint, weights_only=True)  # every checkpoint left is whole

    report = (results_dir / "report.md").read_text()
    assert "tiny_cnn" in report and "failed" not in report.lower()
    rows = (results_dir / "all_results.csv").read_text().splitlines()
    assert len(rows) == 1 + len(RESOLUTIONS)
    for path in tmp_path.rglob("*.json"):
        if not path.name.startswith("."):
            json.loads(path.read_text())  # every JSON file left is whole
