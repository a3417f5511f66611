"""What makes a Hydra multirun a sweep: each job says which run it was (``job.json``), failures
are recorded per job, and the end-of-sweep report covers the runs this sweep asked for."""

from __future__ import annotations

import inspect
import json
import logging
import os
import shlex
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from resomap import orchestrate
from resomap.errors import ResoMapError, exit_with, user_error
from resomap.io import write_json
from resomap.names import UnsafeName
from resomap.redact import redact_config
from resomap.run import distributed, signals
from resomap.run.job import JOB_FILE, read_job
from resomap.tracking import mlflow as mlflow_store
from resomap.tracking import sweep_run
from resomap.tracking.settings import TrackingSettings, store_nodes

log = logging.getLogger(__name__)

FAILURE_FILE = "failure.json"
INTERRUPTED_EXIT = 130
TERMINATED_EXIT = 128 + signal.SIGTERM
# Errors the user can fix from the message alone: shown without a traceback.
USER_ERRORS = (ResoMapError,)


def resume_command(overrides: list[str]) -> str:
    """The command that resumes one job of a sweep from its last checkpoint."""
    kept = [item for item in overrides if not item.startswith(("ckpt_path=", "hydra/launcher="))]
    return shlex.join(["python", "-m", "resomap.train", *kept, "ckpt_path=last"])


def sweep_resume_command() -> str:
    """The command line of this multirun again, with ``ckpt_path=last``: finished runs are
    skipped, the interrupted one resumes, the rest start."""
    kept = [item for item in sys.argv[1:] if not item.startswith("ckpt_path=")]
    return shlex.join(["python", "-m", "resomap.train", *kept, "ckpt_path=last"])


def _last_checkpoint(cfg: DictConfig, digest: str = "") -> Path | None:
    """This run's ``last.ckpt`` (the identity's folder), else the newest of its run name."""
    folder = Path(cfg.paths.checkpoint_dir) / cfg.run_name
    if digest and (folder / digest / "last.ckpt").is_file():
        return folder / digest / "last.ckpt"
    found = sorted(folder.glob("*/last.ckpt"), key=lambda path: path.stat().st_mtime)
    return found[-1] if found else None


def report_interrupt(cfg: DictConfig, overrides: list[str], multirun: bool, digest: str = "") -> None:
    last = _last_checkpoint(cfg, digest)
    saved = f"its last checkpoint is {last}" if last else "no checkpoint was saved yet"
    lines = [f"Interrupted {cfg.run_name}; {saved}. Resume this run with:",
             f"  {resume_command(overrides)}"]
    if multirun:
        lines += ["The sweep stopped here; resume the whole sweep (finished runs are skipped) with:",
                  f"  {sweep_resume_command()}"]
    log.error("\n".join(lines))


def _identity_digest(cfg: DictConfig) -> str:
    """The run's identity digest for a job that stopped before saying it; "" when unknown."""
    from resomap.run import build

    try:
        return build.identify(cfg).digest
    except Exception:  # the job already failed; its job.json must still be written
        return ""


def write_job(output_dir: str | Path, cfg: DictConfig, status: str, identity: str | None = None) -> dict:
    """``job.json`` in the job's output folder: which run this job was and how it ended."""
    job = {"identity": identity if identity is not None else _identity_digest(cfg),
           "run_name": str(cfg.run_name), "model": str(cfg.model.name), "res": int(cfg.res),
           "seed": int(cfg.seed), "status": status}
    write_json(Path(output_dir) / JOB_FILE, job)
    return job


def job_settings(cfg: DictConfig) -> distributed.JobSettings:
    """What placing this job needs of its config (:func:`resomap.run.distributed.place`)."""
    trainer = {key: cfg.trainer[key] for key in ("strategy", "devices", "accelerator", "num_nodes",
                                                 "sync_batchnorm") if key in cfg.trainer}
    trainer = {key: OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
               for key, value in trainer.items()}
    return distributed.JobSettings(trainer=trainer, run_name=str(cfg.run_name), ckpt_path=cfg.ckpt_path,
                                   results_dir=Path(cfg.paths.results_dir), objective=str(cfg.objective),
                                   gpu_per_job=bool(cfg.get("gpu_per_job", False)))


