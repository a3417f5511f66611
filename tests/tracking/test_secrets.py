"""No secret reaches a file, a log or a child's command line: real runs against a real MLflow server.

The user passes a tracking URI with a password on the command line and has a token in the
environment. Two runs, each in its own project folder, log to one server: a single run (trains in
the process the user started, uploads its Hydra files) and a sweep job that trains with DDP, so it
runs in a child process which starts rank 1 in another. Afterwards no file under the projects, the
server's store or its artifacts holds either secret, and neither ever appeared in a child's argv.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import tiny_overrides
from mlflow.tracking import MlflowClient
from mlflow_server import mlflow_server_at, recording_proxy

# One xdist worker runs this file, so its module fixtures are built once (--dist loadgroup).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("secrets")]

# Every character RFC 3986 allows unencoded in a URI's user info, between two markers: a leak of
# any part of it (say, what follows the ') is found by one of the fragments.
PASSWORD = "Hd7q'!$&()*+,;=:~-._Zx9k"
TOKEN = "tok-abcdef123"
# Secrets inside dict and list overrides.
NESTED = ("tk-nested-42", "lst-secret-1", "lst-secret-2")
SECRETS = tuple(text.encode() for text in (PASSWORD, TOKEN, "Hd7q", "Zx9k", "!$&()*+,;=", *NESTED))
NESTED_OVERRIDES = (f"+extra={{api_token:'{NESTED[0]}',n:1}}", f"+xtra.api_token=[{NESTED[1]},{NESTED[2]}]")
CREDENTIAL_VARIABLES = ("DAGSHUB_TOKEN", "DAGSHUB_USER_TOKEN", "MLFLOW_TRACKING_USERNAME",
                        "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "RESOMAP_ROOT")
FAST = ("model=tiny_cnn", "explain=none", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1")
DDP = ("trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu")


@dataclass
class Runs:
    root: Path
    server: Path
    url: str
    outputs: list[str] = field(default_factory=list)
    child_argvs: set[tuple[str, ...]] = field(default_factory=set)
    authorizations: list[str | None] = field(default_factory=list)


@dataclass
class Server:
    folder: Path
    url: str
    proxy_port: int
    seen: list[str | None]


def _parent_pids() -> dict[int, int]:
    """pid -> parent pid of every process now (from /proc/<pid>/stat)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return parents


def _descendant_argvs(root_pid: int) -> set[tuple[str, ...]]:
    """The argv of every process below ``root_pid``, as ``ps`` would show it to any user."""
    parents = _parent_pids()
    found = set()
    for pid in parents:
        ancestor = parents.get(pid)
        while ancestor and ancestor != root_pid:
            ancestor = parents.get(ancestor)
        if ancestor == root_pid:
            try:
                raw = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if raw:
                found.add(tuple(part.decode(errors="replace") for part in raw.rstrip(b"\0").split(b"\0")))
    return found


