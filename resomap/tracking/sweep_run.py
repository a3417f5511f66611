"""A sweep's own MLflow run: the parent of its jobs' runs, and where the sweep's report is kept.

:func:`start_sweep_runs` (the Hydra callback's ``on_multirun_start``) starts one run per
configured store and says its id to the jobs twice: in ``mlflow_sweep.json`` in the sweep folder
(read by jobs that Hydra runs as a multirun, in this process, a joblib worker or a SLURM job),
and in the environment variable ``RESOMAP_MLFLOW_SWEEP_RUNS`` (inherited by a job's child
process, e.g. a DDP run, which Hydra runs as a single run; read too when the file does not name
the store, e.g. a sweep folder not shared with a SLURM job's machine). Each new job run is tagged
``mlflow.parentRunId`` (:func:`parent_run_id`). :func:`finish_sweep_runs` logs the report and
ends the run. A single run (no ``-m``) has no parent.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from resomap.io import write_json
from resomap.redact import redact_text
from resomap.tracking.mlflow import TrackingError, log_artifact_redacted, redact_uri, store_loggers
from resomap.tracking.settings import TrackingSettings

log = logging.getLogger(__name__)

SWEEP_FILE = "mlflow_sweep.json"
SWEEP_ENV = "RESOMAP_MLFLOW_SWEEP_RUNS"
# The tag that marks a sweep's run (its value: the sweep folder); job runs have ``identity``.
SWEEP_TAG = "resomap.sweep"
PARENT_TAG = "mlflow.parentRunId"
RUN_ID = re.compile(r"[0-9a-f]{32}")
REPORT_ARTIFACTS = "report"
TEXT_SUFFIXES = (".csv", ".json", ".txt", ".md", ".html", ".yaml")


def _valid(runs: Any) -> dict[str, str]:
    """The ``{store: run id}`` entries of ``runs`` that are MLflow run ids; the rest is dropped.
    What a file or the environment holds is data: a run id is 32 hex digits or it is not used."""
    if not isinstance(runs, dict):
        return {}
    return {store: run_id for store, run_id in runs.items()
            if isinstance(store, str) and isinstance(run_id, str) and RUN_ID.fullmatch(run_id)}


def _read_file(path: Path) -> dict[str, str]:
    try:
        return _valid(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def _sweep_dir() -> Path | None:
    """This job's sweep folder when Hydra runs it as part of a multirun."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    return Path(hydra_cfg.sweep.dir) if hydra_cfg.mode == RunMode.MULTIRUN else None


def parent_run_id(tracking_uri: str) -> str | None:
    """The id of this job's sweep run in the store ``tracking_uri``; None for a single run."""
    store = redact_uri(tracking_uri)
    if (sweep_dir := _sweep_dir()) is not None and (found := _read_file(sweep_dir / SWEEP_FILE).get(store)):
        return found
    try:  # a job's own DDP process, or a worker on a machine that does not share the sweep folder
        return _valid(json.loads(os.environ.get(SWEEP_ENV, "{}"))).get(store)
    except ValueError:
        return None


def _store_loggers(settings: TrackingSettings) -> list[Any]:
    """The configured MLflow loggers; none, with a warning, when one cannot be built (a missing
    DagsHub token): each job then stops with that store's own error and what to do."""
    try:
        return store_loggers(settings)
    except Exception as error:  # reported by every job; the sweep's run is a convenience
        log.warning("This sweep has no MLflow run: its store cannot be used (%s)", error)
        return []


def _run_name(sweep_dir: Path) -> str:
    """``sweep_2026-12-03_12-24-34-123456`` from the default sweep folder's last two parts."""
    return "sweep_" + "_".join(sweep_dir.parts[-2:])


