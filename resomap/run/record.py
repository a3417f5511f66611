"""The record of one finished run: its typed schema, its one writer and its one reader.

Everything one run writes lives in one folder named by its identity digest,
``results/runs/{digest}/``: ``record.json`` (the run's commit point, written once, atomically,
after testing: a run with a record is finished; tracking mirrors it afterwards),
``predictions.npz`` (its test predictions, written first, holding the digest too) and
``explanations/`` (attribution maps). Two configurations of one model and resolution (a sweep
over ``optimizer.lr``) therefore never share a file. ``results/test_results/{run_name}.json``
and ``.npz`` are a readable view: links to the latest finished run of that name, never read as
the key. Every later reader (aggregate, study, report, cross-resolution matrix, explain) goes
through :func:`read_record` / :func:`iter_records`, which type-check each field and also read
the earlier layouts (a record file in ``test_results/``, ``schema_version`` 1 or 2).
``docs/results.md`` documents each field; a test keeps the two in step.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import types
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol, Union

import numpy as np

from resomap.config import PRIMARY_DATA
from resomap.errors import ResoMapError
from resomap.io import atomic_write_bytes, write_json
from resomap.names import UnsafeName, contained, safe_name
from resomap.run.identity import RunIdentity

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3
# The view of the latest finished run of each run name, and the layout before version 3.
TEST_RESULTS = "test_results"
# One folder per run identity: everything that run wrote.
RUNS = "runs"
RECORD_FILE = "record.json"
PREDICTIONS_FILE = "predictions.npz"
EXPLANATIONS = "explanations"


class ResultContributor(Protocol):
    """A callback that adds a section (``profiling``, ``complexity``...) to the record."""

    def result_section(self, trainer: Any, pl_module: Any) -> dict[str, Any]: ...


class InvalidResult(ResoMapError, ValueError):
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
        :class:`InvalidResult` naming the first field that is missing or of the wrong type."""
        payload = dict(payload)
        version = payload.get("schema_version", 1)
        _check(version, int, "schema_version")
        if version == 1:
            payload = _upgrade_v1(payload)
        payload.pop("schema_version", None)
        for name in ("identity", "test_metrics", "data"):
            if not isinstance(payload.get(name), Mapping):
                raise InvalidResult(f"field {name}: expected an object, found {_shown(payload.get(name))}")
        stored = payload.pop("identity")
        identity = _typed(RunIdentity, stored, "identity")
        for field, value in (("identity.model", identity.model), ("identity.data_name", identity.data_name)):
            try:
                safe_name(value, field)
            except UnsafeName as error:
                raise InvalidResult(str(error)) from error
        if "digest" in stored and stored["digest"] != identity.digest:
            raise InvalidResult(f"field identity.digest: {_shown(stored['digest'])} is not the digest of "
                                f"the identity's fields ({identity.digest}): the record was edited")
        metrics = _typed(TestMetrics, payload.pop("test_metrics"), "test_metrics")
        data = _typed(DataInfo, payload.pop("data"), "data")
        return _typed(cls, {**payload, "identity": identity, "test_metrics": metrics, "data": data}, "")


def _shown(value: Any) -> str:
    text = json.dumps(value, default=str)
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"


def _check(value: Any, hint: Any, field: str) -> None:
    """Raise :class:`InvalidResult` unless ``value`` (read from JSON) fits the type ``hint``.

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
            except InvalidResult:
                continue
        raise InvalidResult(f"field {field}: expected {_hint_name(hint)}, found {_shown(value)}")
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
        raise InvalidResult(f"field {field}: expected {_hint_name(hint)}, found {_shown(value)}")
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
                raise InvalidResult(f"field {name} is missing")
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




# ---- where a run's files are -----------------------------------------------------------------

def _digest_of(record_or_identity: RunRecord | RunIdentity | str) -> str:
    if isinstance(record_or_identity, RunRecord):
        return record_or_identity.identity.digest
    if isinstance(record_or_identity, RunIdentity):
        return record_or_identity.digest
    return safe_name(record_or_identity, "identity digest")


def run_dir(results_dir: str | os.PathLike, record_or_identity: RunRecord | RunIdentity | str) -> Path:
    """``results_dir/runs/{digest}``: the folder of everything one run wrote (record, predictions,
    explanation maps), named by its identity digest, so no two configurations share a file."""
    return contained(results_dir, RUNS, _digest_of(record_or_identity))


def record_path(results_dir: str | os.PathLike, record_or_identity: RunRecord | RunIdentity | str) -> Path:
    return run_dir(results_dir, record_or_identity) / RECORD_FILE


def result_path(results_dir: str | os.PathLike, run_name: str) -> Path:
    """``results_dir/test_results/{run_name}.json``: the readable view of the latest finished run
    of that name (a link into its run folder), or a record of the earlier layout."""
    return Path(results_dir) / TEST_RESULTS / f"{run_name}.json"


def predictions_path(results_dir: str | os.PathLike, run_name: str) -> Path:
    """The view of the latest finished run's predictions of that name (see :func:`result_path`)."""
    return Path(results_dir) / TEST_RESULTS / f"{run_name}.npz"


