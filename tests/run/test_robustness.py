"""A failing run costs nothing but itself: OOM retries, interrupts, untrusted checkpoints and
parallel jobs writing results at once."""

from __future__ import annotations

import fractions
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import checkpoint_folders, fail_training_step, interrupt_run, tiny_overrides
from omegaconf import DictConfig

from resomap import orchestrate as experiment
from resomap.errors import ResoMapError
from resomap.run import record as results
from resomap.run.oom import OutOfMemoryAtFloorError

pytestmark = pytest.mark.slow

@pytest.fixture
def compose_run(compose_train):
    return compose_train



def _out_of_memory_above(monkeypatch: pytest.MonkeyPatch, limit: int) -> None:
    """A GPU with room for ``limit`` images per batch: larger training batches raise CUDA OOM."""
    fail_training_step(monkeypatch, lambda module, _: module.trainer.datamodule.batch_size > limit,
                        torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))


def _result(cfg: DictConfig) -> results.RunRecord:
    return results.read_record(results.view_path(cfg.paths.results_dir, cfg.run_name))


def _last_checkpoint(cfg: DictConfig) -> Path:
    (folder,) = checkpoint_folders(Path(cfg.paths.root_dir), cfg.run_name)
    return folder / "last.ckpt"


def test_out_of_memory_retries_with_half_the_batch_keeping_the_effective_batch(compose_run, monkeypatch):
    _out_of_memory_above(monkeypatch, limit=4)
    cfg = compose_run("data.batch_size=16", "data.eval_batch_size=32", "oom.min_batch_size=4")
    experiment.run(cfg)
    result = _result(cfg)
    batch = result.batch
    assert (batch["batch_size"], batch["accumulate_grad_batches"]) == (4, 4)
    assert batch["effective_batch_size"] == 16 and batch["eval_batch_size"] == 8
    assert [(retry["batch_size"], retry["accumulate_grad_batches"]) for retry in batch["oom_retries"]] \
        == [(16, 1), (8, 2)]
    assert "CUDA out of memory" in batch["oom_retries"][0]["error"]
    # 42 training images: 3 optimizer steps per epoch at batch 16, and still 3 at 4 x 4.
    assert result.global_step == 3
    assert result.test_metrics.num_images == 21


def test_out_of_memory_at_the_floor_fails_the_run_without_a_result(compose_run, monkeypatch):
    _out_of_memory_above(monkeypatch, limit=2)
    cfg = compose_run("data.batch_size=16", "oom.min_batch_size=4")
    floor = "data.batch_size=4 after 2 retries.*oom.min_batch_size=4"
    with pytest.raises(OutOfMemoryAtFloorError, match=floor):
        experiment.run(cfg)
    assert not results.view_path(cfg.paths.results_dir, cfg.run_name).exists()


def _interrupted_run(compose_run, monkeypatch: pytest.MonkeyPatch) -> DictConfig:
    """A run stopped by KeyboardInterrupt (what Ctrl-C raises) at its third training step."""
    cfg = compose_run("data.batch_size=8")
    interrupt_run(experiment.run, cfg, monkeypatch, lambda module, batch_idx: batch_idx == 2)
    return cfg


def test_interrupt_saves_the_current_step_and_surfaces_as_keyboard_interrupt(compose_run, monkeypatch):
    cfg = _interrupted_run(compose_run, monkeypatch)
    checkpoint = torch.load(_last_checkpoint(cfg), weights_only=True)
    assert checkpoint["global_step"] == 2  # mid-epoch: saved at the interrupt, not at an epoch end
    assert not results.view_path(cfg.paths.results_dir, cfg.run_name).exists()


def test_checkpoint_with_arbitrary_objects_is_refused(compose_run, monkeypatch, tmp_path: Path):
    cfg = _interrupted_run(compose_run, monkeypatch)
    checkpoint = torch.load(_last_checkpoint(cfg), weights_only=True)
    checkpoint["payload"] = fractions.Fraction(1, 3)  # any pickled object that is not plain data
    crafted = tmp_path / "crafted.ckpt"
    torch.save(checkpoint, crafted)
    with pytest.raises(ResoMapError, match=f"Refusing to load checkpoint {crafted}.*weights_only=True"):
        experiment.run(compose_run(f"ckpt_path={crafted}", "data.batch_size=8"))
    assert not results.view_path(cfg.paths.results_dir, cfg.run_name).exists()


def test_parallel_joblib_jobs_leave_every_result_valid(train_cli, tmp_path: Path):
    completed = train_cli("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "model=tiny_cnn",
                          "res=32,48", "explain=none")
    assert completed.returncode == 0, (completed.stdout + completed.stderr)[-3000:]
    folder = tmp_path / "results" / "test_results"
    for res in (32, 48):
        result = results.read_record(folder / f"tiny_cnn_{res}.json")
        assert result.resolution == res
        with np.load(folder / f"tiny_cnn_{res}.npz") as predictions:
            assert len(predictions["labels"]) == 21
    rows = (tmp_path / "results" / "all_results.csv").read_text().splitlines()
    assert [row.split(",")[:2] for row in rows[1:]] == [["tiny_cnn", "32"], ["tiny_cnn", "48"]]
    assert not list(tmp_path.rglob("*.tmp"))
    for cached in (tmp_path / "data" / "cache" / "validation").glob("*.json"):
        assert json.loads(cached.read_text())["bad"] == {}
    # The jobs' runs, made in joblib's worker processes, are children of the one sweep run.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("ResoMap").experiment_id])
    (sweep,) = [run for run in runs if "resomap.sweep" in run.data.tags]
    jobs = [run for run in runs if "identity" in run.data.tags]
    assert sweep.info.status == "FINISHED" and len(jobs) == 2
    assert {run.data.tags.get("mlflow.parentRunId") for run in jobs} == {sweep.info.run_id}


def test_ctrl_c_stops_the_sweep_and_says_how_to_resume(tmp_path: Path, tiny_data_root: Path):
    args = ["-m", *tiny_overrides(tmp_path, tiny_data_root), "model=tiny_cnn", "res=32,48",
            "explain=none", "trainer.max_epochs=50"]
    process = subprocess.Popen([sys.executable, "-m", "resomap.train", *args], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while process.poll() is None and time.monotonic() < deadline:
        found = list((tmp_path / "checkpoints" / "tiny_cnn_32").glob("*/last.ckpt"))
        if found:
            (last,) = found
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 130, output[-3000:]
    assert "Interrupted tiny_cnn_32; its last checkpoint is" in output
    resume = [line.strip() for line in output.splitlines() if line.strip().endswith("ckpt_path=last")]
    assert resume[0].startswith("python -m resomap.train") and "model=tiny_cnn res=32" in resume[0]
    assert resume[1].startswith("python -m resomap.train -m") and "res=32,48" in resume[1]
    assert torch.load(last, weights_only=True)["global_step"] > 0
    assert not list((tmp_path / "checkpoints" / "tiny_cnn_48").glob("*/*.ckpt"))
    assert not list((tmp_path / "multirun").glob("1_*"))
