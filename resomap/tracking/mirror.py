"""MLflow as a mirror of the run record: one MLflow run per run identity, across resumes.

The record file is a run's commit point; the store follows it. :func:`tracked_run` is the one
context a run meets its stores through. Around training it starts (or, when resuming, continues)
the identity's MLflow run before fitting, so per-epoch metrics stream in, and after the record is
written mirrors it (final metrics, the record, a confusion matrix) and ends the run FINISHED.
Around a finished run (skipped, or explained later) it makes each store hold the run FINISHED: a
kill between the record and the end left a RUNNING run, or the store is new. The run id is kept
in the identity's checkpoint folder (``mlflow_run.json``), per store.

What a run holds: a few params and the redacted config (both in :class:`TrackingSettings`, built
by the orchestrator: tracking never sees the composed config), the identity tags, the config as one
YAML artifact, per-epoch and test metrics, the record and predictions, a confusion matrix; in a
sweep, ``mlflow.parentRunId`` names the sweep's run (:mod:`resomap.tracking.sweep_run`).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from resomap.io import atomic_write_bytes, write_json
from resomap.tracking import sweep_run
from resomap.tracking.mlflow import (
    MLFlowLogger,
    _store_errors,
    build_loggers,
    log_artifact_redacted,
    plot_confusion_matrix,
    redact_uri,
    store_loggers,
)
from resomap.tracking.settings import TrackingSettings

# Tracking mirrors the run's identity and record without importing the run package (which
# imports tracking): both are passed in and read by attribute.
RunIdentity = Any  # resomap.run.identity.RunIdentity
RunRecord = Any  # resomap.run.record.RunRecord

__all__ = ["TrackedRun", "build_loggers", "fetch_record", "find_finished", "tracked_run"]

log = logging.getLogger(__name__)

RUN_ID_FILE = "mlflow_run.json"
# Where a run's record and predictions are in its MLflow run's artifacts.
RECORD_ARTIFACTS = "results"
# The run's whole config, one YAML file in its MLflow run's artifacts.
CONFIG_ARTIFACT = "config/config.yaml"
_warned_uris: set[str] = set()


def _trackers(loggers: Iterable[Logger]) -> list[MLFlowLogger]:
    return [logger for logger in loggers if isinstance(logger, MLFlowLogger)]


def _run_id_file(settings: TrackingSettings, identity: RunIdentity) -> Path:
    return identity.checkpoint_dir(settings.checkpoint_dir) / RUN_ID_FILE


def _read_run_ids(path: Path) -> dict[str, str]:
    """Run ids by (redacted) store URI; an unreadable file counts as none."""
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return {}


def _search(logger: MLFlowLogger, identity: RunIdentity, status: str | None) -> Any | None:
    experiment = logger.client.get_experiment_by_name(logger._experiment_name)
    if experiment is None or experiment.lifecycle_stage == "deleted":
        return None
    filters = [f"tags.identity = '{identity.digest}'"]
    if status:
        filters.append(f"attributes.status = '{status}'")
    found = logger.client.search_runs([experiment.experiment_id], " AND ".join(filters), max_results=1,
                                      order_by=["attributes.start_time DESC"])
    return found[0] if found else None


def find_finished(settings: TrackingSettings, identity: RunIdentity) -> Any | None:
    """A FINISHED MLflow run of this identity in any configured store (another machine's run).

    An unreachable store is warned about once and treated as holding nothing.
    """
    from mlflow.exceptions import MlflowException

    if rank_zero_only.rank != 0:
        return None
    for logger in store_loggers(settings):
        try:
            found = _search(logger, identity, "FINISHED")
        except (MlflowException, OSError) as error:
            uri = redact_uri(logger.tracking_uri)
            if uri not in _warned_uris:
                _warned_uris.add(uri)
                log.warning("MLflow tracking store %s is unreachable (%s); looking for finished runs "
                            "in the local results only", uri, error)
            continue
        if found is not None:
            return found
    return None


def _log_record(logger: MLFlowLogger, run_id: str, params: dict[str, str], tags: dict[str, str]) -> None:
    from mlflow.entities import Param, RunTag

    # MLflow's client splits a batch into the store's limits (100 params or tags a request).
    logger.client.log_batch(run_id, params=[Param(key, value) for key, value in params.items()],
                            tags=[RunTag(key, value) for key, value in tags.items()])


def _existing_run(logger: MLFlowLogger, run_id: str | None) -> Any | None:
    from mlflow.exceptions import MlflowException

    if not run_id:
        return None
    try:
        run = logger.client.get_run(run_id)
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    return run if run.info.lifecycle_stage != "deleted" else None


def _sweep_parent(logger: MLFlowLogger) -> str | None:
    """This job's sweep run in the logger's store, if there is one and it is a sweep's run."""
    parent = _existing_run(logger, sweep_run.parent_run_id(logger.tracking_uri))
    return parent.info.run_id if parent is not None and sweep_run.SWEEP_TAG in parent.data.tags else None


def _start(logger: MLFlowLogger, settings: TrackingSettings, identity: RunIdentity, resuming: bool) -> str:
    """Continue this identity's unfinished MLflow run when resuming, else start one. Its params are
    write-once (equal in every resumption); ``tags.identity`` is how a finished run is found again."""
    run_file = _run_id_file(settings, identity)
    store = redact_uri(logger.tracking_uri)
    run_ids = _read_run_ids(run_file)
    with _store_errors(logger.tracking_uri):
        previous = _existing_run(logger, run_ids.get(store))
        continued = (previous is not None and resuming and previous.info.status != "FINISHED"
                     and previous.data.tags.get("identity") == identity.digest)
        if continued:
            logger.continue_run(previous.info.run_id)
            logger.client.update_run(previous.info.run_id, status="RUNNING")
            log.info("Continuing MLflow run %s in %s", previous.info.run_id, store)
        elif previous is not None and previous.info.status == "RUNNING":
            # Killed without the chance to end it (SIGKILL); this fresh run replaces it.
            logger.client.set_terminated(previous.info.run_id, "KILLED")
        run_id = logger.run_id
        write_json(run_file, {**run_ids, store: run_id})
        params, tags = dict(settings.params), dict(identity.tags())
        # A continued run keeps the parent it was started under (none if it started alone): its
        # first epochs belong to that sweep, and re-tagging would empty the earlier sweep's tree.
        # A resuming sweep's report still covers it (its run's sweep/jobs.json lists it).
        if not continued and (parent := _sweep_parent(logger)) is not None:
            tags[sweep_run.PARENT_TAG] = parent
        _log_record(logger, run_id, params, tags)
        logger.client.log_dict(run_id, settings.config, CONFIG_ARTIFACT)
    return run_id


def _mirror(logger: MLFlowLogger, settings: TrackingSettings, record: RunRecord, run_id: str) -> None:
    """The record's final metrics, the record itself and a confusion matrix (the config was
    logged when the run started)."""
    from mlflow.entities import Metric

    metrics = {f"test_{name}": value for name, value in record.test_metrics.scalars().items()}
    with _store_errors(logger.tracking_uri):
        # Lightning's logger streamed the test metrics the module logs; only the rest (macro
        # AUROC, or all of them when the run was tested without a logger) are added, so each
        # metric is logged once.
        logged = logger.client.get_run(run_id).data.metrics
        logger.client.log_batch(run_id, metrics=[Metric(key, float(value), 0, record.epochs_run)
                                                 for key, value in metrics.items() if key not in logged])
        from resomap.run import record as records

        folder = records.run_dir(settings.results_dir, record)
        if (folder / records.RECORD_FILE).is_file():
            log_artifact_redacted(logger.client, run_id, folder / records.RECORD_FILE, RECORD_ARTIFACTS)
        if (folder / records.PREDICTIONS_FILE).is_file():  # numbers only: nothing to redact
            logger.client.log_artifact(run_id, str(folder / records.PREDICTIONS_FILE), RECORD_ARTIFACTS)
        logger.client.log_figure(run_id, plot_confusion_matrix(record.test_metrics.confusion_matrix,
                                                               record.classes), "plots/confusion_matrix.png")
        logger.client.set_terminated(run_id, "FINISHED")


def _end(trackers: Iterable[MLFlowLogger], status: str, attempts: int = 3) -> None:
    """End each tracker's run with ``status``, best effort once the run itself has stopped. Tried
    again when interrupted by an error that is not the store's (a DataLoader worker killed by the
    same SIGTERM makes torch raise in this process as it dies)."""
    for logger in trackers:
        for attempt in range(attempts):
            try:
                logger.client.set_terminated(logger.run_id, status)
                break
            except Exception as error:
                if attempt + 1 == attempts:
                    log.warning("Could not mark MLflow run %s %s in %s: %s", logger.run_id, status,
                                redact_uri(logger.tracking_uri), error)
                    break
                # A write cut short by the signal may hold SQLite's lock in a pooled connection:
                # closing the pool rolls it back.
                store = getattr(getattr(logger.client, "_tracking_client", None), "store", None)
                engine = getattr(store, "engine", None)
                if engine is not None:
                    engine.dispose()
                time.sleep(0.5)


class TrackedRun:
    """The identity's MLflow run in each store, inside :func:`tracked_run`."""

    def __init__(self, settings: TrackingSettings, runs: list[tuple[MLFlowLogger, str]],
                 finished: bool) -> None:
        self.settings, self.runs, self.finished = settings, runs, finished

    def finish(self, record: RunRecord) -> None:
        """Mirror the written ``record`` into each store's run and end it FINISHED (a run that
        was already FINISHED holds it)."""
        if not self.finished:
            for logger, run_id in self.runs:
                _mirror(logger, self.settings, record, run_id)
            self.finished = True

    def add(self, path: Path, artifact_path: str) -> None:
        """Add a file or folder a finished run wrote later (its explanations) to each store's
        run: JSON and text redacted, images and arrays as they are. A store that fails is warned
        about and the others still get it."""
        from mlflow.exceptions import MlflowException

        files = sorted(item for item in path.rglob("*") if item.is_file()) if path.is_dir() else [path]
        for logger, run_id in self.runs:
            try:
                for file in files:
                    inner = file.parent.relative_to(path) if path.is_dir() else Path()
                    where = str(Path(artifact_path, inner))
                    if file.suffix in (".json", ".yaml", ".yml", ".txt", ".md"):
                        log_artifact_redacted(logger.client, run_id, file, where)
                    else:
                        logger.client.log_artifact(run_id, str(file), where)
            except (MlflowException, OSError) as error:
                log.warning("Could not add %s to MLflow run %s in %s: %s", path.name, run_id,
                            redact_uri(logger.tracking_uri), error)


@contextmanager
def tracked_run(settings: TrackingSettings, identity: RunIdentity, *, loggers: Iterable[Logger] = (),
                resuming: bool = False, record: RunRecord | None = None) -> Iterator[TrackedRun]:
    """The one way a run meets its MLflow stores: around training, a skipped run, an explanation.

    Training (no ``record`` yet): start, or continue when ``resuming``, the identity's run on the
    trainer's MLflow ``loggers``, so per-epoch metrics stream in; the body calls
    :meth:`TrackedRun.finish` with the written record. An exception ends the run FAILED, SIGTERM
    or Ctrl-C KILLED.

    A finished run (``record`` given: skipped, or explained later): each configured store is made
    to hold it FINISHED with its record (a kill may have come between the record and the end of
    the MLflow run, or the store may be new), then the body may add files. A store that fails is
    warned about and left out; an exception in the body leaves the finished run as it is.
    """
    if rank_zero_only.rank != 0:
        yield TrackedRun(settings, [], finished=record is not None)
        return
    if record is not None:
        yield TrackedRun(settings, _reconciled(settings, identity, record), finished=True)
        return
    trackers = _trackers(loggers)
    runs = [(logger, _start(logger, settings, identity, resuming)) for logger in trackers]

    from resomap.run import signals

    try:
        yield TrackedRun(settings, runs, finished=False)
    except (SIGTERMException, KeyboardInterrupt):
        _end(trackers, "KILLED")
        raise
    except BaseException as error:
        # An error caused by SIGTERM (a DataLoader worker killed with the process group) is a stop.
        _end(trackers, "KILLED" if signals.stopped_by_sigterm(error) else "FAILED")
        raise


def fetch_record(settings: TrackingSettings, run: Any, destination: Path) -> Path | None:
    """Bring the record (and predictions) of the FINISHED MLflow run ``run`` into ``destination``,
    this identity's run folder, so a run skipped through the store is reported from its own
    record, never from another configuration's local file. None when the store lacks them or
    they are of another identity."""
    from mlflow.exceptions import MlflowException

    from resomap.run import record as records

    digest = run.data.tags.get("identity", "")
    if destination.name != digest:
        return None
    for logger in store_loggers(settings):
        try:
            with tempfile.TemporaryDirectory() as temporary:
                names = {Path(item.path).name for item in
                         logger.client.list_artifacts(run.info.run_id, RECORD_ARTIFACTS)}
                if records.RECORD_FILE not in names:
                    continue
                local = Path(logger.client.download_artifacts(
                    run.info.run_id, f"{RECORD_ARTIFACTS}/{records.RECORD_FILE}", temporary))
                record = records.read_record(local)
                if record.identity.digest != digest:
                    log.warning("MLflow run %s holds the record of another run (%s); not used",
                                run.info.run_id, record.identity.digest)
                    return None
                if records.PREDICTIONS_FILE in names:
                    saved = Path(logger.client.download_artifacts(
                        run.info.run_id, f"{RECORD_ARTIFACTS}/{records.PREDICTIONS_FILE}", temporary))
                    atomic_write_bytes(destination / records.PREDICTIONS_FILE, saved.read_bytes())
                atomic_write_bytes(destination / records.RECORD_FILE, local.read_bytes())
                return destination / records.RECORD_FILE
        except (MlflowException, OSError, records.InvalidRecord) as error:
            log.warning("Could not fetch the record of MLflow run %s from %s: %s", run.info.run_id,
                        redact_uri(logger.tracking_uri), error)
    return None


def _reconciled(settings: TrackingSettings, identity: RunIdentity,
                record: RunRecord) -> list[tuple[MLFlowLogger, str]]:
    """Each store's FINISHED run of this finished identity, mirrored there first when missing."""
    from mlflow.exceptions import MlflowException

    runs = []
    for logger in store_loggers(settings):
        try:
            found = _search(logger, identity, "FINISHED")
            if found is not None:
                runs.append((logger, found.info.run_id))
                continue
            store = redact_uri(logger.tracking_uri)
            previous = _existing_run(logger, _read_run_ids(_run_id_file(settings, identity)).get(store))
            if previous is not None and previous.data.tags.get("identity") == identity.digest:
                run_id = previous.info.run_id
            else:
                run_id = _start(logger, settings, identity, resuming=False)
            log.info("Mirroring the finished run %s into MLflow run %s (%s)", identity.run_name, run_id,
                     store)
            _mirror(logger, settings, record, run_id)
            runs.append((logger, run_id))
        except (MlflowException, OSError) as error:
            log.warning("Could not mirror %s into MLflow store %s: %s", identity.run_name,
                        redact_uri(logger.tracking_uri), error)
    return runs