def write_predictions(path: str | os.PathLike, labels: np.ndarray, probabilities: np.ndarray,
                      identity: RunIdentity | None = None) -> None:
    """Test labels, predictions and class probabilities, for paired tests across runs; with the
    run's identity digest, so a reader can tell whose they are."""
    buffer = io.BytesIO()
    extra = {"identity": np.array(identity.digest)} if identity is not None else {}
    np.savez_compressed(buffer, labels=labels.astype(np.int16),
                        predictions=probabilities.argmax(axis=1).astype(np.int16),
                        probabilities=probabilities.astype(np.float32), **extra)
    atomic_write_bytes(path, buffer.getvalue())


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as saved:
        return {key: saved[key] for key in saved.files}


def read_predictions(results_dir: str | os.PathLike, record: RunRecord) -> dict[str, np.ndarray] | None:
    """``labels``, ``predictions`` and ``probabilities`` of a record's test split, if saved.

    Read from the record's own run folder; a record of the earlier layout reads the ``.npz``
    beside it. Raises :class:`InvalidResult` when the file holds another run's digest: a
    record is never paired with another configuration's predictions.
    """
    path = run_dir(results_dir, record) / PREDICTIONS_FILE
    if not path.is_file():
        legacy = predictions_path(results_dir, record.run_name)
        if not (_is_legacy_file(result_path(results_dir, record.run_name), record)
                and legacy.is_file() and not legacy.is_symlink()):
            return None
        path = legacy
    saved = _load_npz(path)
    stored = saved.pop("identity", None)
    if stored is not None and str(stored) != record.identity.digest:
        raise InvalidResult(f"{path}: field identity: these predictions belong to run {str(stored)}, not to "
                            f"the record of {record.run_name} (identity {record.identity.digest}); left out")
    return saved


def _is_legacy_file(path: Path, record: RunRecord) -> bool:
    """Whether ``path`` is a record file of the earlier layout holding ``record``'s identity."""
    if not path.is_file() or path.is_symlink():
        return False
    try:
        return read_record(path).identity.digest == record.identity.digest
    except InvalidResult:
        return False


