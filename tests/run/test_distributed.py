"""DDP and launchers as a user runs them, on CPU with gloo: real subprocesses, real files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import compose_config
from hydra.utils import instantiate
from omegaconf import OmegaConf

from resomap.run import distributed

DDP = ("trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu", "logger=csv", "explain=none",
       "trainer.limit_train_batches=2", "trainer.limit_val_batches=1")


def _result(root: Path, name: str) -> dict:
    return json.loads((root / "results" / "test_results" / f"{name}.json").read_text())


def _assert_ddp_result(result: dict) -> None:
    assert result["num_devices"] == 2
    assert result["distributed"]["world_size"] == 2
    assert result["distributed"]["effective_batch_size"] == 2 * 16
    # Tested once on one device: every test image counted exactly once, predictions complete.
    assert result["test_metrics"]["num_images"] == 21


@pytest.mark.slow
def test_single_run_ddp_writes_one_complete_result(train_cli, tmp_path: Path):
    single = train_cli("model=tiny_cnn", "res=48", *DDP[3:])
    assert single.returncode == 0, single.stderr[-3000:]
    completed = train_cli("model=tiny_cnn", "res=32", *DDP)
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-3000:]
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in output
    ddp, reference = _result(tmp_path, "tiny_cnn_32"), _result(tmp_path, "tiny_cnn_48")
    _assert_ddp_result(ddp)
    assert set(ddp) == set(reference) and reference["distributed"] == {}
    assert set(ddp["test_metrics"]) == set(reference["test_metrics"])
    assert len(ddp["history"]) == 1 and ddp["best_val_loss"] is not None
    assert sorted(p.name for p in (tmp_path / "results" / "test_results").glob("*.json")) == [
        "tiny_cnn_32.json", "tiny_cnn_48.json"]


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["basic", "joblib"])
def test_ddp_sweep_runs_each_job_once(train_cli, tmp_path: Path, launcher: str):
    extra = ("hydra/launcher=joblib", "hydra.launcher.n_jobs=2") if launcher == "joblib" else ()
    completed = train_cli("-m", "model=tiny_cnn", "res=32,48", *DDP, *extra)
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-3000:]
    assert f"({launcher} launcher, 2 processes) runs in its own process" in output
    if launcher == "joblib":
        assert "Joblib.Parallel(n_jobs=2" in output
    for res in (32, 48):
        _assert_ddp_result(_result(tmp_path, f"tiny_cnn_{res}"))
    # Rank 1 did not start a sweep of its own: one multirun folder, one job folder per run.
    sweeps = [path.parent for path in tmp_path.rglob("multirun.yaml")]
    assert sweeps == [tmp_path / "multirun"]
    assert sorted(p.name for p in sweeps[0].iterdir() if p.is_dir()) == ["0_tiny_cnn_32", "1_tiny_cnn_48"]
    assert not list(sweeps[0].glob("*/failure.json"))


@pytest.mark.slow
def test_submitit_local_runs_a_sweep(train_cli, tmp_path: Path):
    completed = train_cli("-m", "hydra/launcher=submitit_local", "model=tiny_cnn", "res=32",
                          "logger=csv", "explain=none", "trainer.limit_train_batches=2",
                          "trainer.limit_val_batches=1")
    assert completed.returncode == 0, (completed.stdout + completed.stderr)[-3000:]
    result = _result(tmp_path, "tiny_cnn_32")
    assert result["test_metrics"]["num_images"] == 21
    assert list((tmp_path / "multirun" / ".submitit").iterdir())


def test_slurm_launcher_config_composes():
    cfg = compose_config("train", ["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4",
                                   "trainer.num_nodes=2", "hydra.launcher.partition=gpu"],
                         return_hydra_config=True)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert (launcher["nodes"], launcher["gpus_per_node"], launcher["tasks_per_node"]) == (2, 4, 4)
    assert launcher["partition"] == "gpu" and launcher["max_num_timeout"] > 0
    assert instantiate(cfg.hydra.launcher).params["gpus_per_node"] == 4


def test_spawn_strategy_stops_the_sweep_with_a_clear_message(train_cli, tmp_path: Path):
    completed = train_cli("-m", "model=tiny_cnn", "res=32,48", *DDP, "trainer.strategy=ddp_spawn")
    output = completed.stdout + completed.stderr
    assert completed.returncode == 2
    assert "error: trainer.strategy=ddp_spawn is not supported" in output
    assert "Use trainer=ddp" in output
    assert not (tmp_path / "results" / "test_results").exists()
    assert not (tmp_path / "multirun" / "1_tiny_cnn_48").exists()


def test_gpu_per_job_gives_each_job_its_own_gpus(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    assert [distributed.assigned_gpus(True, 1, job) for job in range(5)] == ["4", "5", "6", "7", "4"]
    assert [distributed.assigned_gpus(True, 2, job) for job in range(3)] == ["4,5", "6,7", "4,5"]
    assert distributed.assigned_gpus(False, None, 1) is None
    with pytest.raises(distributed.DistributedConfigError, match="trainer.devices must be a number"):
        distributed.assigned_gpus(True, "auto", 0)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert distributed.assigned_gpus(True, 1, 3) is None


def test_multi_node_sweep_without_a_scheduler_is_refused():
    trainer = {"devices": 2, "num_nodes": 2, "strategy": "ddp", "accelerator": "cpu"}
    with pytest.raises(distributed.DistributedConfigError, match="hydra/launcher=slurm"):
        distributed.check(trainer, multirun=True)
    distributed.check(trainer, multirun=False)


def test_ddp_on_cpu_runs_without_sync_batchnorm_and_the_config_is_left_as_composed():
    """The change comes back as a value; the composed config is never written to."""
    from omegaconf import OmegaConf

    from resomap.sweep import with_changes

    trainer = {"sync_batchnorm": True, "accelerator": "cpu"}
    changes = distributed.cpu_sync_batchnorm_off(trainer)
    assert changes == {"trainer.sync_batchnorm": False}
    assert distributed.cpu_sync_batchnorm_off({"sync_batchnorm": True, "accelerator": "gpu"}) == {}
    cfg = OmegaConf.create({"ckpt_path": None, "trainer": {"sync_batchnorm": True, "max_epochs": 1}})
    derived = with_changes(cfg, {**changes, "ckpt_path": "last"})
    assert derived.trainer.sync_batchnorm is False and derived.ckpt_path == "last"
    assert derived.trainer.max_epochs == 1
    assert cfg.trainer.sync_batchnorm is True and cfg.ckpt_path is None
    assert with_changes(cfg, {}) is cfg


@pytest.mark.slow
def test_ctrl_c_in_a_multi_process_sweep_job_waits_for_its_checkpoint_and_ends_mlflow_killed(
        tmp_path: Path, tiny_data_root: Path):
    """The terminal sends SIGINT to the whole foreground group: the job's own process saves its
    interrupt checkpoint and ends its MLflow run before the sweep exits 130."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import torch
    from conftest import tiny_overrides
    from mlflow.tracking import MlflowClient

    command = [sys.executable, "-m", "resomap.train", "-m", *tiny_overrides(tmp_path, tiny_data_root),
               "model=tiny_cnn", "res=32,48", "trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu",
               "explain=none", "trainer.max_epochs=30", "callbacks.early_stopping.patience=100"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RESOMAP_ROOT", None)
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        while not list(tmp_path.glob("checkpoints/tiny_cnn_32/*/last.ckpt")) and process.poll() is None:
            time.sleep(0.05)
        os.killpg(process.pid, signal.SIGINT)
        output, _ = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 130, output[-3000:]
    (folder,) = [path.parent for path in tmp_path.glob("checkpoints/tiny_cnn_32/*/identity.json")]
    torch.load(folder / "last.ckpt", weights_only=True)
    (run_id,) = json.loads((folder / "mlflow_run.json").read_text()).values()
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    job = client.get_run(run_id)
    assert job.info.status == "KILLED", output[-3000:]
    assert not (tmp_path / "multirun" / "1_tiny_cnn_48").exists()
    # The job's run, made in its own process, is the sweep run's child; the stopped sweep's run
    # is ended KILLED as the sweep exits.
    sweep = client.get_run(job.data.tags["mlflow.parentRunId"])
    assert "resomap.sweep" in sweep.data.tags and sweep.info.status == "KILLED"
