"""A results folder is data: nothing planted in it becomes a path, a config name or code.

The attack: a record whose model name walks out of the config tree to a YAML planted beside the
results. That YAML's ``_target_`` then passes as "the project's" and the record's arguments are
instantiated; here the payload only creates a canary file (``logging.basicConfig`` opens the
file it is given). The canary must never appear: not when a reader loads the run, not from
``resomap report`` (a real subprocess), not at the end of a real sweep.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_module

from resomap.config import PRIMARY_DATA
from resomap.io import write_json
from resomap.run.identity import RunIdentity
from resomap.run.record_schema import DataInfo, RunRecord, TestMetrics
from resomap.run.trained import UntrustedRecordError, load_trained

CLASSES = ["a", "b"]


def _record(model: str, resolution: int, data_root: Path, config: dict) -> RunRecord:
    identity = RunIdentity(model=model, resolution=resolution, seed=0, data_name=PRIMARY_DATA,
                           data_fingerprint="0" * 16, training_hash="1" * 16)
    metrics = TestMetrics(loss=0.7, accuracy=0.5, precision=0.5, recall=0.5, f1_score=0.5,
                          balanced_accuracy=0.5, per_class_recall={"a": 0.5, "b": 0.5},
                          confusion_matrix=[[1, 1], [1, 1]], num_images=4)
    return RunRecord(identity=identity, timestamp="2026-01-01T00:00:00", classes=CLASSES,
                     test_metrics=metrics,
                     data=DataInfo(name=PRIMARY_DATA, root=str(data_root), fingerprint="0" * 16),
                     precision="32-true", config=config)


@dataclasses.dataclass
class Planted:
    results: Path
    checkpoints: Path
    canary: Path
    record: RunRecord


def plant(project: Path, data_root: Path, absolute: bool = False) -> Planted:
    """A results folder holding an attacker's YAML, a record naming it, and a checkpoint that
    loads (plain tensors and containers), beside one ordinary record at another resolution."""
    results, checkpoints = project / "results", project / "checkpoints"
    (results / "test_results").mkdir(parents=True)
    checkpoints.mkdir()
    canary = project / "CANARY"
    net = {"_target_": "logging.basicConfig", "force": True, "filename": str(canary)}
    (results / "evil.yaml").write_text(json.dumps({"name": "evil", "net": {"_target_": net["_target_"]}}))
    # Enough '..' to reach / from any folder (the config tree, the checkpoints folder), then down
    # to the planted file: the same name leads both to the YAML and to the planted checkpoint.
    model = str(results / "evil") if absolute else "../" * 40 + str(results / "evil").lstrip("/")
    record = _record(model, 64, data_root, {"model": {"name": model, "net": net}})
    write_json(results / "test_results" / "evil_64.json", record.to_dict())
    benign = _record("tiny_cnn", 32, data_root, {"model": {"name": "tiny_cnn"}})
    write_json(results / "test_results" / "tiny_cnn_32.json", benign.to_dict())
    checkpoint = Path(os.path.normpath(checkpoints / record.run_name / record.identity.digest / "best.ckpt"))
    if absolute:
        checkpoint = Path(record.run_name) / record.identity.digest / "best.ckpt"
    checkpoint.parent.mkdir(parents=True)
    torch.save({"hyper_parameters": {"num_classes": 2, "class_names": CLASSES,
                                     "identity": {"digest": record.identity.digest}},
                "state_dict": {}}, checkpoint)
    return Planted(results, checkpoints, canary, record)


@pytest.mark.parametrize("absolute", [False, True], ids=["relative", "absolute"])
def test_a_reader_refuses_a_model_name_that_leaves_the_config_tree(tmp_path: Path, absolute: bool):
    planted = plant(tmp_path, tmp_path, absolute)
    with pytest.raises(UntrustedRecordError, match="not a valid name"):
        load_trained(planted.record, planted.checkpoints)
    assert not planted.canary.exists()


def test_a_model_name_must_be_one_of_hydra_s_model_configs(tmp_path: Path):
    planted = plant(tmp_path, tmp_path)
    # A plain name, but no model config of that name on the search path: refused, nothing loaded.
    net = planted.record.config["model"]["net"]
    identity = dataclasses.replace(planted.record.identity, model="evil")
    record = dataclasses.replace(planted.record, identity=identity,
                                 config={"model": {"name": "evil", "net": net}})
    (tmp_path / "checkpoints" / "evil_64" / record.identity.digest).mkdir(parents=True)
    with pytest.raises(UntrustedRecordError, match="not one of the model configs.*tiny_cnn"):
        load_trained(record, planted.checkpoints)
    assert not planted.canary.exists()


def test_resomap_report_never_runs_a_planted_payload(tmp_path: Path, tiny_data_root: Path):
    planted = plant(tmp_path, tiny_data_root)
    completed = run_module("resomap.report", [f"results_dir={planted.results}", f"paths.root_dir={tmp_path}"],
                           cwd=tmp_path, timeout=300)
    output = completed.stdout + completed.stderr
    assert not planted.canary.exists(), output[-3000:]
    # The rest of the report is built, and it says why the planted run was left out.
    report = (planted.results / "report.md").read_text()
    assert "is not a valid name" in output + report, output[-3000:]


@pytest.mark.slow
def test_the_end_of_a_sweep_never_runs_a_planted_payload(tmp_path: Path, tiny_data_root: Path, train_cli):
    planted = plant(tmp_path, tiny_data_root)
    completed = train_cli("-m", "model=tiny_cnn", "res=32", "explain=none", "trainer.limit_train_batches=2",
                          "trainer.limit_val_batches=1", timeout=600)
    output = completed.stdout + completed.stderr
    assert list((planted.results / "test_results").glob("tiny_cnn_32*.json")), output[-3000:]
    assert not planted.canary.exists(), output[-3000:]


def test_a_mistyped_record_beside_good_ones_never_aborts_the_report(tmp_path: Path, tiny_data_root: Path):
    """A string resolution in one record: that record is named and left out, the report is built."""
    results = tmp_path / "results"
    (results / "test_results").mkdir(parents=True)
    for resolution in (32, 64):
        record = _record("tiny_cnn", resolution, tiny_data_root, {"model": {"name": "tiny_cnn"}})
        write_json(results / "test_results" / f"{record.run_name}.json", record.to_dict())
    bad = _record("tiny_cnn", 48, tiny_data_root, {"model": {"name": "tiny_cnn"}}).to_dict()
    bad["resolution"] = bad["identity"]["resolution"] = "forty-eight"
    write_json(results / "test_results" / "tiny_cnn_48.json", bad)
    completed = run_module("resomap.report", [f"results_dir={results}", "evaluate_cross_res=false"],
                           cwd=tmp_path, timeout=300)
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-3000:]
    assert (results / "report.md").is_file() and (results / "all_results.csv").is_file()
    assert "tiny_cnn_48.json" in output


def test_no_record_field_makes_the_agreement_write_outside_the_results(tmp_path: Path):
    """Run, model and maps-file names with traversal: the record is skipped, nothing is read or
    written outside the results folder."""
    from resomap.study.agreement import write_agreement

    results = tmp_path / "results"
    (results / "test_results").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    maps = {"images": np.array(["train/a/x.png", "../../../../etc/hostname"]),
            "ig__label": np.random.default_rng(0).random((2, 4, 4), np.float32)}
    for name in ("maps.npz", "m_32/maps.npz", "m_64/maps.npz"):
        (outside / name).parent.mkdir(exist_ok=True)
        np.savez(outside / name, **maps)
    for model, maps_file in (("../../outside/m", "maps.npz"), ("tiny_cnn", "../../../outside/maps.npz")):
        for resolution in (32, 64):
            (results / "explanations" / f"{model}_{resolution}").mkdir(parents=True, exist_ok=True)
            record = dataclasses.replace(_record(model, resolution, tmp_path, {}),
                                         explain={"methods": {"ig": {}}, "maps_file": maps_file,
                                                  "data_root": str(tmp_path)})
            write_json(results / "test_results" / f"r{len(list((results / 'test_results').iterdir()))}.json",
                       record.to_dict())
    before = sorted(path for path in tmp_path.rglob("*") if results not in path.parents)
    summary, written = write_agreement(results)
    assert summary == [] and written == []
    assert sorted(path for path in tmp_path.rglob("*") if results not in path.parents) == before

