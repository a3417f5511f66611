"""Resume is exact: an early-stopped run stays stopped, and a run that failed after training is
finished by one printed command without training again. Files honour the umask, and what a
killed writer left behind is removed by the next start."""

from __future__ import annotations

import errno
import stat
from pathlib import Path

import pytest
import torch
from conftest import checkpoint_folders

from resomap import orchestrate
from resomap.models.classifier import LitClassifier
from resomap.run import record as records
from resomap.run import record_write
from resomap.run.checkpoint import DiskFullError

pytestmark = pytest.mark.slow

EARLY_STOP = ("trainer.max_epochs=4", "callbacks.early_stopping.patience=1",
              "+callbacks.early_stopping.min_delta=100")  # no epoch improves by 100: stops after epoch 1


def _no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    def training_step(self, batch, batch_idx):
        raise AssertionError("a finished fit must not train again")

    monkeypatch.setattr(LitClassifier, "training_step", training_step)


def test_an_early_stopped_run_killed_before_its_test_never_trains_past_its_stop(compose_train, monkeypatch):
    cfg = compose_train(*EARLY_STOP)

    def killed(self, batch, batch_idx):
        raise KeyboardInterrupt

    monkeypatch.setattr(LitClassifier, "test_step", killed)
    with pytest.raises(KeyboardInterrupt):
        orchestrate.run(cfg)
    monkeypatch.undo()
    (folder,) = checkpoint_folders(Path(cfg.paths.root_dir), cfg.run_name)
    assert torch.load(folder / "last.ckpt", weights_only=True)["epoch"] == 1

    _no_training(monkeypatch)
    orchestrate.run(compose_train(*EARLY_STOP, "ckpt_path=last"))
    (_, record), = records.iter_records(cfg.paths.results_dir)
    assert [row["epoch"] for row in record.history] == [0, 1]
    assert record.epochs_run == 2 and record.global_step == 2 * 3


def test_a_failure_after_training_keeps_the_checkpoint_and_prints_the_command_that_finishes_it(
        compose_train, monkeypatch):
    cfg = compose_train("trainer.max_epochs=2")

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(record_write, "write_predictions", disk_full)
    with pytest.raises(orchestrate.FailedAfterTraining) as caught:
        orchestrate.run(cfg)
    monkeypatch.undo()
    message = str(caught.value)
    assert "disk is full" in message and "paths.results_dir" in message
    assert "finished training" in message and message.rstrip().endswith("ckpt_path=last")
    assert isinstance(caught.value.__cause__, DiskFullError)
    assert not list(records.iter_records(cfg.paths.results_dir))

    _no_training(monkeypatch)
    orchestrate.run(compose_train("trainer.max_epochs=2", "ckpt_path=last"))
    (_, record), = records.iter_records(cfg.paths.results_dir)
    assert [row["epoch"] for row in record.history] == [0, 1] and record.global_step == 2 * 3


def test_a_full_checkpoint_disk_is_one_clear_error(compose_train, monkeypatch):
    def full(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 64 vs 0: "
                           "file write failed")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(DiskFullError, match=r"disk is full.*paths.checkpoint_dir.*ckpt_path=last"):
        orchestrate.run(compose_train())


def test_checkpoints_honour_the_umask_and_temporary_files_go_at_the_next_start(compose_train):
    cfg = compose_train()
    orchestrate.run(cfg)
    (path, record), = records.iter_records(cfg.paths.results_dir)
    folder = record.identity.checkpoint_dir(cfg.paths.checkpoint_dir)
    for checkpoint in folder.glob("*.ckpt"):
        assert stat.S_IMODE(checkpoint.stat().st_mode) & 0o044 == 0o044, checkpoint  # umask 022
    left = [folder / ".last.ckpt.abc123.tmp", path.parent / ".record.json.x1.tmp",
            path.parent.parent.parent / "test_results" / ".tiny_cnn_32.json.x2.tmp"]
    for leftover in left:
        leftover.write_bytes(b"half")
    other = path.parent.parent.parent / "test_results" / ".simple_cnn_32.json.x3.tmp"
    other.write_bytes(b"another run's")
    assert orchestrate.run_outcome(compose_train()).status == "skipped"
    assert not any(leftover.exists() for leftover in left)
    assert other.exists()  # another run's writer may still be at work
