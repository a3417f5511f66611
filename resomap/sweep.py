"""What makes a Hydra multirun a sweep: failures recorded per job, a summary at the end."""

from __future__ import annotations

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
from omegaconf import DictConfig

from resomap.errors import ResoMapError
from resomap.io import write_json
from resomap.run import distributed
from resomap.run import orchestrate as experiment
from resomap.tracking import mlflow as tracking
from resomap.tracking.redact import redact_config

log = logging.getLogger(__name__)

FAILURE_FILE = "failure.json"
USAGE_EXIT = 2
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


def _last_checkpoint(cfg: DictConfig) -> Path | None:
    """The newest ``last.ckpt`` of this run name (each identity has its own folder under it)."""
    found = sorted((Path(cfg.paths.checkpoint_dir) / cfg.run_name).glob("*/last.ckpt"),
                   key=lambda path: path.stat().st_mtime)
    return found[-1] if found else None


def report_interrupt(cfg: DictConfig, overrides: list[str], multirun: bool) -> None:
    last = _last_checkpoint(cfg)
    saved = f"its last checkpoint is {last}" if last else "no checkpoint was saved yet"
    lines = [f"Interrupted {cfg.run_name}; {saved}. Resume this run with:",
             f"  {resume_command(overrides)}"]
    if multirun:
        lines += ["The sweep stopped here; resume the whole sweep (finished runs are skipped) with:",
                  f"  {sweep_resume_command()}"]
    log.error("\n".join(lines))


def run_job(cfg: DictConfig) -> float | None:
    """Run one job. Bad input ends a single run with one paragraph (exit 2); in a multirun a
    failure is recorded and the other jobs go on; Ctrl-C stops everything (exit 130)."""
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    overrides = list(hydra_cfg.overrides.task)
    try:
        run = distributed.job_runner(cfg, experiment.run)
    except distributed.DistributedConfigError as error:  # stops a sweep at its first job
        print(f"error: {error}", file=sys.stderr)
        sys.exit(USAGE_EXIT)
    failure_file = Path(hydra_cfg.runtime.output_dir) / FAILURE_FILE
    try:
        objective = run(cfg)
        # A reused sweep folder may hold this job's failure from an earlier sweep: it is resolved.
        failure_file.unlink(missing_ok=True)
        return objective
    except (KeyboardInterrupt, SIGTERMException) as stop:
        report_interrupt(cfg, overrides, multirun)
        # Lightning's SIGTERMException would exit 0; a scheduler must see an interrupted job.
        sys.exit(TERMINATED_EXIT if isinstance(stop, SIGTERMException) else INTERRUPTED_EXIT)
    except Exception as error:
        user_error = isinstance(error, USER_ERRORS)
        if not multirun:
            if not user_error or os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            # Like argparse: the message alone on stderr, exit status 2.
            print(f"error: {error}", file=sys.stderr)
            sys.exit(USAGE_EXIT)
        record = {"run_name": cfg.run_name, "overrides": overrides,
                  "error": str(error) if user_error else repr(error),
                  "traceback": "" if user_error else traceback.format_exc(),
                  "resume": resume_command(overrides)}
        write_json(failure_file, redact_config(record))
        if user_error:
            log.error("Run %s failed; the sweep goes on. error: %s", cfg.run_name, error)
        else:
            log.exception("Run %s failed; the sweep goes on", cfg.run_name)
        return None


class SweepSummary(Callback):
    """At the end of a multirun: aggregate the results and list failed runs."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Failure files older than this sweep are an earlier sweep's, in a reused sweep folder.
        self.started = time.time()
        # Parallel jobs creating one SQLite store at once race on its schema.
        tracking.prepare_stores(config)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from resomap.study.aggregate import write_aggregates

        sweep_dir = Path(config.hydra.sweep.dir)
        started = getattr(self, "started", 0.0)
        failures = [json.loads(path.read_text()) for path in sorted(sweep_dir.glob(f"*/{FAILURE_FILE}"))
                    if path.stat().st_mtime >= started]
        from omegaconf import OmegaConf

        from resomap.study.report import ReportIncomplete

        rebuild = f"python -m resomap.report results_dir={config.paths.results_dir}"
        try:
            written = write_aggregates(config.paths.results_dir, evaluate_cross_res=config.evaluate_cross_res,
                                       **OmegaConf.to_container(config.get("report") or {}, resolve=True))
            log.info("Sweep finished: results aggregated into %s; read %s first", written[0].parent,
                     written[0].parent / "report.html")
        except ReportIncomplete as incomplete:
            failures.append({"run_name": "report", "error": str(incomplete), "resume": rebuild})
        except Exception:
            # Hydra turns an exception here into a warning and exit status 0: report it instead.
            log.exception("Sweep finished, but its report could not be built; rebuild it with %s", rebuild)
            failures.append({"run_name": "report", "error": "the report could not be built",
                             "resume": rebuild})
        if failures:
            lines = [f"{len(failures)} run(s) failed; resume each with:"]
            lines += [f"  {failure['run_name']}: {failure['error']}\n    {failure['resume']}"
                      for failure in failures]
            log.error("\n".join(lines))
            sys.exit(1)
