"""A local SQLite store is created whole or not at all: a kill mid-creation leaves no half store."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import compose_config
from mlflow.tracking import MlflowClient

from resomap.tracking import mlflow as tracking


def test_an_interrupted_creation_leaves_no_store_behind(tmp_path: Path, monkeypatch):
    def killed(self, *args, **kwargs):
        raise KeyboardInterrupt  # stands for a kill during MLflow's schema migrations

    monkeypatch.setattr(MlflowClient, "search_experiments", killed)
    with pytest.raises(KeyboardInterrupt):
        tracking.absolute_store_uri(f"sqlite:///{tmp_path}/mlflow.db")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    uri = tracking.absolute_store_uri(f"sqlite:///{tmp_path}/mlflow.db")  # the next run creates it whole
    assert MlflowClient(uri).create_experiment("ResoMap")


def test_a_store_created_by_another_process_first_is_kept(tmp_path: Path):
    uri = tracking.absolute_store_uri(f"sqlite:///{tmp_path}/mlflow.db")
    MlflowClient(uri).create_experiment("theirs")
    tracking.create_sqlite_store(tmp_path / "mlflow.db")  # lost the race: must not replace it
    assert "theirs" in [experiment.name for experiment in MlflowClient(uri).search_experiments()]
    assert [path.name for path in tmp_path.iterdir()] == ["mlflow.db"]


def test_a_damaged_store_is_one_clear_error_naming_the_file(train_cli, tmp_path: Path):
    (tmp_path / "mlflow.db").write_bytes(b"this is not a database" * 200)
    completed = train_cli("model=tiny_cnn", "res=32", "explain=none", "logger=mlflow")
    assert completed.returncode == 2, completed.stderr[-3000:]
    message = completed.stderr.strip().splitlines()[-1]
    assert message.startswith("error: The MLflow store ") and str(tmp_path / "mlflow.db") in message
    assert "mv " in message and "logger=csv" in message
    assert "Traceback" not in completed.stderr


def test_two_commands_started_in_the_same_second_get_their_own_folders():
    """The default sweep and run folders carry microseconds: no two sweeps share one."""
    import time

    from omegaconf import OmegaConf

    folders = []
    for _ in range(2):
        cfg = compose_config("train", return_hydra_config=True)
        folders.append((OmegaConf.select(cfg, "hydra.sweep.dir"), OmegaConf.select(cfg, "hydra.run.dir")))
        time.sleep(0.001)
    assert folders[0][0] != folders[1][0] and folders[0][1] != folders[1][1]
