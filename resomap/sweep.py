"""What makes a Hydra multirun a sweep: failures recorded per job, a summary at the end."""

from __future__ import annotations

import json
import logging
import shlex
import sys
import traceback
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from resomap import experiment, results

log = logging.getLogger(__name__)

FAILURE_FILE = "failure.json"


def resume_command(overrides: list[str]) -> str:
    """The command that resumes one job of a sweep from its last checkpoint."""
    kept = [item for item in overrides if not item.startswith(("ckpt_path=", "hydra/launcher="))]
    return shlex.join(["python", "-m", "resomap.train", *kept, "ckpt_path=last"])


def run_job(cfg: DictConfig) -> float | None:
    """Run one job; in a multirun, record a failure and let the other jobs go on."""
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return experiment.run(cfg)
    try:
        return experiment.run(cfg)
    except Exception as error:
        overrides = list(hydra_cfg.overrides.task)
        record = {"run_name": cfg.run_name, "overrides": overrides, "error": repr(error),
                  "traceback": traceback.format_exc(), "resume": resume_command(overrides)}
        results.write_json(Path(hydra_cfg.runtime.output_dir) / FAILURE_FILE, record)
        log.exception("Run %s failed; the sweep goes on", cfg.run_name)
        return None


class SweepSummary(Callback):
    """At the end of a multirun: aggregate the results and list failed runs."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from resomap.analysis.aggregate import write_aggregates

        sweep_dir = Path(config.hydra.sweep.dir)
        failures = [json.loads(path.read_text()) for path in sorted(sweep_dir.glob(f"*/{FAILURE_FILE}"))]
        written = write_aggregates(config.paths.results_dir)
        log.info("Sweep finished: results aggregated into %s", ", ".join(map(str, written)))
        if failures:
            lines = [f"{len(failures)} run(s) failed; resume each with:"]
            lines += [f"  {failure['run_name']}: {failure['error']}\n    {failure['resume']}"
                      for failure in failures]
            log.error("\n".join(lines))
            sys.exit(1)
