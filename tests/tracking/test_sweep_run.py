"""MLflow as users browse it: a sweep's run holds its jobs' runs and its report; each job's run
holds a few params and its config as one YAML file; the store survives moving the project."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import run_module, tiny_overrides
from mlflow.tracking import MlflowClient

from resomap.tracking import mlflow as tracking
from resomap.tracking import sweep_run

SWEEP = ["model=tiny_cnn", "res=32,40", "explain=none", "trainer.max_epochs=1",
         "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "logger=mlflow"]


def _runs(client: MlflowClient) -> tuple[list, list]:
    """(sweep runs, job runs) of the ResoMap experiment."""
    experiment = client.get_experiment_by_name("ResoMap").experiment_id
    runs = client.search_runs([experiment])
    return ([run for run in runs if sweep_run.SWEEP_TAG in run.data.tags],
            [run for run in runs if "identity" in run.data.tags])


@pytest.mark.slow
def test_a_sweep_is_one_parent_run_of_its_jobs_runs(tmp_path: Path, tiny_data_root: Path):
    project = tmp_path / "project"
    project.mkdir()
    args = ["-m", *tiny_overrides(project, tiny_data_root), *SWEEP]
    completed = run_module("resomap.train", args, cwd=project)
    assert completed.returncode == 0, completed.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{project}/mlflow.db")
    (parent,), jobs = _runs(client)
    assert parent.info.status == "FINISHED" and len(jobs) == 2
    assert {job.data.tags[sweep_run.PARENT_TAG] for job in jobs} == {parent.info.run_id}
    assert {job.info.run_name for job in jobs} == {"tiny_cnn_32", "tiny_cnn_40"}
    report = {item.path for item in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/all_results.csv", "report/results_summary.json", "report/report.html"} <= report
    listed = json.loads(Path(client.download_artifacts(parent.info.run_id, "sweep/jobs.json",
                                                       str(tmp_path))).read_text())
    assert sorted(job["status"] for job in listed["jobs"]) == ["finished", "finished"]
    assert sorted(job["mlflow_run_id"] for job in listed["jobs"]) == sorted(job.info.run_id for job in jobs)

    job = client.get_run(next(job.info.run_id for job in jobs if job.info.run_name == "tiny_cnn_32"))
    assert job.data.params == {"model": "tiny_cnn", "resolution": "32", "seed": "0", "data": "synthetic",
                               "epochs": "1", "batch_size": "16", "learning_rate": "0.001",
                               "optimizer": "AdamW"}
    assert len(job.data.params) < 20 and len(job.data.tags) < 20
    config = yaml.safe_load(Path(client.download_artifacts(job.info.run_id, "config/config.yaml",
                                                           str(tmp_path))).read_text())
    assert config["model"]["name"] == "tiny_cnn" and config["res"] == 32

    # The same sweep again: every job is skipped, so no second run of any identity.
    again = run_module("resomap.train", args, cwd=project)
    assert again.returncode == 0, again.stderr[-3000:]
    parents, rerun = _runs(client)
    assert len(parents) == 2 and all(run.info.status == "FINISHED" for run in parents)
    assert sorted(run.info.run_id for run in rerun) == sorted(run.info.run_id for run in jobs)
    # Its own run lists the skipped jobs' runs, which stay children of the first sweep.
    latest = max(parents, key=lambda run: run.info.start_time)
    listed = json.loads(Path(client.download_artifacts(latest.info.run_id, "sweep/jobs.json",
                                                       str(tmp_path / "again"))).read_text())
    assert sorted((job["status"], job["mlflow_run_id"]) for job in listed["jobs"]) == sorted(
        ("skipped", job.info.run_id) for job in jobs)
    assert {run.data.tags[sweep_run.PARENT_TAG] for run in rerun} == {parent.info.run_id}

    # The whole project moves; its runs' artifacts are read from the new place.
    moved = tmp_path / "elsewhere" / "project"
    moved.parent.mkdir()
    shutil.move(project, moved)
    client = MlflowClient(tracking.absolute_store_uri(f"sqlite:///{moved}/mlflow.db"))
    local = client.download_artifacts(parent.info.run_id, "report/all_results.csv", str(tmp_path / "csv"))
    assert "tiny_cnn" in Path(local).read_text()


@pytest.mark.slow
def test_a_single_run_has_no_parent(train_cli, tmp_path: Path):
    completed = train_cli("model=tiny_cnn", "res=32", "explain=none", "logger=mlflow",
                          "trainer.limit_train_batches=2", "trainer.limit_val_batches=1")
    assert completed.returncode == 0, completed.stderr[-3000:]
    parents, (job,) = _runs(MlflowClient(f"sqlite:///{tmp_path}/mlflow.db"))
    assert parents == [] and sweep_run.PARENT_TAG not in job.data.tags


def test_a_run_id_read_back_must_be_mlflow_s(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    good = "0123456789abcdef0123456789abcdef"
    assert sweep_run._valid({"s": good, "t": "../../etc", "u": good.upper(), "v": 7, 3: good}) == {"s": good}
    (tmp_path / sweep_run.SWEEP_FILE).write_text("not json")
    assert sweep_run._read_file(tmp_path / sweep_run.SWEEP_FILE) == {}
    monkeypatch.setenv(sweep_run.SWEEP_ENV, json.dumps({"sqlite:///x.db": good}))
    assert sweep_run.parent_run_id("sqlite:///x.db") == good  # a DDP child of a sweep's job
    monkeypatch.setenv(sweep_run.SWEEP_ENV, "{broken")
    assert sweep_run.parent_run_id("sqlite:///x.db") is None


def test_a_stopped_sweep_s_run_ends_killed(tmp_path: Path):
    """A sweep stopped by Ctrl-C or SIGTERM never reaches on_multirun_end: its run is ended at exit."""
    uri = tracking.absolute_store_uri(f"sqlite:///{tmp_path}/mlflow.db")
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("ResoMap"), tags={sweep_run.SWEEP_TAG: "multirun"})
    sweep_run._end_running([uri], {uri: run.info.run_id})
    assert client.get_run(run.info.run_id).info.status == "KILLED"
    client.set_terminated(run.info.run_id, "FINISHED")
    sweep_run._end_running([uri], {uri: run.info.run_id})  # a finished sweep's run is left as it is
    assert client.get_run(run.info.run_id).info.status == "FINISHED"


def test_the_end_of_a_sweep_ends_only_a_sweep_s_run(tmp_path: Path):
    """``mlflow_sweep.json`` is data: a run id in it that is not a sweep's run is left alone."""
    from resomap.tracking.settings import TrackingSettings

    uri = tracking.absolute_store_uri(f"sqlite:///{tmp_path}/mlflow.db")
    sweep_dir = tmp_path / "multirun"
    settings = TrackingSettings(
        stores=({"_target_": "resomap.tracking.mlflow.MLFlowLogger", "tracking_uri": uri,
                 "experiment_name": "ResoMap"},),
        checkpoint_dir=tmp_path / "checkpoints", results_dir=tmp_path / "results")
    (tmp_path / "multirun").mkdir()
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "all_results.csv").write_text("model,res\ntiny_cnn,32\n")
    client = MlflowClient(uri)
    job = client.create_run(client.create_experiment("ResoMap"), tags={"identity": "abcd1234"})
    (tmp_path / "multirun" / sweep_run.SWEEP_FILE).write_text(json.dumps({uri: job.info.run_id}))
    sweep_run.finish_sweep_runs(settings, sweep_dir, [tmp_path / "results" / "all_results.csv"], [],
                                failed=False)
    assert client.get_run(job.info.run_id).info.status == "RUNNING"

    (started,) = sweep_run.start_sweep_runs(settings, sweep_dir).values()
    sweep_run.finish_sweep_runs(settings, sweep_dir, [tmp_path / "results" / "all_results.csv"], [],
                                failed=False)
    assert client.get_run(started).info.status == "FINISHED"
    assert [item.path for item in client.list_artifacts(started, "report")] == ["report/all_results.csv"]