def _train(runs: Runs, args: list[str], timeout: float = 600) -> None:
    """``python -m resomap.train args`` as the user would start it (the URI with its password on
    the command line, a token in the environment), watching its descendants' argv while it runs."""
    env = {key: value for key, value in os.environ.items() if key not in CREDENTIAL_VARIABLES}
    env.update(PYTHONUNBUFFERED="1", MLFLOW_TRACKING_TOKEN=TOKEN)
    log = runs.root.parent / f"console-{len(runs.outputs)}.txt"  # outside the searched folders
    command = (sys.executable, "-m", "resomap.train", *args)
    with open(log, "wb") as output:
        process = subprocess.Popen(command, cwd=runs.root, env=env,
                                   stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        try:
            while process.poll() is None and time.monotonic() < deadline:
                # A child caught between fork and exec still shows the command line the user typed
                # (its parent's memory): the user's own words, not a command line ResoMap wrote.
                runs.child_argvs |= _descendant_argvs(process.pid) - {command}
                time.sleep(0.05)
        finally:
            if process.poll() is None:  # its child and rank processes too: they share its session
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    text = log.read_text(errors="replace")
    runs.outputs.append(text)
    assert process.returncode == 0, text[-4000:]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A real MLflow server, reached through a proxy that records each request's credentials."""
    folder = tmp_path_factory.mktemp("mlflow-secrets")
    with mlflow_server_at(folder) as url, recording_proxy(url) as (port, seen):
        yield Server(folder, url, port, seen)


def _runs(server: Server, base: Path, data_root: Path, *args: str, timeout: float = 600) -> Runs:
    root = base / "project"
    root.mkdir()
    runs = Runs(root=root, server=server.folder, url=server.url)
    first = len(server.seen)
    _train(runs, [*args, *tiny_overrides(root, data_root), *FAST, *NESTED_OVERRIDES,
                  f'logger.mlflow.tracking_uri="http://alice:{PASSWORD}@127.0.0.1:{server.proxy_port}"'],
           timeout=timeout)
    runs.authorizations = server.seen[first:]
    return runs


@pytest.fixture(scope="module")
def single(server: Server, tmp_path_factory: pytest.TempPathFactory, tiny_data_root: Path) -> Runs:
    """A single run: trains in the process the user started, uploads its Hydra files."""
    return _runs(server, tmp_path_factory.mktemp("single"), tiny_data_root, "res=32")


@pytest.fixture(scope="module")
def ddp_sweep(server: Server, tmp_path_factory: pytest.TempPathFactory, tiny_data_root: Path) -> Runs:
    """A sweep job with DDP on CPU: it runs in a child process, which starts rank 1 in another."""
    return _runs(server, tmp_path_factory.mktemp("ddp"), tiny_data_root, "-m", *DDP, "res=48", timeout=420)


def _lead_owned(leak: str) -> bool:
    """Result records and checkpoints: written by resomap.run, redacted there."""
    name = leak.split(":")[0]
    return "test_results/" in name or name.endswith(".ckpt")


def _files_holding_secrets(folder: Path) -> list[str]:
    return sorted(f"{path.relative_to(folder)}: {[secret.decode() for secret in SECRETS if secret in data]}"
                  for path in folder.rglob("*")
                  if path.is_file() and any(secret in (data := path.read_bytes()) for secret in SECRETS))


def test_credentials_in_the_uri_still_authenticate_every_request(single: Runs):
    expected = "Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    assert single.authorizations and set(single.authorizations) == {expected}
    client = MlflowClient(single.url)
    (run,) = client.search_runs([client.get_experiment_by_name("ResoMap").experiment_id],
                                "attributes.run_name = 'tiny_cnn_32'")
    assert run.info.status == "FINISHED"
    with tempfile.TemporaryDirectory() as folder:
        config = Path(client.download_artifacts(run.info.run_id, "config/config.yaml", folder)).read_text()
    assert "tracking_uri: http://***@127.0.0.1:" in config


def test_no_secret_in_the_console_output(single: Runs):
    (output,) = single.outputs
    assert not [secret for secret in SECRETS if secret.decode() in output]


def test_no_secret_in_hydra_files_logs_or_the_tracking_server(single: Runs):
    hydra_config = single.root / "outputs" / ".hydra" / "config.yaml"
    assert "tracking_uri: http://***@127.0.0.1:" in hydra_config.read_text()
    assert list(single.root.rglob("*.log")), "the run wrote no log file to search"
    leaks = [leak for leak in _files_holding_secrets(single.root) if not _lead_owned(leak)]
    assert leaks == []
    assert _files_holding_secrets(single.server) == []


def test_no_secret_in_results_or_checkpoints(single: Runs):
    assert list(single.root.rglob("*.ckpt")) and list(single.root.rglob("test_results/*.json"))
    assert _files_holding_secrets(single.root) == []


def test_child_processes_get_secrets_through_the_environment_not_argv(ddp_sweep: Runs):
    trainers = [argv for argv in ddp_sweep.child_argvs if "resomap.train" in argv]
    # The sweep job's own process and the rank 1 it started: both given the URI by reference.
    assert len(trainers) >= 2, ddp_sweep.child_argvs
    by_value = [argv for argv in trainers if not any("${oc.env:RESOMAP_SECRET_" in part for part in argv)]
    assert by_value == []
    leaked = [argv for argv in ddp_sweep.child_argvs if any(s.decode() in " ".join(argv) for s in SECRETS)]
    assert leaked == []


def test_no_secret_in_a_sweep_s_files_or_console(ddp_sweep: Runs):
    (output,) = ddp_sweep.outputs
    assert not [secret for secret in SECRETS if secret.decode() in output]
    assert "://***@127.0.0.1" in output  # Hydra's launcher line, redacted
    multirun = (ddp_sweep.root / "multirun" / "multirun.yaml").read_text()
    assert "tracking_uri: http://***@127.0.0.1:" in multirun
    leaks = [leak for leak in _files_holding_secrets(ddp_sweep.root) if not _lead_owned(leak)]
    assert leaks == []


def test_a_ddp_sweep_job_s_run_is_a_child_of_the_sweep_s_run(ddp_sweep: Runs):
    """The job's run is created in its own process, which Hydra runs as a single run: the sweep's
    run id reaches it through the environment."""
    client = MlflowClient(ddp_sweep.url)
    runs = client.search_runs([client.get_experiment_by_name("ResoMap").experiment_id])
    (sweep,) = [run for run in runs if run.data.tags.get("resomap.sweep") == str(ddp_sweep.root / "multirun")]
    (job,) = [run for run in runs if run.info.run_name == "tiny_cnn_48"]
    assert sweep.info.status == "FINISHED" and job.data.tags["mlflow.parentRunId"] == sweep.info.run_id
