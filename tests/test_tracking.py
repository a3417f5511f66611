"""MLflow and DagsHub tracking against a real ``mlflow server`` on a loopback port."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

FAST = ["model=tiny_cnn", "explain=none"]
TOKEN = "dagshub-test-token-5f3a9c"
CREDENTIAL_VARIABLES = ("DAGSHUB_TOKEN", "DAGSHUB_USER_TOKEN", "MLFLOW_TRACKING_USERNAME",
                        "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real MLflow tracking server (SQLite store, served artifacts), stopped by its PID."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    executable = Path(sys.executable).with_name("mlflow")
    with open(folder / "server.log", "w") as server_log:
        server = subprocess.Popen(
            [str(executable), "server", "--backend-store-uri", f"sqlite:///{folder}/server.db",
             "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1",
             "--port", str(port), "--workers", "1"],
            cwd=folder, stdout=server_log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start:\n{(folder / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


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
    assert row["tags.data"] == result["data"]["fingerprint"]
    assert row["tags.config_fingerprint"] == result["config_fingerprint"]
    assert row["params.resolution"] == "32" and row["params.trainer.max_epochs"] == "2"
    assert row["metrics.test_balanced_accuracy"] == pytest.approx(result["test_metrics"]["balanced_accuracy"])
    client = MlflowClient(mlflow_server)
    run_id = row["run_id"]
    assert [metric.step for metric in client.get_metric_history(run_id, "val_loss")] == [0, 1]
    artifacts = {item.path for folder in ("results", "plots", "hydra")
                 for item in client.list_artifacts(run_id, folder)}
    assert {"results/tiny_cnn_32.json", "plots/confusion_matrix.png", "hydra/config.yaml"} <= artifacts
    run_file = tmp_path / "checkpoints" / "simple" / "tiny_cnn" / "32" / "mlflow_run.json"
    assert json.loads(run_file.read_text()) == {mlflow_server: run_id}

    # Another machine sharing the server has no local result: the server says the run is done.
    for path in (tmp_path / "results" / "test_results").iterdir():
        path.unlink()
    again = train_cli(*FAST, "res=32", "trainer.max_epochs=2", server)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"Skipping tiny_cnn_32: finished with the same config (MLflow run {run_id})" in again.stdout
    assert len(_runs(mlflow_server, "tiny_cnn_32")) == 1

    forced = train_cli(*FAST, "res=32", "trainer.max_epochs=2", server, "skip_completed=false")
    assert forced.returncode == 0, forced.stderr[-3000:]
    assert sorted(_runs(mlflow_server, "tiny_cnn_32")["status"]) == ["FINISHED", "FINISHED"]


def test_a_failing_run_is_marked_failed(train_cli, tmp_path: Path):
    failed = train_cli(*FAST, "res=32", "optimizer.lr=-1")
    assert failed.returncode != 0
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("ResoMap").experiment_id])
    assert (run.info.run_name, run.info.status) == ("tiny_cnn_32", "FAILED")


def test_unreachable_server_fails_fast_or_falls_back_naming_it(train_cli, tmp_path: Path):
    unreachable = f"http://127.0.0.1:{_free_port()}"
    override = f"logger.mlflow.tracking_uri={unreachable}"
    failed = train_cli(*FAST, "res=32", override, timeout=120)
    output = failed.stdout + failed.stderr
    assert failed.returncode != 0
    assert f"MLflow tracking store {unreachable} is unreachable" in output
    assert f"MLflow tracking store {unreachable} failed" in output
    assert not (tmp_path / "checkpoints" / "simple" / "tiny_cnn" / "32" / "last.ckpt").exists()

    # A run finished without the server is skipped from its local result.
    assert train_cli(*FAST, "res=32", "logger=csv").returncode == 0
    skipped = train_cli(*FAST, "res=32", override, timeout=120)
    assert skipped.returncode == 0, skipped.stderr[-3000:]
    assert "Skipping tiny_cnn_32" in skipped.stdout


def test_dagshub_without_a_token_fails_before_training(train_cli, tmp_path: Path, no_credentials):
    completed = train_cli(*FAST, "res=32", "logger=dagshub", "logger.dagshub.repo_owner=alice",
                          "logger.dagshub.repo_name=resomap")
    assert completed.returncode != 0
    assert "logger=dagshub needs a DagsHub token in the environment: export DAGSHUB_TOKEN" in (
        completed.stdout + completed.stderr)
    assert not (tmp_path / "checkpoints").exists()


class _RecordingProxy(BaseHTTPRequestHandler):
    """Forwards every request to the MLflow server and records its Authorization header."""

    target = ""
    seen: list[str | None] = []

    def _forward(self) -> None:
        self.seen.append(self.headers.get("Authorization"))
        length = int(self.headers.get("Content-Length") or 0)
        headers = {key: value for key, value in self.headers.items() if key.lower() != "host"}
        request = urllib.request.Request(self.target + self.path, data=self.rfile.read(length) or None,
                                         method=self.command, headers=headers)
        try:
            response = urllib.request.urlopen(request, timeout=60)
        except urllib.error.HTTPError as error:
            response = error
        with response:
            body = response.read()
            self.send_response(response.status)
            self.send_header("Content-Type", response.headers.get("Content-Type", "application/json"))
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_dagshub_credentials_reach_mlflow_and_are_never_saved(train_cli, mlflow_server: str,
                                                               tmp_path: Path, no_credentials):
    _RecordingProxy.target, _RecordingProxy.seen = mlflow_server, []
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), _RecordingProxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        completed = train_cli(
            *FAST, "res=48", "logger=dagshub", "logger.dagshub.repo_owner=alice",
            "logger.dagshub.repo_name=resomap",
            f"logger.dagshub.tracking_uri=http://127.0.0.1:{proxy.server_address[1]}",
            env={"DAGSHUB_TOKEN": TOKEN})
    finally:
        proxy.shutdown()
    assert completed.returncode == 0, completed.stderr[-3000:]
    expected = "Basic " + base64.b64encode(f"alice:{TOKEN}".encode()).decode()
    assert _RecordingProxy.seen and set(_RecordingProxy.seen) == {expected}
    assert _runs(mlflow_server, "tiny_cnn_48")["status"].tolist() == ["FINISHED"]
    assert TOKEN not in completed.stdout + completed.stderr
    leaks = [path for path in tmp_path.rglob("*") if path.is_file() and TOKEN.encode() in path.read_bytes()]
    assert leaks == []
