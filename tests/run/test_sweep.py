"""Sweeps started as users start them: one writer per run, and a sweep's verdict is its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny_overrides
from mlflow.tracking import MlflowClient

from resomap.run import record as records

pytestmark = pytest.mark.slow

RUN = ["model=tiny_cnn", "res=32", "explain=none", "trainer.max_epochs=2"]


def _popen(root: Path, data_root: Path, *overrides: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RESOMAP_ROOT", None)
    flags = [item for item in overrides if item.startswith("-")]
    values = [item for item in overrides if not item.startswith("-")]
    command = [sys.executable, "-m", "resomap.train", *flags, *tiny_overrides(root, data_root), *RUN, *values]
    return subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def test_the_same_run_started_twice_at_once_is_trained_once(tmp_path: Path, tiny_data_root: Path):
    first = _popen(tmp_path, tiny_data_root, f"hydra.run.dir={tmp_path}/outputs/a")
    second = _popen(tmp_path, tiny_data_root, f"hydra.run.dir={tmp_path}/outputs/b")
    outputs = [process.communicate(timeout=600)[0] for process in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    waited = [output for output in outputs if "is being trained by pid" in output]
    assert len(waited) == 1 and "Skipping tiny_cnn_32: finished with the same configuration" in waited[0]
    assert sum("Record written to" in output for output in outputs) == 1
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("ResoMap").experiment_id])
    assert [run.info.status for run in runs] == ["FINISHED"]
    record = records.read_record(records.view_path(tmp_path / "results", "tiny_cnn_32"))
    assert record.epochs_run == 2


def test_a_failure_left_by_an_earlier_sweep_does_not_fail_a_later_one(tmp_path: Path, tiny_data_root: Path):
    # The same sweep folder twice (hydra.sweep.dir is fixed by the overrides).
    # A value only the run can refuse (Lightning parses max_time): the job fails, the sweep goes on.
    failing = _popen(tmp_path, tiny_data_root, "-m", "res=32", "+trainer.max_time=bogus")
    output = failing.communicate(timeout=600)[0]
    assert failing.returncode == 1, output[-3000:]
    assert list((tmp_path / "multirun").glob("*_tiny_cnn_32/failure.json"))

    fixed = _popen(tmp_path, tiny_data_root, "-m", "res=32,40")
    output = fixed.communicate(timeout=600)[0]
    assert fixed.returncode == 0, output[-3000:]
    assert "run(s) failed" not in output
    # Each sweep's own MLflow run ends as the sweep did.
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("ResoMap").experiment_id],
                              order_by=["attributes.start_time ASC"])
    assert [run.info.status for run in runs if "resomap.sweep" in run.data.tags] == ["FAILED", "FINISHED"]
