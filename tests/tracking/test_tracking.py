"""MLflow and DagsHub tracking against a real ``mlflow server`` on a loopback port."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from mlflow_server import free_port, mlflow_server_at, recording_proxy

# One xdist worker runs this file, so its module fixtures are built once (--dist loadgroup).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("tracking")]

FAST = ["model=tiny_cnn", "explain=none"]
TOKEN = "dagshub-test-token-5f3a9c"
CREDENTIAL_VARIABLES = ("DAGSHUB_TOKEN", "DAGSHUB_USER_TOKEN", "MLFLOW_TRACKING_USERNAME",
                        "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real MLflow tracking server (SQLite store, served artifacts), stopped by its PID."""
    with mlflow_server_at(tmp_path_factory.mktemp("mlflow-server")) as url:
        yield url


@pytest.fixture
def no_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in CREDENTIAL_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def _runs(url: str, run_name: str):
    mlflow.set_tracking_uri(url)
    return mlflow.search_runs(experiment_names=["ResoMap"],
                              filter_string=f"attributes.run_name = '{run_name}'")


def _result(root: Path, name: str) -> dict:
    return json.loads((root / "results" / "test_results" / f"{name}.json").read_text())


def test_run_logs_to_a_server_and_an_identical_run_is_skipped(train_cli, mlflow_server: str,
                                                               tmp_path: Path):
    server = f"logger.mlflow.tracking_uri={mlflow_server}"
    first = train_cli(*FAST, "res=32", "trainer.max_epochs=2", server)
    assert first.returncode == 0, first.stderr[-3000:]
    result = _result(tmp_path, "tiny_cnn_32")
    runs = _runs(mlflow_server, "tiny_cnn_32")
    assert len(runs) == 1
    row = runs.iloc[0]
    assert row["status"] == "FINISHED"
    assert (row["tags.model"], row["tags.res"], row["tags.seed"]) == ("tiny_cnn", "32", "0")
    assert (row["tags.data"], row["tags.data_fingerprint"]) == (result["data"]["name"],
                                                                result["data"]["fingerprint"])
    assert row["tags.identity"] == result["identity"]["digest"]
    assert row["params.resolution"] == "32" and row["params.epochs"] == "2"
    assert row["metrics.test_balanced_accuracy"] == pytest.approx(result["test_metrics"]["balanced_accuracy"])
    client = MlflowClient(mlflow_server)
    run_id = row["run_id"]
    assert [metric.step for metric in client.get_metric_history(run_id, "val_loss")] == [0, 1]
    for name in ("test_balanced_accuracy", "test_loss", "test_macro_auroc", "lr"):  # each logged once
        assert len(client.get_metric_history(run_id, name)) == (2 if name == "lr" else 1), name
    artifacts = {item.path for folder in ("results", "plots", "config")
                 for item in client.list_artifacts(run_id, folder)}
    assert {"results/record.json", "results/predictions.npz", "plots/confusion_matrix.png",
            "config/config.yaml"} <= artifacts
    run_file = tmp_path / "checkpoints" / "tiny_cnn_32" / result["identity"]["digest"] / "mlflow_run.json"
    assert json.loads(run_file.read_text()) == {mlflow_server: run_id}

    # Another machine sharing the server has no local result: the server says the run is done,
    # and its record and predictions come back from it.
    import shutil

    shutil.rmtree(tmp_path / "results")
    again = train_cli(*FAST, "res=32", "trainer.max_epochs=2", server)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"Skipping tiny_cnn_32: finished with the same configuration (MLflow run {run_id})" in again.stdout
    assert len(_runs(mlflow_server, "tiny_cnn_32")) == 1
    fetched = tmp_path / "results" / "runs" / result["identity"]["digest"]
    assert json.loads((fetched / "record.json").read_text())["test_metrics"] == result["test_metrics"]
    assert (fetched / "predictions.npz").is_file()

    forced = train_cli(*FAST, "res=32", "trainer.max_epochs=2", server, "skip_completed=false")
    assert forced.returncode == 0, forced.stderr[-3000:]
    assert sorted(_runs(mlflow_server, "tiny_cnn_32")["status"]) == ["FINISHED", "FINISHED"]


def test_a_failing_run_is_marked_failed(train_cli, tmp_path: Path):
    # A value only torch refuses, when fit builds the optimizer: the MLflow run has started.
    failed = train_cli(*FAST, "res=32", "+optimizer.betas=[1.5,0.999]")
    assert failed.returncode != 0
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("ResoMap").experiment_id])
    assert (run.info.run_name, run.info.status) == ("tiny_cnn_32", "FAILED")


def test_unreachable_server_fails_fast_or_falls_back_naming_it(train_cli, tmp_path: Path):
    unreachable = f"http://127.0.0.1:{free_port()}"
    override = f"logger.mlflow.tracking_uri={unreachable}"
    failed = train_cli(*FAST, "res=32", override, timeout=120)
    output = failed.stdout + failed.stderr
    assert failed.returncode == 2
    assert f"MLflow tracking store {unreachable} is unreachable" in output
    assert f"MLflow tracking store {unreachable} failed" in output
    assert not list(tmp_path.rglob("*.ckpt"))

    # A run finished without the server is skipped from its local result.
    assert train_cli(*FAST, "res=32", "logger=csv").returncode == 0
    skipped = train_cli(*FAST, "res=32", override, timeout=120)
    assert skipped.returncode == 0, skipped.stderr[-3000:]
    assert "Skipping tiny_cnn_32" in skipped.stdout


def test_dagshub_without_a_token_fails_before_training(train_cli, tmp_path: Path, no_credentials):
    completed = train_cli(*FAST, "res=32", "logger=dagshub", "logger.dagshub.repo_owner=alice",
                          "logger.dagshub.repo_name=resomap")
    assert completed.returncode == 2
    assert "logger=dagshub needs a DagsHub token in the environment: export DAGSHUB_TOKEN" in (
        completed.stdout + completed.stderr)
    assert not list(tmp_path.rglob("*.ckpt")) and not (tmp_path / "results" / "test_results").exists()


def test_dagshub_credentials_reach_mlflow_and_are_never_saved(train_cli, mlflow_server: str,
                                                               tmp_path: Path, no_credentials):
    with recording_proxy(mlflow_server) as (port, seen):
        completed = train_cli(
            *FAST, "res=48", "logger=dagshub", "logger.dagshub.repo_owner=alice",
            "logger.dagshub.repo_name=resomap", f"logger.dagshub.tracking_uri=http://127.0.0.1:{port}",
            env={"DAGSHUB_TOKEN": TOKEN})
    assert completed.returncode == 0, completed.stderr[-3000:]
    expected = "Basic " + base64.b64encode(f"alice:{TOKEN}".encode()).decode()
    assert seen and set(seen) == {expected}
    assert _runs(mlflow_server, "tiny_cnn_48")["status"].tolist() == ["FINISHED"]
    assert TOKEN not in completed.stdout + completed.stderr
    leaks = [path for path in tmp_path.rglob("*") if path.is_file() and TOKEN.encode() in path.read_bytes()]
    assert leaks == []
