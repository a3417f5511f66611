"""Resume and skip go by the run's identity: a result file never describes one configuration
while holding another's model, and nothing a user may want back is deleted silently."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import checkpoint_folders, interrupt_run
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from resomap import orchestrate
from resomap.data.synthetic import generate
from resomap.models.classifier import CheckpointMismatchError
from resomap.run import record as records
from resomap.run.checkpoint import AtomicCheckpointIO
from resomap.run.trained import CorruptCheckpointError

pytestmark = pytest.mark.slow


def _record(cfg: DictConfig) -> records.RunRecord:
    return records.read_record(records.view_path(cfg.paths.results_dir, cfg.run_name))


def _folder(cfg: DictConfig, index: int = 0) -> Path:
    return checkpoint_folders(Path(cfg.paths.root_dir), cfg.run_name)[index]



def _interrupted(cfg: DictConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    interrupt_run(orchestrate.run, cfg, monkeypatch,
                  lambda module, batch_idx: module.current_epoch == 0 and batch_idx == 1)


def test_resume_after_a_config_change_trains_the_new_config_and_keeps_the_old(compose_train, caplog):
    first = compose_train("trainer.max_epochs=2")
    orchestrate.run(first)
    old_folder = _folder(first)
    old_last = (old_folder / "last.ckpt").read_bytes()

    changed = compose_train("trainer.max_epochs=2", "optimizer.lr=0.01", "ckpt_path=last")
    with caplog.at_level(logging.WARNING):
        orchestrate.run(changed)
    assert "differing in: optimizer.lr: 0.001 -> 0.01. Training from scratch" in caplog.text
    record = _record(changed)
    assert record.config["optimizer"]["lr"] == 0.01
    assert record.identity.training["optimizer"]["lr"] == 0.01
    assert record.epochs_run == 2 and [row["epoch"] for row in record.history] == [0, 1]
    new_folder = record.identity.checkpoint_dir(changed.paths.checkpoint_dir)
    assert new_folder != old_folder
    saved = torch.load(new_folder / "best.ckpt", weights_only=True)
    assert saved["hyper_parameters"]["identity"]["digest"] == record.identity.digest
    assert saved["optimizer_states"][0]["param_groups"][0]["initial_lr"] == 0.01
    assert (old_folder / "last.ckpt").read_bytes() == old_last  # never touched

    # Asked for explicitly, the other configuration's checkpoint is refused with what differs.
    with pytest.raises(CheckpointMismatchError, match=r"optimizer.lr: 0.01 -> 0.001"):
        orchestrate.run(compose_train("trainer.max_epochs=2", f"ckpt_path={new_folder / 'last.ckpt'}",
                                      "skip_completed=false"))


def test_a_finished_run_is_skipped_with_a_file_read(compose_train, monkeypatch, caplog):
    cfg = compose_train()
    orchestrate.run(cfg)
    written = _record(cfg).timestamp

    def no_data_module(*args, **kwargs):
        raise AssertionError("a finished run must not build its data module")

    monkeypatch.setattr(orchestrate.build, "build_datamodule", no_data_module)
    with caplog.at_level(logging.INFO):
        objective = orchestrate.run(compose_train("ckpt_path=last", "data.num_workers=1"))
    assert "Skipping tiny_cnn_32: finished with the same configuration" in caplog.text
    assert objective == _record(cfg).best_val_metrics["val_balanced_accuracy"]  # what a sweeper optimises
    assert _record(cfg).timestamp == written


def test_two_data_sets_in_one_project_keep_their_own_records(compose_train, tmp_path):
    synthetic = compose_train()
    orchestrate.run(synthetic)
    lesions = generate(tmp_path / "lesions", workers=1, n_train=42, n_val=21, n_test=21, width=80, height=60,
                       seed=1)
    other = compose_train(f"data.root={lesions}", "data.name=lesions", "~data.generator")
    orchestrate.run(other)
    first, second = _record(synthetic), _record(other)
    assert (first.run_name, second.run_name) == ("tiny_cnn_32", "tiny_cnn_32--lesions")
    assert (first.data.name, second.data.name) == ("synthetic", "lesions")
    assert first.data.fingerprint != second.data.fingerprint
    assert _folder(synthetic) != _folder(other)
    assert records.predictions_path(synthetic.paths.results_dir, second.run_name).is_file()


def test_a_plain_rerun_keeps_the_whole_checkpoint_set_aside_and_resuming_it_tests_its_own_best(
        compose_train, monkeypatch, caplog):
    """Kept aside: best and last together. Resumed: the record's best epoch is the tested checkpoint's,
    not the epoch-0 best.ckpt of the re-run that came in between."""
    settings = ("data.batch_size=8", "trainer.max_epochs=3", "callbacks.early_stopping.patience=10")
    cfg = compose_train(*settings)
    interrupt_run(orchestrate.run, cfg, monkeypatch,
                  lambda module, batch_idx: module.current_epoch == 2 and batch_idx == 1)
    folder = _folder(cfg)
    first = {name: (folder / name).read_bytes() for name in ("best.ckpt", "last.ckpt")}

    # A plain re-run, itself interrupted after its own first epoch: it writes its own best.ckpt.
    with caplog.at_level(logging.WARNING):
        interrupt_run(orchestrate.run, compose_train(*settings), monkeypatch,
                      lambda module, batch_idx: module.current_epoch == 1 and batch_idx == 1)
    (aside,) = folder.glob("interrupted-*")
    assert {path.name: path.read_bytes() for path in aside.iterdir()} == first
    assert f"kept together in {aside}" in caplog.text and f"ckpt_path={aside / 'last.ckpt'}" in caplog.text

    orchestrate.run(compose_train(*settings, f"ckpt_path={aside / 'last.ckpt'}"))
    record = _record(cfg)
    assert [row["epoch"] for row in record.history] == [0, 1, 2]
    tested = torch.load(folder / "best.ckpt", weights_only=True)
    assert tested["epoch"] == record.best_epoch
    assert tested["resomap"]["history"] == record.history[: record.best_epoch + 1]
    # The re-run's own set is kept aside in turn, never deleted.
    (rerun,) = folder.glob("interrupted-*")
    assert rerun != aside and (rerun / "last.ckpt").is_file()


def test_an_interrupted_run_resumes_from_its_own_checkpoint(compose_train, monkeypatch):
    cfg = compose_train("data.batch_size=8", "trainer.max_epochs=2")
    _interrupted(cfg, monkeypatch)
    assert torch.load(_folder(cfg) / "last.ckpt", weights_only=True)["global_step"] == 1
    orchestrate.run(compose_train("data.batch_size=8", "trainer.max_epochs=2", "ckpt_path=last"))
    record = _record(cfg)
    assert [row["epoch"] for row in record.history] == [0, 1]
    assert record.global_step == 2 * 6  # 42 images in batches of 8: 6 steps per epoch, none repeated


def test_ctrl_c_works_after_an_interrupted_run_in_the_process_and_in_those_it_starts(compose_train,
                                                                                     monkeypatch):
    # Lightning's Ctrl-C shutdown leaves SIGINT ignored, and an ignored signal stays ignored in
    # every process started later (a notebook's next sweep, a test session's subprocesses).
    _interrupted(compose_train("data.batch_size=8", "trainer.max_epochs=2"), monkeypatch)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    sleeper = "import time; print('ready', flush=True); time.sleep(60)"
    child = subprocess.Popen([sys.executable, "-c", sleeper], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline() == "ready\n"
    child.send_signal(signal.SIGINT)
    assert child.wait(timeout=30) == -signal.SIGINT  # stopped by Ctrl-C, not asleep for a minute


def test_a_truncated_last_checkpoint_is_a_clear_error(compose_train, monkeypatch):
    cfg = compose_train("data.batch_size=8")
    _interrupted(cfg, monkeypatch)
    last = _folder(cfg) / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    with pytest.raises(CorruptCheckpointError, match=rf"Checkpoint {last} cannot be read.*ckpt_path=null"):
        orchestrate.run(compose_train("data.batch_size=8", "ckpt_path=last"))


def test_checkpoints_are_replaced_atomically(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"step": 1}, path)

    def interrupted_save(obj, handle, *args, **kwargs):
        handle.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        AtomicCheckpointIO().save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert os.listdir(tmp_path) == ["last.ckpt"]


def test_history_rows_hold_their_own_epoch_as_mlflow_logged_it(compose_train):
    cfg = compose_train("logger=mlflow", "trainer.max_epochs=3")
    orchestrate.run(cfg)
    record = _record(cfg)
    client = MlflowClient(f"sqlite:///{cfg.paths.root_dir}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("ResoMap").experiment_id])
    assert [row["epoch"] for row in record.history] == [0, 1, 2]
    for name in ("train_loss", "train_balanced_accuracy", "val_loss", "val_balanced_accuracy", "lr"):
        logged = {metric.step: metric.value for metric in client.get_metric_history(run.info.run_id, name)}
        assert logged == pytest.approx({row["epoch"]: row[name] for row in record.history}, rel=1e-6), name
    assert all(row["train_images"] == 42 for row in record.history)
    assert record.history[0]["lr"] > 0
    times = [row["train_time_sec"] for row in record.history]
    assert times == sorted(times) and times[-1] == pytest.approx(record.fit_time_sec)
    assert set(record.best_val_metrics["val_per_class_recall"]) == set(record.classes)


def test_a_rerun_completes_a_store_that_a_kill_left_running(compose_train):
    cfg = compose_train("logger=mlflow")
    orchestrate.run(cfg)
    record = _record(cfg)
    client = MlflowClient(f"sqlite:///{cfg.paths.root_dir}/mlflow.db")
    experiment = client.get_experiment_by_name("ResoMap").experiment_id
    (run,) = client.search_runs([experiment])
    # What a SIGKILL between the record and the end of the MLflow run leaves behind.
    client.update_run(run.info.run_id, status="RUNNING")

    orchestrate.run(compose_train("logger=mlflow", "ckpt_path=last"))
    assert _record(cfg).timestamp == record.timestamp  # not trained again
    runs = client.search_runs([experiment])
    assert [(item.info.run_id, item.info.status) for item in runs] == [(run.info.run_id, "FINISHED")]
    finished = client.get_run(run.info.run_id)
    assert finished.data.metrics["test_balanced_accuracy"] == pytest.approx(
        record.test_metrics.balanced_accuracy)
    assert finished.data.tags["identity"] == record.identity.digest


def test_the_identity_file_explains_each_checkpoint_folder(compose_train):
    cfg = compose_train()
    orchestrate.run(cfg)
    stored = json.loads((_folder(cfg) / "identity.json").read_text())
    assert stored["digest"] == _folder(cfg).name == _record(cfg).identity.digest