def start_sweep_runs(settings: TrackingSettings, sweep_dir: Path) -> dict[str, str]:
    """Start the sweep's run (the sweep folder ``sweep_dir``) in each configured store; their ids by
    (redacted) store URI.

    A store that fails here is warned about: each job then reports it with what to do.
    """
    sweep_dir = Path(sweep_dir)
    runs: dict[str, str] = {}
    loggers = _store_loggers(settings)
    if loggers:  # a sweep without a store never imports MLflow (seconds a sweep)
        from mlflow.exceptions import MlflowException
    for logger in loggers:
        try:
            run = logger.client.create_run(logger.ensure_experiment(),
                                           run_name=redact_text(_run_name(sweep_dir)),
                                           tags={SWEEP_TAG: redact_text(str(sweep_dir))})
            runs[redact_uri(logger.tracking_uri)] = run.info.run_id
            log.info("MLflow run %s of this sweep: its jobs' runs are its children", run.info.run_id)
        except (MlflowException, OSError, TrackingError) as error:
            log.warning("Could not start this sweep's MLflow run in %s: %s", redact_uri(logger.tracking_uri),
                        error)
    write_json(sweep_dir / SWEEP_FILE, runs)  # rewritten even when empty: a reused folder's is stale
    os.environ[SWEEP_ENV] = json.dumps(runs)
    if runs:
        # A sweep stopped by Ctrl-C or SIGTERM never reaches on_multirun_end.
        atexit.register(_end_running, [logger.tracking_uri for logger in loggers], runs)
    return runs


def _end_running(uris: Iterable[str], runs: dict[str, str], status: str = "KILLED") -> None:
    """End with ``status`` each sweep run still RUNNING (best effort, at exit)."""
    from mlflow.tracking import MlflowClient

    for uri in uris:
        run_id = runs.get(redact_uri(uri))
        if run_id is None:
            continue
        try:
            client = MlflowClient(uri)
            if client.get_run(run_id).info.status == "RUNNING":
                client.set_terminated(run_id, status)
        except Exception as error:  # at exit: a warning, never a traceback
            log.warning("Could not end this sweep's MLflow run %s: %s", run_id, error)


def _log_report(client: Any, run_id: str, results_dir: Path, files: Iterable[Path]) -> None:
    """The report's files under ``report/``, in the results folder's layout; text redacted."""
    for path in files:
        if not path.is_file():
            continue
        try:
            folder = path.parent.relative_to(results_dir)
        except ValueError:
            folder = Path()
        artifact_path = (Path(REPORT_ARTIFACTS) / folder).as_posix()
        if path.suffix in TEXT_SUFFIXES:
            log_artifact_redacted(client, run_id, path, artifact_path)
        else:
            client.log_artifact(run_id, str(path), artifact_path)


DIGEST = re.compile(r"[0-9a-f]{8,64}")


def _with_run_ids(client: Any, experiment_id: str, jobs: list[dict]) -> list[dict]:
    """Each job with ``mlflow_run_id``, its identity's newest MLflow run: a skipped or resumed
    job's run is another sweep's child (or none's), and this is how the sweep's run finds it."""
    listed = []
    for job in jobs:
        digest = job.get("identity", "")
        found = []
        if DIGEST.fullmatch(digest):  # data read back from job.json: only a digest goes in the filter
            found = client.search_runs([experiment_id], f"tags.identity = '{digest}'", max_results=1,
                                       order_by=["attributes.start_time DESC"])
        listed.append({**job, "mlflow_run_id": found[0].info.run_id if found else None})
    return listed


def finish_sweep_runs(settings: TrackingSettings, sweep_dir: Path, files: Iterable[Path], jobs: list[dict],
                      failed: bool) -> None:
    """Log the sweep's report files and jobs into its run(s), and end them FINISHED (FAILED when a
    job or the report failed)."""
    from mlflow.exceptions import MlflowException

    sweep_dir = Path(sweep_dir)
    runs = _read_file(sweep_dir / SWEEP_FILE)
    os.environ.pop(SWEEP_ENV, None)
    files = list(files)
    for logger in _store_loggers(settings):
        run_id = runs.get(redact_uri(logger.tracking_uri))
        if run_id is None:
            continue
        try:
            run = logger.client.get_run(run_id)
            if SWEEP_TAG not in run.data.tags:  # the file is data: only a sweep's run is ended here
                log.warning("MLflow run %s named in %s is not a sweep's run; left as it is", run_id,
                            sweep_dir / SWEEP_FILE)
                continue
            _log_report(logger.client, run_id, settings.results_dir, files)
            experiment_id = run.info.experiment_id
            logger.client.log_dict(run_id, {"jobs": _with_run_ids(logger.client, experiment_id, jobs)},
                                   "sweep/jobs.json")
            if (sweep_dir / "multirun.yaml").is_file():
                log_artifact_redacted(logger.client, run_id, sweep_dir / "multirun.yaml", "config")
            logger.client.set_terminated(run_id, "FAILED" if failed else "FINISHED")
        except (MlflowException, OSError, TrackingError) as error:
            log.warning("Could not log the sweep's report into MLflow run %s (%s): %s", run_id,
                        redact_uri(logger.tracking_uri), error)
