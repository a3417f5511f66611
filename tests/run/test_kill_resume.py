"""A run killed at any moment resumes with ``ckpt_path=last`` into the same MLflow run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import checkpoint_folders, tiny_overrides
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

EPOCHS = 5  # below early stopping's patience, so every run trains all of them
STEPS_PER_EPOCH = 3  # 42 training images in batches of 16
RUN = ["model=tiny_cnn", "explain=none", f"trainer.max_epochs={EPOCHS}"]


def _command(root: Path, data_root: Path, *overrides: str) -> list[str]:
    flags = [item for item in overrides if item.startswith("-")]
    values = [item for item in overrides if not item.startswith("-")]
    return [sys.executable, "-m", "resomap.train", *flags, *tiny_overrides(root, data_root), *RUN, *values]


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RESOMAP_ROOT", None)
    return env


def _run(root: Path, data_root: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(_command(root, data_root, *overrides), cwd=root, env=_env(), capture_output=True,
                          text=True, timeout=600)


def _folder(root: Path, res: int) -> Path:
    """The run's checkpoint folder (one per run identity)."""
    (folder,) = checkpoint_folders(root, f"tiny_cnn_{res}")
    return folder


def _interrupt_after_first_checkpoint(root: Path, data_root: Path, signum: int, res: int) -> tuple[int, str]:
    """Start a run, send ``signum`` once its first last.ckpt exists; its exit status and output."""
    pattern = f"checkpoints/tiny_cnn_{res}/*/last.ckpt"
    process = subprocess.Popen(_command(root, data_root, f"res={res}"), cwd=root, env=_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        while not list(root.glob(pattern)) and process.poll() is None:
            time.sleep(0.02)
        process.send_signal(signum)
        output, _ = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
    return process.returncode, output


def _result(root: Path, name: str) -> dict:
    return json.loads((root / "results" / "test_results" / f"{name}.json").read_text())


def _run_id(root: Path, res: int) -> str:
    (run_id,) = json.loads((_folder(root, res) / "mlflow_run.json").read_text()).values()
    return run_id


def _client(root: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{root}/mlflow.db")


def _assert_complete(root: Path, name: str) -> None:
    result = _result(root, name)
    assert result["global_step"] == EPOCHS * STEPS_PER_EPOCH
    assert [row["epoch"] for row in result["history"]] == list(range(EPOCHS))


def test_sigkilled_sweep_resumes_unfinished_and_skips_finished(tmp_path: Path, tiny_data_root: Path):
    finished = _run(tmp_path, tiny_data_root, "res=32")
    assert finished.returncode == 0, finished.stderr[-3000:]
    status, output = _interrupt_after_first_checkpoint(tmp_path, tiny_data_root, signal.SIGKILL, res=48)
    assert status == -signal.SIGKILL, output[-3000:]
    killed_step = torch.load(_folder(tmp_path, 48) / "last.ckpt", weights_only=True)["global_step"]
    assert 0 < killed_step < EPOCHS * STEPS_PER_EPOCH
    killed_run = _run_id(tmp_path, 48)
    assert _client(tmp_path).get_run(killed_run).info.status == "RUNNING"

    sweep = _run(tmp_path, tiny_data_root, "-m", "res=32,48", "ckpt_path=last")
    output = sweep.stdout + sweep.stderr
    assert sweep.returncode == 0, output[-3000:]
    assert "Skipping tiny_cnn_32" in output
    assert f"Continuing MLflow run {killed_run}" in output
    assert "Restoring states from the checkpoint" in output
    _assert_complete(tmp_path, "tiny_cnn_48")
    assert _run_id(tmp_path, 48) == killed_run
    runs = _client(tmp_path).search_runs(
        [_client(tmp_path).get_experiment_by_name("ResoMap").experiment_id])
    jobs = [run for run in runs if "identity" in run.data.tags]
    assert sorted((run.info.run_name, run.info.status) for run in jobs) == [
        ("tiny_cnn_32", "FINISHED"), ("tiny_cnn_48", "FINISHED")]
    # The sweep has its own run; the continued run keeps the parent it started with (none: it
    # was a single run), and the skipped one is not run again.
    (sweep_run,) = [run for run in runs if "identity" not in run.data.tags]
    assert sweep_run.info.status == "FINISHED"
    assert all("mlflow.parentRunId" not in run.data.tags for run in jobs)
    history = _client(tmp_path).get_metric_history(killed_run, "val_loss")
    assert sorted({metric.step for metric in history}) == list(range(EPOCHS))


def test_sigterm_saves_a_checkpoint_and_the_run_resumes(tmp_path: Path, tiny_data_root: Path):
    status, output = _interrupt_after_first_checkpoint(tmp_path, tiny_data_root, signal.SIGTERM, res=32)
    assert status != 0, output[-3000:]
    assert "Received SIGTERM" in output and "Interrupted tiny_cnn_32; its last checkpoint is" in output
    run_id = _run_id(tmp_path, 32)
    assert _client(tmp_path).get_run(run_id).info.status == "KILLED"

    resumed = _run(tmp_path, tiny_data_root, "res=32", "ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Restoring states from the checkpoint" in resumed.stdout + resumed.stderr
    _assert_complete(tmp_path, "tiny_cnn_32")
    assert _run_id(tmp_path, 32) == run_id
    assert _client(tmp_path).get_run(run_id).info.status == "FINISHED"


def _signal_group_after_first_checkpoint(root: Path, data_root: Path, signum: int, pattern: str,
                                         *overrides: str) -> tuple[int, str]:
    """Start a command in its own process group and send ``signum`` to the whole group (as SLURM,
    ``timeout`` and a terminal's Ctrl-C do) once ``pattern`` exists under ``root``."""
    process = subprocess.Popen(_command(root, data_root, *overrides), cwd=root, env=_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    try:
        while not list(root.glob(pattern)) and process.poll() is None:
            time.sleep(0.02)
        os.killpg(process.pid, signum)
        output, _ = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    return process.returncode, output


def _children(pid: int) -> list[int]:
    return [int(child) for task in Path(f"/proc/{pid}/task").iterdir()
            for child in (task / "children").read_text().split()]


def test_a_dataloader_worker_killed_by_sigterm_interrupts_the_run(tmp_path: Path, tiny_data_root: Path):
    """A worker dying of SIGTERM is a stop, not a failure, even when the run's own process has not
    noted the signal: when the process group is signalled, torch's check of its workers can raise
    inside this process's SIGTERM handler before the handler notes anything. Exit 143, the MLflow
    run KILLED, and ``ckpt_path=last`` finishes it."""
    workers = ("data.pipeline=classic", "data.num_workers=2")
    process = subprocess.Popen(_command(tmp_path, tiny_data_root, "res=32", *workers), cwd=tmp_path,
                               env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        while not list(tmp_path.glob("checkpoints/tiny_cnn_32/*/last.ckpt")) and process.poll() is None:
            time.sleep(0.02)
        while not (children := _children(process.pid)) and process.poll() is None:
            time.sleep(0.02)
        for child in children:
            os.kill(child, signal.SIGTERM)
        output, _ = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 143, output[-3000:]
    assert "Interrupted tiny_cnn_32" in output and "failed" not in output.lower(), output[-3000:]
    run_id = _run_id(tmp_path, 32)
    assert _client(tmp_path).get_run(run_id).info.status == "KILLED"

    resumed = _run(tmp_path, tiny_data_root, "res=32", "ckpt_path=last", *workers)
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-3000:]
    _assert_complete(tmp_path, "tiny_cnn_32")
    assert _client(tmp_path).get_run(run_id).info.status == "FINISHED"


def test_sigterm_to_the_process_group_interrupts_the_sweep(tmp_path: Path, tiny_data_root: Path):
    """DataLoader workers die of the same SIGTERM: still an interruption, not a failure. The sweep
    stops (exit 143), the job is marked interrupted, its MLflow run KILLED, and it resumes."""
    workers = ("data.pipeline=classic", "data.num_workers=2")
    status, output = _signal_group_after_first_checkpoint(
        tmp_path, tiny_data_root, signal.SIGTERM, "checkpoints/tiny_cnn_32/*/last.ckpt", "-m", "res=32,48",
        *workers)
    assert status == 143, output[-3000:]
    assert "failed" not in output.lower(), output[-3000:]
    assert "Interrupted tiny_cnn_32" in output
    (job,) = [json.loads(path.read_text()) for path in (tmp_path / "multirun").glob("*/job.json")]
    assert (job["run_name"], job["status"]) == ("tiny_cnn_32", "interrupted")
    assert not (tmp_path / "results").exists() or not list((tmp_path / "results").rglob("record.json"))
    run_id = _run_id(tmp_path, 32)
    assert _client(tmp_path).get_run(run_id).info.status == "KILLED", output[-3000:]
    torch.load(_folder(tmp_path, 32) / "last.ckpt", weights_only=True)

    resumed = _run(tmp_path, tiny_data_root, "-m", "res=32,48", "ckpt_path=last", *workers)
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-3000:]
    _assert_complete(tmp_path, "tiny_cnn_32")
    _assert_complete(tmp_path, "tiny_cnn_48")
    assert _run_id(tmp_path, 32) == run_id
    assert _client(tmp_path).get_run(run_id).info.status == "FINISHED"