def _link(target: Path, view: Path) -> None:
    """Point ``view`` at ``target`` (relative link, swapped in atomically)."""
    view.parent.mkdir(parents=True, exist_ok=True)
    temporary = view.with_name(f".{view.name}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)
    os.symlink(os.path.relpath(target, view.parent), temporary)
    os.replace(temporary, view)


def _adopt_legacy(results_dir: Path, view: Path, npz_view: Path, record: RunRecord) -> None:
    """Before a view replaces a file of the earlier layout, move that file into its own run
    folder (nothing written is lost). A plain ``.npz`` at the view's place written just before
    ``write_record`` by a caller of the earlier API is this record's, unless it says otherwise."""
    orphan = False
    if view.is_file() and not view.is_symlink():
        try:
            old = read_record(view)
        except InvalidResult:
            old = None
        if old is not None and old.identity.digest != record.identity.digest:
            folder = run_dir(results_dir, old)
            if not (folder / RECORD_FILE).exists():
                folder.mkdir(parents=True, exist_ok=True)
                # Predictions are written before their record: a newer .npz is another run's,
                # left by a kill before its record (it stays where it is).
                if npz_view.is_file() and not npz_view.is_symlink():
                    if npz_view.stat().st_mtime_ns <= view.stat().st_mtime_ns:
                        os.replace(npz_view, folder / PREDICTIONS_FILE)
                    else:
                        orphan = True
                os.replace(view, folder / RECORD_FILE)
    own = run_dir(results_dir, record) / PREDICTIONS_FILE
    if npz_view.is_file() and not npz_view.is_symlink() and not own.exists() and not orphan:
        stored = _load_npz(npz_view).get("identity")
        if stored is None or str(stored) == record.identity.digest:
            own.parent.mkdir(parents=True, exist_ok=True)
            os.replace(npz_view, own)


def write_record(results_dir: str | os.PathLike, record: RunRecord) -> Path:
    """Write the record atomically into its run folder: the run's commit point. Then point the
    ``test_results/{run_name}`` view at it. Returns the record's path."""
    results_dir = Path(results_dir)
    path = record_path(results_dir, record)
    view, npz_view = result_path(results_dir, record.run_name), predictions_path(results_dir, record.run_name)
    _adopt_legacy(results_dir, view, npz_view, record)
    write_json(path, record.to_dict())
    try:
        _link(path, view)
        if (path.parent / PREDICTIONS_FILE).is_file():
            _link(path.parent / PREDICTIONS_FILE, npz_view)
    except OSError as error:  # a file system without symbolic links: the record itself is written
        log.warning("Could not update the view %s of %s: %s", view, path, error)
    return path


def read_record(path: str | os.PathLike) -> RunRecord:
    """Load one record; raises :class:`InvalidResult` naming the file, the field and the problem."""
    path = Path(path)
    try:
        payload = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidResult(f"{path}: not readable JSON ({error})") from error
    if not isinstance(payload, dict):
        raise InvalidResult(f"{path}: expected a JSON object")
    try:
        return RunRecord.from_dict(payload)
    except InvalidResult as error:
        raise InvalidResult(f"{path}: not a ResoMap run record: {error}") from error
    except (KeyError, TypeError, ValueError) as error:
        raise InvalidResult(f"{path}: not a ResoMap run record ({type(error).__name__}: {error})") from error


def iter_records(results_dir: str | os.PathLike) -> Iterator[tuple[Path, RunRecord | InvalidResult]]:
    """Every record under ``results_dir``, read, or the reason it is not valid: each run folder's
    ``record.json``, then the earlier layout's files in ``test_results/`` (views skipped, and any
    identity already read)."""
    seen: set[str] = set()
    for path in sorted(Path(results_dir).glob(f"{RUNS}/*/{RECORD_FILE}")):
        try:
            record = read_record(path)
        except InvalidResult as error:
            yield path, error
            continue
        if record.identity.digest != path.parent.name:
            yield path, InvalidResult(f"{path}: field identity: the record is of run "
                                      f"{record.identity.digest}, not of the folder it is in "
                                      f"({path.parent.name}); left out")
            continue
        seen.add(record.identity.digest)
        yield path, record
    for path in sorted((Path(results_dir) / TEST_RESULTS).glob("*.json")):
        if path.is_symlink():
            continue
        try:
            record = read_record(path)
        except InvalidResult as error:
            yield path, error
            continue
        if record.identity.digest not in seen:
            seen.add(record.identity.digest)
            yield path, record


def find_finished(results_dir: str | os.PathLike, identity: RunIdentity) -> RunRecord | None:
    """The record of this exact run, if it finished: a file read, nothing built. Raises
    :class:`InvalidResult` when this run's record file exists but cannot be read."""
    path = record_path(results_dir, identity)
    if path.exists():
        record = read_record(path)
        return record if record.identity == identity else None
    legacy = result_path(results_dir, identity.run_name)
    if legacy.is_file() and not legacy.is_symlink():
        try:
            record = read_record(legacy)
        except InvalidResult:
            return None
        return record if record.identity == identity else None
    return None


def remove_temporary_files(*folders: str | os.PathLike, prefixes: tuple[str, ...] = ("",)) -> list[Path]:
    """Delete the ``.{name}.*.tmp`` files an atomic writer killed mid-write left in ``folders``
    (only names starting with one of ``prefixes``): called by that writer's next start, under
    the run's lock, so no live writer owns them. Returns what was removed."""
    removed = []
    for folder in folders:
        for prefix in prefixes:
            for path in Path(folder).glob(f".{prefix}*.tmp"):
                if path.is_file() or path.is_symlink():
                    path.unlink(missing_ok=True)
                    removed.append(path)
    if removed:
        log.info("Removed %d temporary file(s) left by an interrupted writer: %s", len(removed),
                 ", ".join(str(path) for path in removed))
    return removed