def with_changes(cfg: DictConfig, changes: dict[str, Any]) -> DictConfig:
    """A new config: ``cfg`` with ``changes`` (dotted keys). The composed config is never changed."""
    if not changes:
        return cfg
    nested: dict[str, Any] = {}
    for key, value in changes.items():
        *parents, name = key.split(".")
        node = nested
        for parent in parents:
            node = node.setdefault(parent, {})
        node[name] = value
    return OmegaConf.merge(cfg, nested)


def run_job(cfg: DictConfig) -> float | None:
    """Run one job. Bad input ends a single run with one paragraph (exit 2); in a multirun a
    failure is recorded and the other jobs go on; Ctrl-C (exit 130) or SIGTERM (exit 143) stop
    everything, the run's checkpoint saved and its job marked interrupted."""
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    overrides = list(hydra_cfg.overrides.task)
    settings = job_settings(cfg)
    try:
        placement = distributed.place(settings)
    except distributed.DistributedConfigError as error:  # stops a sweep at its first job
        exit_with(error)
    cfg = with_changes(cfg, placement.changes)
    output_dir = Path(hydra_cfg.runtime.output_dir)
    failure_file = output_dir / FAILURE_FILE
    with signals.sigterm_interrupts():
        try:
            outcome = (orchestrate.run_outcome(cfg) if placement.in_place else
                       distributed.run_in_child(settings, placement))
            # A reused sweep folder may hold this job's failure from an earlier sweep: it is resolved.
            failure_file.unlink(missing_ok=True)
            if isinstance(outcome, orchestrate.Outcome):
                write_job(output_dir, cfg, outcome.status, outcome.identity.digest)
            if signals.received():  # noted by Lightning as the run ended: the sweep stops here
                log.error("SIGTERM received; %s is complete, the sweep stops here", cfg.run_name)
                sys.exit(TERMINATED_EXIT)
            # Else a child process ran the job and wrote its job.json.
            return outcome.objective if isinstance(outcome, orchestrate.Outcome) else outcome
        except (KeyboardInterrupt, SIGTERMException) as stop:
            _interrupted(cfg, output_dir, overrides, multirun, isinstance(stop, SIGTERMException))
        except Exception as error:
            if signals.stopped_by_sigterm(error):  # e.g. DataLoader workers killed with the group
                _interrupted(cfg, output_dir, overrides, multirun, True)
            found = user_error(error)
            write_job(output_dir, cfg, "failed")
            if not multirun:
                if found is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
                    raise
                exit_with(found)  # the one user-error policy: the message alone, exit status 2
            record = {"run_name": cfg.run_name, "overrides": overrides,
                      "error": str(found) if found else repr(error),
                      "traceback": "" if found else traceback.format_exc(),
                      "resume": resume_command(overrides)}
            write_json(failure_file, redact_config(record))
            if found:
                log.error("Run %s failed; the sweep goes on. error: %s", cfg.run_name, found)
            else:
                log.exception("Run %s failed; the sweep goes on", cfg.run_name)
            return None


def _interrupted(cfg: DictConfig, output_dir: Path, overrides: list[str], multirun: bool,
                 terminated: bool) -> None:
    """Mark the job interrupted, say how to resume, and stop (a sweep stops with it)."""
    job = write_job(output_dir, cfg, "interrupted")
    report_interrupt(cfg, overrides, multirun, job["identity"])
    # Lightning's SIGTERMException would exit 0; a scheduler must see an interrupted job.
    sys.exit(TERMINATED_EXIT if terminated else INTERRUPTED_EXIT)


def sweep_jobs(sweep_dir: str | Path, since: float = 0.0) -> list[dict]:
    """The ``job.json`` of every job of the sweep in ``sweep_dir`` written at or after ``since``."""
    jobs = []
    for path in sorted(Path(sweep_dir).glob(f"*/{JOB_FILE}")):
        if path.stat().st_mtime >= since and (job := read_job(path.parent)) is not None:
            jobs.append(job)
    return jobs


def varying_settings(results_dir: str | Path, digests: set[str]) -> dict[str, dict[str, list]]:
    """Per model, the training keys whose values differ between runs of the same resolution in
    this sweep (a sweep over ``optimizer.lr``): key -> the values seen. Keys that only change
    with the resolution (a per-resolution batch size) are not listed."""
    from resomap.config import flatten
    from resomap.run import record as records

    by_model: dict[str, dict[int, list[dict]]] = {}
    for digest in sorted(digests):
        try:
            record = records.read_record(records.record_path(results_dir, digest))
        except (records.InvalidRecord, UnsafeName):
            continue
        by_model.setdefault(record.model, {}).setdefault(record.resolution, []).append(
            flatten(record.identity.training))
    varying: dict[str, dict[str, list]] = {}
    for model, per_res in by_model.items():
        keys = {key for runs in per_res.values() for run in runs for key in run
                if len({json.dumps(other.get(key), sort_keys=True, default=str) for other in runs}) > 1}
        if keys:
            varying[model] = {key: sorted({json.dumps(run.get(key), default=str) for runs in per_res.values()
                                           for run in runs}) for key in sorted(keys)}
    return varying


