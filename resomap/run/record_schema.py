"""The record of one finished run: its typed schema, and reading one record file back.

Everything one run writes lives in one folder named by its identity digest,
``results/runs/{digest}/``: ``record.json`` (the run's commit point, written once, atomically,
after testing: a run with a record is finished; tracking mirrors it afterwards),
``predictions.npz`` (its test predictions, written first, holding the digest too) and
``explanations/`` (attribution maps). :func:`read_record` type-checks each field of a record
file against these dataclasses and also reads the earlier layouts (``schema_version`` 1 or 2)
and the earlier key names of ``profiling`` and ``complexity`` (:data:`RENAMED_KEYS`).
``docs/results.md`` documents each field; a test keeps the two in step. Where the files are:
:mod:`resomap.run.record_files`; writing them: :mod:`resomap.run.record_write`; reading a whole
results folder: :mod:`resomap.run.record`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, Union

import numpy as np

from resomap.config import PRIMARY_DATA
from resomap.errors import ResoMapError
from resomap.names import UnsafeName, safe_name
from resomap.run.identity import RunIdentity

SCHEMA_VERSION = 3
# The view of the latest finished run of each run name, and the layout before version 3.
TEST_RESULTS = "test_results"
# One folder per run identity: everything that run wrote.
RUNS = "runs"
RECORD_FILE = "record.json"
PREDICTIONS_FILE = "predictions.npz"
EXPLANATIONS = "explanations"
# The explain section that ``resomap explain`` wrote after the run, beside its record (written once).
EXPLAIN_FILE = "explain.json"


# Keys renamed to say what they hold: fvcore's "flops" count multiply-adds (MACs), and the GPU
# figures are MiB (bytes / 2**20). Records and cost summaries written before the rename are read
# under the new names. CPU memory and the complexity memory figures are decimal MB (bytes / 10^6)
# and keep their ``_mb`` names.
RENAMED_KEYS = {
    "flops": "macs",
    "gflops": "gmacs",
    **{f"{name}_mb": f"{name}_mib" for name in (
        "gpu_memory_peak", "gpu_memory_model_weights", "gpu_memory_baseline", "gpu_memory_peak_process",
        "gpu_memory_peak_reserved", "gpu_memory_allocated", "gpu_memory_reserved", "data_cache_gpu")},
}


def with_new_keys(section: Mapping[str, Any]) -> dict[str, Any]:
    """``section`` with every old key of :data:`RENAMED_KEYS` under its new name (a new key
    already present wins), nested sections (``training``, ``conventions``) renamed too."""
    renamed: dict[str, Any] = {}
    for key, value in section.items():
        if isinstance(value, Mapping) and key in ("training", "conventions"):
            value = with_new_keys(value)
        new = RENAMED_KEYS.get(key, key)
        if new == key or new not in section:
            renamed[new] = value
    return renamed


class RecordContributor(Protocol):
    """A callback that adds a section (``profiling``, ``complexity``...) to the record."""

    def record_section(self, trainer: Any, pl_module: Any) -> dict[str, Any]: ...


class InvalidRecord(ResoMapError, ValueError):
    """A file in the results folder is not a readable ResoMap record; the message names the file,
    the field and what was expected. Readers skip such a file with a warning."""


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

    def scalars(self) -> dict[str, float]:
        """The single-number metrics that are set, by name (``balanced_accuracy``, ...): what
        trackers and tables show as ``test_<name>``."""
        return {name: value for name in SCALAR_METRICS if (value := getattr(self, name)) is not None}


# The single-number test metrics, in the order tables show them; the LightningModule logs the
# first six as ``test_<name>``, macro AUROC comes from the saved probabilities.
SCALAR_METRICS = ("loss", "accuracy", "precision", "recall", "f1_score", "balanced_accuracy", "macro_auroc")


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
    # ``train_epoch_time``, ``train_time_sec`` (cumulative), ``train_images`` and ``lr`` (the
    # learning rate the epoch ended with).
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

    def objective(self, metric: str) -> float | None:
        """``metric`` (a ``val_*`` name) at the epoch the best checkpoint was chosen: what a
        sweeper optimises. Never a test metric: choosing on test images leaks them."""
        value = self.best_val_metrics.get(metric)
        return None if value is None else float(value)

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
        """The predictions' file name in the run's folder (:func:`run_dir`)."""
        return PREDICTIONS_FILE

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
        """A record from its JSON layout (versions 1 to 3), every field type-checked: raises
        :class:`InvalidRecord` naming the first field that is missing or of the wrong type."""
        payload = dict(payload)
        version = payload.get("schema_version", 1)
        _check(version, int, "schema_version")
        if version == 1:
            payload = _upgrade_v1(payload)
        payload.pop("schema_version", None)
        for name in ("profiling", "complexity"):
            if isinstance(payload.get(name), Mapping):
                payload[name] = with_new_keys(payload[name])
        for name in ("identity", "test_metrics", "data"):
            if not isinstance(payload.get(name), Mapping):
                raise InvalidRecord(f"field {name}: expected an object, found {_shown(payload.get(name))}")
        stored = payload.pop("identity")
        identity = _typed(RunIdentity, stored, "identity")
        for field, value in (("identity.model", identity.model), ("identity.data_name", identity.data_name)):
            try:
                safe_name(value, field)
            except UnsafeName as error:
                raise InvalidRecord(str(error)) from error
        if "digest" in stored and stored["digest"] != identity.digest:
            raise InvalidRecord(f"field identity.digest: {_shown(stored['digest'])} is not the digest of "
                                f"the identity's fields ({identity.digest}): the record was edited")
        metrics = _typed(TestMetrics, payload.pop("test_metrics"), "test_metrics")
        data = _typed(DataInfo, payload.pop("data"), "data")
        return _typed(cls, {**payload, "identity": identity, "test_metrics": metrics, "data": data}, "")


def _shown(value: Any) -> str:
    text = json.dumps(value, default=str)
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"


def _check(value: Any, hint: Any, field: str) -> None:
    """Raise :class:`InvalidRecord` unless ``value`` (read from JSON) fits the type ``hint``.

    Hand-written because the record is plain JSON checked against its own dataclasses: a schema
    library would need a second copy of the schema.
    """
    origin, arguments = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return
    if origin in (Union, types.UnionType):
        for option in arguments:
            try:
                return _check(value, option, field)
            except InvalidRecord:
                continue
        raise InvalidRecord(f"field {field}: expected {_hint_name(hint)}, found {_shown(value)}")
    expected = origin or hint
    if expected is type(None):
        ok = value is None
    elif expected is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif expected is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif expected is dict:
        ok = isinstance(value, Mapping)
    elif expected is list:
        ok = isinstance(value, list)
    else:
        ok = isinstance(value, expected)
    if not ok:
        raise InvalidRecord(f"field {field}: expected {_hint_name(hint)}, found {_shown(value)}")
    if expected is dict and arguments:
        for key, item in value.items():
            _check(key, arguments[0], f"{field} key")
            _check(item, arguments[1], f"{field}.{key}")
    elif expected is list and arguments:
        for index, item in enumerate(value):
            _check(item, arguments[0], f"{field}[{index}]")


def _hint_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) if not typing.get_args(hint) else str(hint).replace("typing.", "")


def _typed(kind: type, payload: Mapping[str, Any], where: str) -> Any:
    """``kind(**payload)`` with unknown keys dropped and every known one type-checked."""
    hints = typing.get_type_hints(kind)
    arguments = {}
    for field in dataclasses.fields(kind):
        name = f"{where}.{field.name}" if where else field.name
        if field.name not in payload:
            if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                raise InvalidRecord(f"field {name} is missing")
            continue
        value = payload[field.name]
        if not isinstance(value, (RunIdentity, TestMetrics, DataInfo)):
            _check(value, hints[field.name], name)
        arguments[field.name] = value
    return kind(**arguments)


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


def read_record(path: str | os.PathLike) -> RunRecord:
    """Load one record; raises :class:`InvalidRecord` naming the file, the field and the problem."""
    path = Path(path)
    try:
        payload = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidRecord(f"{path}: not readable JSON ({error})") from error
    if not isinstance(payload, dict):
        raise InvalidRecord(f"{path}: expected a JSON object")
    try:
        return RunRecord.from_dict(payload)
    except InvalidRecord as error:
        raise InvalidRecord(f"{path}: not a ResoMap run record: {error}") from error
    except (KeyError, TypeError, ValueError) as error:
        raise InvalidRecord(f"{path}: not a ResoMap run record ({type(error).__name__}: {error})") from error
