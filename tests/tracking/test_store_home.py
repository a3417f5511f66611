"""A local store's artifacts are found again after the project folder moves."""

from __future__ import annotations

import shutil
from pathlib import Path

from mlflow.tracking import MlflowClient

from resomap.tracking import mlflow as tracking
from resomap.tracking.store_home import relocate_artifacts


def _logged_run(project: Path) -> str:
    """A run with a text artifact, logged as ResoMap logs it (store and mlartifacts/ in project)."""
    logger = tracking.MLFlowLogger(f"sqlite:///{project}/mlflow.db", run_name="tiny_cnn_32")
    run_id = logger.run_id
    logger.client.log_text(run_id, "model: tiny_cnn\n", "config/config.yaml")
    logger.client.set_terminated(run_id, "FINISHED")
    return run_id


def test_artifacts_are_read_after_the_project_folder_moves(tmp_path: Path):
    project = tmp_path / "project"
    run_id = _logged_run(project)
    # A run that is no child of the store's mlartifacts/ (a sibling sharing its prefix) stays put.
    client = MlflowClient(f"sqlite:///{project}/mlflow.db")
    other = client.create_experiment("elsewhere", artifact_location=f"{project}/mlartifacts-other")
    assert client.get_run(run_id).info.artifact_uri.startswith(f"{project}/mlartifacts/")
    moved = tmp_path / "moved" / "project"
    moved.parent.mkdir()
    shutil.move(project, moved)

    uri = tracking.absolute_store_uri(f"sqlite:///{moved}/mlflow.db")  # what every ResoMap command does
    client = MlflowClient(uri)
    local = client.download_artifacts(run_id, "config/config.yaml", str(tmp_path))
    assert Path(local).read_text() == "model: tiny_cnn\n"
    assert client.get_run(run_id).info.artifact_uri == f"{moved}/mlartifacts/{run_id}/artifacts"
    assert client.get_experiment(other).artifact_location == f"{project}/mlartifacts-other"
    # New runs write beside the moved store too.
    assert _logged_run(moved) and not project.exists()
    assert relocate_artifacts(moved / "mlflow.db") == []  # repaired once


def test_a_store_whose_artifacts_still_exist_is_left_alone(tmp_path: Path):
    run_id = _logged_run(tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")  # a copy: the original's artifacts are still there
    assert relocate_artifacts(tmp_path / "b" / "mlflow.db") == []
    client = MlflowClient(f"sqlite:///{tmp_path}/b/mlflow.db")
    assert client.get_run(run_id).info.artifact_uri.startswith(f"{tmp_path}/a/mlartifacts/")
