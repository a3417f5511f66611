"""The run record: one schema in code, one writer, one reader (first layout included), one doc."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT

from resomap.run import record as records
from resomap.run import record_schema as schema
from resomap.run import record_write as writer
from resomap.run.identity import RunIdentity

DOC = REPO_ROOT / "docs" / "results.md"


def _record(**changes) -> schema.RunRecord:
    identity = RunIdentity("tiny_cnn", 32, 0, "synthetic", "d0", "t0", training={"optimizer": {"lr": 0.1}})
    metrics = schema.TestMetrics(loss=1.0, accuracy=0.5, precision=0.4, recall=0.45, f1_score=0.4,
                                  balanced_accuracy=0.45, per_class_recall={"a": 0.5, "b": 0.4},
                                  confusion_matrix=[[1, 1], [1, 1]], num_images=4,
                                  per_class_auroc={"a": 0.75, "b": None}, macro_auroc=0.75,
                                  per_class_average_precision={"a": 0.8, "b": None})
    data = schema.DataInfo(name="synthetic", root="/data", fingerprint="d0", class_counts={"test": [2, 2]})
    base = schema.RunRecord(identity=identity, timestamp="2026-01-01T00:00:00", classes=["a", "b"],
                             test_metrics=metrics, data=data, history=[{"epoch": 0, "train_loss": 1.0}])
    return dataclasses.replace(base, **changes)


def test_a_record_reads_back_as_written(tmp_path: Path):
    record = _record(profiling={"avg_time_sec": 0.1}, timing={"fit_sec": 2.0})
    path = writer.write_record(tmp_path, record)
    assert path == tmp_path / "runs" / record.identity.digest / "record.json"
    assert schema.read_record(path) == record
    # The readable seed-study name is a view of the same file.
    assert schema.read_record(tmp_path / "test_results" / "tiny_cnn_32.json") == record
    payload = json.loads(path.read_text())
    assert payload["schema_version"] == 3
    seed_keys = [payload[key] for key in ("run_name", "model", "resolution", "seed")]
    assert seed_keys == ["tiny_cnn_32", "tiny_cnn", 32, 0]


def test_a_first_layout_result_is_read(tmp_path: Path):
    first = {"schema_version": 1, "run_name": "vgg11_224", "model": "vgg11", "resolution": 224, "seed": 0,
             "timestamp": "t", "best_val_loss": 0.9, "config_fingerprint": "abc",
             "test_metrics": {"accuracy": 0.8, "recall": 0.6, "per_class_recall": {"mel": 0.6},
                              "confusion_matrix": [[3, 2], [0, 5]]},
             "data": {"name": "skin_cancer", "root": "/d", "fingerprint": "f"},
             "history": [], "config": {}, "classes": ["mel", "nv"]}
    path = tmp_path / "test_results" / "vgg11_224.json"
    path.parent.mkdir()
    path.write_text(json.dumps(first))
    record = schema.read_record(path)
    assert record.test_metrics.balanced_accuracy == 0.6  # macro recall, as the seed recorded it
    assert record.test_metrics.num_images == 10
    assert (record.identity.data_name, record.identity.training_hash) == ("skin_cancer", "abc")


def test_a_file_that_is_not_a_record_is_named_with_the_reason(tmp_path: Path):
    folder = tmp_path / "test_results"
    folder.mkdir()
    (folder / "notes.json").write_text('{"hello": 1}')
    (folder / "broken.json").write_text("{")
    found = dict(records.iter_records(tmp_path))
    assert isinstance(found[folder / "notes.json"], schema.InvalidRecord)
    assert "not a ResoMap run record" in str(found[folder / "notes.json"])
    assert "not readable JSON" in str(found[folder / "broken.json"])


def test_a_finished_run_is_found_only_under_its_own_identity(tmp_path: Path):
    record = _record()
    writer.write_record(tmp_path, record)
    assert records.find_finished(tmp_path, record.identity) == record
    other = dataclasses.replace(record.identity, training_hash="t1")
    assert records.find_finished(tmp_path, other) is None


def _documented_keys() -> set[str]:
    keys = set()
    for line in DOC.read_text().splitlines():
        if line.startswith("| `"):
            keys.update(re.findall(r"`([a-z0-9_.]+)`", line.split("|")[1]))
    return keys


def _schema_keys() -> set[str]:
    keys = set(_record().to_dict())
    keys |= {f"test_metrics.{field.name}" for field in dataclasses.fields(schema.TestMetrics)}
    keys |= {f"data.{field.name}" for field in dataclasses.fields(schema.DataInfo)}
    keys |= {f"identity.{key}" for key in _record().identity.to_dict() if key != "run_name"}
    return keys


@pytest.mark.parametrize("key", sorted(_schema_keys()))
def test_every_field_of_the_record_is_documented(key):
    assert key in _documented_keys(), f"{key} is written but not in docs/results.md"


def test_the_doc_names_no_field_the_record_lacks():
    assert _documented_keys() - _schema_keys() == set()


def test_a_field_of_the_wrong_type_is_named_with_its_file(tmp_path: Path):
    path = writer.write_record(tmp_path, _record())
    payload = json.loads(path.read_text())
    payload["test_metrics"]["num_images"] = "many"
    path.write_text(json.dumps(payload))
    expected = rf"{re.escape(str(path))}.*field test_metrics.num_images: expected int, found str"
    with pytest.raises(schema.InvalidRecord, match=expected):
        schema.read_record(path)
    ((where, found),) = list(records.iter_records(tmp_path))
    assert where == path and isinstance(found, schema.InvalidRecord)


@pytest.mark.parametrize(("field", "value", "expected"), [
    (("identity", "model"), "../../etc", "identity.model"),
    (("identity", "digest"), "0000000000000000", "identity.digest"),
    (("history",), {"epoch": 0}, "field history"),
    (("identity", "resolution"), True, "identity.resolution"),
])
def test_edited_or_unsafe_fields_are_refused(tmp_path: Path, field, value, expected):
    path = writer.write_record(tmp_path, _record())
    payload = json.loads(path.read_text())
    node = payload
    for key in field[:-1]:
        node = node[key]
    node[field[-1]] = value
    path.write_text(json.dumps(payload))
    with pytest.raises(schema.InvalidRecord, match=re.escape(expected)):
        schema.read_record(path)


def test_a_record_in_another_runs_folder_is_refused(tmp_path: Path):
    record = _record()
    path = writer.write_record(tmp_path, record)
    moved = tmp_path / "runs" / "feedfacefeedface" / "record.json"
    moved.parent.mkdir()
    path.rename(moved)
    found = dict(records.iter_records(tmp_path))
    assert isinstance(found[moved], schema.InvalidRecord) and "not of the folder" in str(found[moved])


def test_results_of_the_earlier_layout_stay_readable_and_are_kept_when_a_view_replaces_them(tmp_path: Path):
    old = _record()
    folder = tmp_path / "test_results"
    folder.mkdir()
    payload = {**old.to_dict(), "schema_version": 2, "predictions_file": "tiny_cnn_32.npz"}
    labels = np.array([0, 1, 0, 1])
    writer.write_predictions(folder / "tiny_cnn_32.npz", labels, np.eye(2)[labels] * 0.8 + 0.1)
    (folder / "tiny_cnn_32.json").write_text(json.dumps(payload))  # written last, as runs did
    ((_, found),) = list(records.iter_records(tmp_path))
    assert found == old
    assert records.read_predictions(tmp_path, found)["labels"].tolist() == labels.tolist()

    new = _record(identity=dataclasses.replace(old.identity, training_hash="t2"))
    writer.write_record(tmp_path, new)
    found = {record.identity.digest: record for _, record in records.iter_records(tmp_path)}
    assert set(found) == {old.identity.digest, new.identity.digest}
    kept = records.read_predictions(tmp_path, found[old.identity.digest])
    assert kept["labels"].tolist() == labels.tolist()
    assert schema.read_record(folder / "tiny_cnn_32.json") == new  # the view shows the latest