def sweep_tracking(config: DictConfig) -> TrackingSettings:
    """The sweep's tracking settings; without stores, with a warning, when their nodes cannot be
    read: each job then stops with that store's own error and what to do."""
    checkpoint_dir = OmegaConf.select(config, "paths.checkpoint_dir", default="checkpoints")
    try:
        stores = store_nodes(config.get("logger"))
    except Exception as error:  # reported by every job; the sweep's run is a convenience
        log.warning("This sweep has no MLflow run: its store cannot be used (%s)", error)
        stores = ()
    return TrackingSettings.of(stores, checkpoint_dir, config.paths.results_dir)


class SweepSummary(Callback):
    """Around a multirun: the sweep's MLflow run (parent of its jobs' runs) at the start; at the
    end, aggregate the results, log the report into that run, and list failed runs."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Failure files older than this sweep are an earlier sweep's, in a reused sweep folder.
        self.started = time.time()
        settings = sweep_tracking(config)
        # Parallel jobs creating one SQLite store at once race on its schema.
        mlflow_store.prepare_stores(settings.stores)
        # The sweep's MLflow run, parent of its jobs' runs (single runs have none).
        sweep_run.start_sweep_runs(settings, Path(config.hydra.sweep.dir))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from resomap.study.aggregate import write_aggregates

        sweep_dir = Path(config.hydra.sweep.dir)
        started = getattr(self, "started", 0.0)
        failures = [json.loads(path.read_text()) for path in sorted(sweep_dir.glob(f"*/{FAILURE_FILE}"))
                    if path.stat().st_mtime >= started]
        from resomap.study.failures import ReportIncomplete

        rebuild = f"python -m resomap.report results_dir={config.paths.results_dir}"
        # The report covers the runs this sweep asked for, not every record in the folder.
        jobs = sweep_jobs(sweep_dir, started)
        digests = {job["identity"] for job in jobs
                   if job["status"] in ("finished", "skipped") and job["identity"]}
        for model, keys in varying_settings(config.paths.results_dir, digests).items():
            log.warning("Runs of %s in this sweep differ in more than the resolution: %s. Compare "
                        "resolutions within one setting of these keys (each run's settings are in "
                        "results/runs/<identity>/record.json, identity.training).", model,
                        "; ".join(f"{key} ({', '.join(values)})" for key, values in keys.items()))
        scope = {}
        if "digests" in inspect.signature(write_aggregates).parameters:
            scope["digests"] = digests
        else:
            log.warning("This version of the report covers every record in %s, not only this sweep's %d runs",
                        config.paths.results_dir, len(digests))
        written: list[Path] = []
        try:
            report = config.get("report")
            settings = OmegaConf.to_container(report, resolve=True) if report is not None else {}
            written = write_aggregates(config.paths.results_dir, evaluate_cross_res=config.evaluate_cross_res,
                                       **scope, **settings)
            log.info("Sweep finished: results aggregated into %s; read %s first", written[0].parent,
                     written[0].parent / "report.html")
        except ReportIncomplete as incomplete:
            written = list(incomplete.written)
            failures.append({"run_name": "report", "error": str(incomplete), "resume": rebuild})
        except Exception:
            # Hydra turns an exception here into a warning and exit status 0: report it instead.
            log.exception("Sweep finished, but its report could not be built; rebuild it with %s", rebuild)
            failures.append({"run_name": "report", "error": "the report could not be built",
                             "resume": rebuild})
        sweep_run.finish_sweep_runs(sweep_tracking(config), sweep_dir, written, jobs, failed=bool(failures))
        if failures:
            lines = [f"{len(failures)} run(s) failed; resume each with:"]
            lines += [f"  {failure['run_name']}: {failure['error']}\n    {failure['resume']}"
                      for failure in failures]
            log.error("\n".join(lines))
            sys.exit(1)
