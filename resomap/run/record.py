"""The record of one finished run: its typed schema, its one writer and its one reader.

A run's record, ``results/test_results/{run_name}.json``, is written once, atomically, after
testing: it is the run's commit point (a run with a record is finished; tracking mirrors it
afterwards). Its test predictions go to the ``.npz`` beside it first. Every later reader
(aggregate, study, report, cross-resolution matrix, explain) goes through :func:`read_record`
/ :func:`iter_records`, which also read the first layout (``schema_version: 1``).
``docs/results.md`` documents each field; a test keeps the two in step.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from resomap.config import PRIMARY_DATA
from resomap.io import atomic_write_bytes, write_json
from resomap.run.identity import RunIdentity

SCHEMA_VERSION = 2
TEST_RESULTS = "test_results"


class ResultContributor(Protocol):
    """A callback that adds a section (``profiling``, ``complexity``...) to the record."""

    def result_section(self, trainer: Any, pl_module: Any) -> dict[str, Any]: ...


class InvalidResult(ValueError):
    """A file in the results folder is not a readable ResoMap record."""


@dataclasses.dataclass(frozen=True)
class TestMetrics:
    """Metrics of the tested checkpoint on the test split (macro averages run over all classes)."""

    loss: float | None
    accuracy: float | None
    precision: float | None
    recall: float | None
    f1_score: float | None
    # ISIC's balanced accuracy: the mean of per-class recalls.
    balanced_accuracy: float | None
    per_class_recall: dict[str, float | None]
    confusion_matrix: list[list[int]]
    num_images: int
    # One-vs-rest ROC AUC and average precision of each class from the test probabilities
    # (None for a class absent from the test split); macro AUROC is their mean.
    per_class_auroc: dict[str, float | None] = dataclasses.field(default_factory=dict)
    macro_auroc: float | None = None
    per_class_average_precision: dict[str, float | None] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class DataInfo:
    name: str
    root: str
    fingerprint: str
    # Images per class, in ``classes`` order, per split.
    class_counts: dict[str, list[int]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """Everything one run measured. Field names of the seed study keep their meanings."""

    identity: RunIdentity
    timestamp: str
    classes: list[str]
    test_metrics: TestMetrics
    data: DataInfo
    best_val_loss: float | None = None
    best_epoch: int | None = None
    best_val_metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    epochs_run: int = 0
    global_step: int = 0
    fit_time_sec: float = 0.0
    precision: str = ""
    accelerator: str = ""
    device: str = ""
    num_devices: int = 1
    versions: dict[str, str] = dataclasses.field(default_factory=dict)
    # One row per epoch: ``epoch``, that epoch's ``train_*`` and ``val_*`` metrics,
    # ``train_epoch_time``, ``train_time_sec`` (cumulative) and ``train_images``.
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    # The run's resolved config, secrets redacted. Data, never instantiated by readers.
    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    # Where the run's time went, in seconds: setup, fit, test, profile, explain, total.
    timing: dict[str, float] = dataclasses.field(default_factory=dict)
    batch: dict[str, Any] = dataclasses.field(default_factory=dict)
    skipped_images: list[str] = dataclasses.field(default_factory=list)
    compile: dict[str, Any] = dataclasses.field(default_factory=dict)
    distributed: dict[str, Any] = dataclasses.field(default_factory=dict)
    profiling: dict[str, Any] = dataclasses.field(default_factory=dict)
    complexity: dict[str, Any] = dataclasses.field(default_factory=dict)
    explain: dict[str, Any] = dataclasses.field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    # The seed study's top-level names, derived from the identity.
    @property
    def run_name(self) -> str:
        return self.identity.run_name

    @property
    def model(self) -> str:
        return self.identity.model

    @property
    def resolution(self) -> int:
        return self.identity.resolution

    @property
    def seed(self) -> int:
        return self.identity.seed

    @property
    def predictions_file(self) -> str:
        return f"{self.run_name}.npz"

    def to_dict(self) -> dict[str, Any]:
        """The JSON layout: the seed's keys at the top level, then the rest."""
        payload = dataclasses.asdict(self)
        payload["identity"] = self.identity.to_dict()
        head = {"schema_version": SCHEMA_VERSION, "run_name": self.run_name, "model": self.model,
                "resolution": self.resolution, "seed": self.seed,
                "predictions_file": self.predictions_file}
        return {**head, **{key: value for key, value in payload.items() if key not in head}}

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> RunRecord:
        """A record from its JSON layout, version 2 or the first layout (version 1)."""
        payload = dict(payload)
        if int(payload.get("schema_version", 1)) == 1:
            payload = _upgrade_v1(payload)
        payload.pop("schema_version", None)
        identity = RunIdentity.from_dict(payload.pop("identity"))
        metrics = TestMetrics(**_known(TestMetrics, payload.pop("test_metrics")))
        data = DataInfo(**_known(DataInfo, payload.pop("data")))
        return cls(identity=identity, test_metrics=metrics, data=data, **_known(cls, payload))


