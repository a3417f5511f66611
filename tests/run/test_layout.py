"""Everything a run writes is named by its identity: a sweep over any key keeps every run, a
re-run trains nothing, and a record is never paired with another configuration's files."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import checkpoint_folders
from mlflow.tracking import MlflowClient

from resomap import orchestrate
from resomap.run import build, record_write
from resomap.run import record as records
from resomap.run.job import read_job
from resomap.sweep import SweepSummary, sweep_jobs

pytestmark = pytest.mark.slow

LR_SWEEP = ("-m", "model=tiny_cnn", "res=32", "optimizer.lr=0.001,0.01", "explain=none",
            "callbacks.profile.warmup_runs=1", "callbacks.profile.timed_runs=1")


def _runs(results_dir: Path) -> dict[float, records.RunRecord]:
    found = [record for _, record in records.iter_records(results_dir)]
    assert all(isinstance(record, records.RunRecord) for record in found), found
    return {record.identity.training["optimizer"]["lr"]: record for record in found}


def test_a_sweep_over_the_learning_rate_keeps_both_runs_and_a_rerun_trains_nothing(train_cli, tmp_path):
    first = train_cli(*LR_SWEEP)
    assert first.returncode == 0, first.stderr[-3000:]
    assert ("Runs of tiny_cnn in this sweep differ in more than the resolution: optimizer.lr (0.001, 0.01)"
            in first.stdout + first.stderr)
    results_dir = tmp_path / "results"
    runs = _runs(results_dir)
    assert sorted(runs) == [0.001, 0.01]
    for lr, record in runs.items():
        folder = records.run_dir(results_dir, record)
        assert folder.name == record.identity.digest
        assert record.config["optimizer"]["lr"] == lr
        saved = records.read_predictions(results_dir, record)
        assert len(saved["labels"]) == record.test_metrics.num_images
        with np.load(folder / "predictions.npz") as raw:
            assert str(raw["identity"]) == record.identity.digest
        assert len(checkpoint_folders(tmp_path, "tiny_cnn_32")) == 2
    jobs = sweep_jobs(tmp_path / "multirun")
    assert {(job["identity"], job["status"]) for job in jobs} == {
        (record.identity.digest, "finished") for record in runs.values()}

    second = train_cli(*LR_SWEEP)
    assert second.returncode == 0, second.stderr[-3000:]
    output = second.stdout + second.stderr
    assert output.count("Skipping tiny_cnn_32: finished with the same configuration") == 2
    assert "Record written" not in output
    assert {lr: record.timestamp for lr, record in _runs(results_dir).items()} == {
        lr: record.timestamp for lr, record in runs.items()}
    assert sorted(job["status"] for job in sweep_jobs(tmp_path / "multirun")) == ["skipped", "skipped"]


def test_the_end_of_sweep_report_covers_this_sweeps_runs_only(tmp_path, monkeypatch):
    """job.json says which identity each job was; the summary passes exactly those to the report."""
    import time

    from omegaconf import OmegaConf

    import resomap.study.aggregate as aggregate

    sweep_dir = tmp_path / "multirun"
    summary = SweepSummary()
    summary.started = time.time() - 1
    statuses = [("aaaa", "finished"), ("bbbb", "skipped"), ("cccc", "failed")]
    for number, (digest, status) in enumerate(statuses):
        job = {"identity": digest, "run_name": "tiny_cnn_32", "model": "tiny_cnn", "res": 32, "seed": 0,
               "status": status}
        (sweep_dir / str(number)).mkdir(parents=True)
        (sweep_dir / str(number) / "job.json").write_text(json.dumps(job))
    (sweep_dir / "3").mkdir()
    (sweep_dir / "3" / "job.json").write_text(json.dumps({"identity": "../x", "status": "finished"}))
    assert read_job(sweep_dir / "3") is None and read_job(sweep_dir / "0")["identity"] == "aaaa"
    seen = {}

    def write_aggregates(results_dir, evaluate_cross_res=True, digests=None, **settings):
        seen["digests"] = digests
        path = Path(results_dir) / "summary.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
        return [path]

    monkeypatch.setattr(aggregate, "write_aggregates", write_aggregates)
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep_dir)}},
                               "paths": {"results_dir": str(tmp_path / "results")},
                               "evaluate_cross_res": False, "report": {}})
    summary.on_multirun_end(config)
    assert seen["digests"] == {"aaaa", "bbbb"}


def test_a_record_is_never_paired_with_another_configs_predictions(compose_train, monkeypatch):
    """Config B of the same run name killed between its predictions and its record leaves A intact."""
    first = compose_train()
    orchestrate.run(first)
    (path, record), = records.iter_records(first.paths.results_dir)
    own = records.read_predictions(first.paths.results_dir, record)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # a kill right after B's predictions were written

    other = compose_train("optimizer.lr=0.05")
    monkeypatch.setattr(record_write, "write_record", killed)
    with pytest.raises(KeyboardInterrupt):
        orchestrate.run(other)
    monkeypatch.undo()
    ((_, again),) = records.iter_records(first.paths.results_dir)
    assert again == record
    after = records.read_predictions(first.paths.results_dir, again)
    assert all(np.array_equal(after[key], own[key]) for key in own)
    # A companion of another identity put in the record's folder is refused, naming both.
    foreign = records.run_dir(first.paths.results_dir, build.identify(other)) / "predictions.npz"
    assert foreign.is_file()  # B's, written before its kill
    os.replace(foreign, path.parent / "predictions.npz")
    with pytest.raises(records.InvalidRecord, match="belong to run"):
        records.read_predictions(first.paths.results_dir, record)
    # And a run skipped as finished is this identity's: lr=0.001 is skipped, lr=0.05 is not.
    assert orchestrate.run_outcome(compose_train()).status == "skipped"


def test_a_damaged_record_is_one_clear_error_with_the_command_that_retrains_it(compose_train):
    cfg = compose_train("logger=mlflow")
    orchestrate.run(cfg)
    (path, record), = records.iter_records(cfg.paths.results_dir)
    path.write_text(path.read_text().replace('"num_images": 21', '"num_images": "many"'))
    # The MLflow run is FINISHED: the damaged record must not be skipped silently through it.
    with pytest.raises(orchestrate.CorruptRecordError) as caught:
        orchestrate.run(compose_train("logger=mlflow"))
    message = str(caught.value)
    assert str(path) in message and "test_metrics.num_images" in message and "skip_completed=false" in message
    objective = orchestrate.run(compose_train("logger=mlflow", "skip_completed=false"))
    assert records.read_record(path).best_val_metrics["val_balanced_accuracy"] == objective


def test_a_run_skipped_through_mlflow_brings_back_its_own_record(compose_train, tmp_path, caplog):
    """Another results folder sharing the store: the skipped run's record comes from the store,
    never from a local file of another configuration of the same name."""
    store = f"logger.mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db"
    cfg = compose_train("logger=mlflow", store)
    orchestrate.run(cfg)
    (_, record), = records.iter_records(cfg.paths.results_dir)
    elsewhere = tmp_path / "elsewhere"
    orchestrate.run(compose_train("logger=mlflow", store, f"paths.results_dir={elsewhere}",
                                  "optimizer.lr=0.05"))
    with caplog.at_level(logging.INFO):
        outcome = orchestrate.run_outcome(compose_train("logger=mlflow", store,
                                                        f"paths.results_dir={elsewhere}"))
    assert outcome.status == "skipped" and outcome.identity == record.identity
    assert "(MLflow run" in caplog.text
    fetched = records.read_record(records.record_path(elsewhere, record.identity))
    assert fetched.identity == record.identity
    assert fetched.test_metrics == record.test_metrics
    assert records.read_predictions(elsewhere, fetched)["labels"].tolist() == \
        records.read_predictions(cfg.paths.results_dir, record)["labels"].tolist()
    assert len([item for item in records.iter_records(elsewhere)]) == 2
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("ResoMap").experiment_id],
                              f"tags.identity = '{record.identity.digest}'")
    assert [run.info.status for run in runs] == ["FINISHED"]
