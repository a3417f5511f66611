"""A local SQLite store is created whole or not at all: a kill mid-creation leaves no half store."""

from __future__ import annotations

from pathlib import Path

import pytest
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