def _known(kind: type, payload: Mapping[str, Any]) -> dict[str, Any]:
    names = {field.name for field in dataclasses.fields(kind)}
    return {key: value for key, value in payload.items() if key in names}


def _upgrade_v1(payload: dict[str, Any]) -> dict[str, Any]:
    """The first layout: identity spread over top-level keys and ``config_fingerprint``."""
    config = payload.get("config") or {}
    data = payload.get("data") or {}
    data_name = data.get("name") or (config.get("data") or {}).get("name") or PRIMARY_DATA
    payload["identity"] = {
        "model": payload["model"], "resolution": int(payload["resolution"]),
        "seed": int(payload.get("seed", 0)), "data_name": data_name,
        "data_fingerprint": data.get("fingerprint") or "", "training_hash":
        payload.get("config_fingerprint") or ""}
    payload["data"] = {"name": data_name, "root": str(data.get("root", "")),
                       "fingerprint": data.get("fingerprint") or "",
                       "class_counts": data.get("class_counts") or {}}
    metrics = dict(payload.get("test_metrics") or {})
    if metrics.get("balanced_accuracy") is None:
        metrics["balanced_accuracy"] = metrics.get("recall")  # macro recall, in seed results
    metrics.setdefault("num_images", int(np.sum(metrics.get("confusion_matrix") or [[0]])))
    metrics.setdefault("per_class_recall", {})
    metrics.setdefault("confusion_matrix", [])
    for key in ("loss", "accuracy", "precision", "recall", "f1_score"):
        metrics.setdefault(key, None)
    payload["test_metrics"] = metrics
    payload.setdefault("classes", list(metrics["per_class_recall"]))
    return payload


def result_path(results_dir: str | os.PathLike, run_name: str) -> Path:
    return Path(results_dir) / TEST_RESULTS / f"{run_name}.json"


def predictions_path(results_dir: str | os.PathLike, run_name: str) -> Path:
    return Path(results_dir) / TEST_RESULTS / f"{run_name}.npz"


def write_predictions(path: str | os.PathLike, labels: np.ndarray, probabilities: np.ndarray) -> None:
    """Test labels, predictions and class probabilities, for paired tests across runs."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, labels=labels.astype(np.int16),
                        predictions=probabilities.argmax(axis=1).astype(np.int16),
                        probabilities=probabilities.astype(np.float32))
    atomic_write_bytes(path, buffer.getvalue())


def read_predictions(results_dir: str | os.PathLike, record: RunRecord) -> dict[str, np.ndarray] | None:
    """``labels``, ``predictions`` and ``probabilities`` of a record's test split, if saved."""
    path = predictions_path(results_dir, record.run_name)
    if not path.is_file():
        return None
    with np.load(path) as saved:
        return {key: saved[key] for key in saved.files}


def write_record(results_dir: str | os.PathLike, record: RunRecord) -> Path:
    """Write the record atomically: the run's commit point. Returns its path."""
    path = result_path(results_dir, record.run_name)
    write_json(path, record.to_dict())
    return path


def read_record(path: str | os.PathLike) -> RunRecord:
    """Load one record; raises :class:`InvalidResult` naming the file and the problem."""
    path = Path(path)
    try:
        payload = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidResult(f"{path}: not readable JSON ({error})") from error
    if not isinstance(payload, dict):
        raise InvalidResult(f"{path}: expected a JSON object")
    try:
        return RunRecord.from_dict(payload)
    except (KeyError, TypeError, ValueError) as error:
        raise InvalidResult(f"{path}: not a ResoMap run record ({type(error).__name__}: {error})") from error


def iter_records(results_dir: str | os.PathLike) -> Iterator[tuple[Path, RunRecord | InvalidResult]]:
    """Every ``*.json`` under ``results_dir/test_results``, read, or the reason it is not valid."""
    for path in sorted((Path(results_dir) / TEST_RESULTS).glob("*.json")):
        try:
            yield path, read_record(path)
        except InvalidResult as error:
            yield path, error


def find_finished(results_dir: str | os.PathLike, identity: RunIdentity) -> RunRecord | None:
    """The record of this exact run, if it finished: a file read, nothing built."""
    path = result_path(results_dir, identity.run_name)
    if not path.is_file():
        return None
    try:
        record = read_record(path)
    except InvalidResult:
        return None
    return record if record.identity == identity else None
