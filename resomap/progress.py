"""See the whole sweep: one line per job with the count and an ETA, and progress of long steps.

``[3/10] simple_cnn_320 done in 4:12, sweep ETA ~11 min``: :class:`SweepProgress`, a Hydra
callback, writes the sweep's plan when it starts (``sweep_plan.json`` in the sweep folder:
every job's number, run name and work) and one ``job_progress.json`` per finished job (in the
job's folder), so the count and the ETA hold with any launcher: jobs in this process (basic),
in worker processes (joblib) or on other machines sharing the folder (submitit).

The ETA is work left x seconds per unit of work of the jobs trained so far (skipped and failed
jobs are left out of the rate), divided by the launcher's parallel jobs. A job's work is
fvcore's forward GMACs per image at its resolution x the images it processes (epochs x
(3 x train + val) + test: a training step costs about three forward passes); when fvcore
cannot count a model, the pixel count (res^2) replaces GMACs for every job of the sweep.

Sweeps in several batches: the basic sweeper's batches are planned at once and counted as a
running total (``[7/20]``). A sweeper built on the basic one that decides its next batch from
the last one's results (an adaptive study) has its grid planned as ``grid`` and plans each later
batch as it launches it with :func:`plan_batch` and a label; the count and ETA are then per
batch (``[grid: 3/10]``, ``[look 2: 3/4] ... look ETA ~5 min``), since later batches are not
known when a batch starts.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from resomap.logs import approx, clock

log = logging.getLogger(__name__)

PLAN_FILE = "sweep_plan.json"
JOB_FILE = "job_progress.json"
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
# A training step: forward, and a backward pass costing about two forwards.
TRAIN_PASSES = 3


def _split_images(cfg: DictConfig) -> tuple[int, int, int] | None:
    """Train, val and test images of the job's data set: the generator's spec, or the files of
    a prepared folder; None when unknown (then every job is assumed to see the same images)."""
    data = cfg.get("data") or {}
    generator = data.get("generator")
    if generator is not None and all(key in generator for key in ("n_train", "n_val", "n_test")):
        return int(generator.n_train), int(generator.n_val), int(generator.n_test)
    root = data.get("root")
    if root and Path(root).is_dir():
        counts = [sum(len(files) for _, _, files in os.walk(Path(root) / split))
                  for split in ("train", "val", "test")]
        if counts[0]:
            return counts[0], counts[1], counts[2]
    return None


def images_processed(cfg: DictConfig) -> float:
    """Forward-pass equivalents of images one job processes: epochs x (3 x train + val) + test."""
    epochs = int(OmegaConf.select(cfg, "trainer.max_epochs", default=1) or 1)
    split = _split_images(cfg)
    if split is None:
        return float(epochs * (TRAIN_PASSES + 1))
    train, val, test = split
    return float(epochs * (TRAIN_PASSES * train + val) + test)


def forward_gmacs(cfg: DictConfig, cache: dict[str, float | None]) -> float | None:
    """fvcore's forward multiply-adds per image (G) of the job's network at its resolution, or
    None when the model cannot be built or counted here."""
    key = json.dumps([OmegaConf.to_container(cfg.model.net, resolve=True), cfg.res], sort_keys=True,
                     default=str)
    if key not in cache:
        try:
            import torch
            from hydra.utils import instantiate

            from resomap.measure.complexity import fvcore_macs

            net_cfg = OmegaConf.to_container(cfg.model.net, resolve=True)
            if "pretrained" in net_cfg:
                net_cfg["pretrained"] = False  # the count needs shapes only, never weights
            # The head's size (class count) is a negligible part of the work.
            net = instantiate(net_cfg, num_classes=7).eval()
            with torch.no_grad():
                cache[key] = fvcore_macs(net, torch.zeros(1, 3, cfg.res, cfg.res)).total() / 1e9
        except Exception as error:  # a custom model that fvcore cannot trace: use the proxy
            log.debug("No fvcore count for %s at %s: %s", cfg.model.get("name"), cfg.res, error)
            cache[key] = None
    return cache[key]


def _job_entries(configs: Sequence[tuple[int, DictConfig]]) -> list[dict[str, Any]]:
    """Plan entries (number, run name, work) of composed job configs."""
    cache: dict[str, float | None] = {}
    gmacs = [forward_gmacs(cfg, cache) for _, cfg in configs]
    proxy = any(value is None for value in gmacs)
    entries = []
    for (num, cfg), value in zip(configs, gmacs):
        per_image = float(cfg.res) ** 2 if proxy else value
        entries.append({"num": num, "run_name": str(cfg.get("run_name", num)),
                        "work": per_image * images_processed(cfg),
                        "unit": "pixel-images" if proxy else "GMAC-images"})
    return entries


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def plan_batch(config: DictConfig, batch: Sequence[Sequence[str]], initial_job_idx: int,
               label: str | None = None) -> None:
    """Add one batch of jobs (as a sweeper passes it to ``launcher.launch``) to the sweep's plan.

    ``config`` is the sweep's config (with its ``hydra`` node), ``label`` names the batch in
    the progress lines (``"look 2"``): with a label, count and ETA are per batch. Never raises:
    a sweep without a plan still runs, its lines without a total or ETA.
    """
    try:
        from hydra.core.global_hydra import GlobalHydra

        loader = GlobalHydra.instance().config_loader()
        configs = [(initial_job_idx + index, loader.load_sweep_config(config, list(overrides)))
                   for index, overrides in enumerate(batch)]
        entries = _job_entries(configs)
    except Exception:
        log.debug("Could not plan the sweep's progress", exc_info=True)
        return
    from resomap.io import write_json

    path = Path(config.hydra.sweep.dir) / PLAN_FILE
    plan = _read(path) or {"started": time.time(), "batches": []}
    plan["batches"].append({"label": label, "jobs": entries})
    write_json(path, plan)


def _basic_sweeper(config: DictConfig) -> type | None:
    """The sweeper's class when it is Hydra's basic sweeper or builds on it, else None."""
    import importlib

    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    module, _, name = str(OmegaConf.select(config, "hydra.sweeper._target_") or "").rpartition(".")
    try:
        sweeper = getattr(importlib.import_module(module), name) if module else None
    except (ImportError, AttributeError):
        return None
    return sweeper if isinstance(sweeper, type) and issubclass(sweeper, BasicSweeper) else None


def basic_sweep_batches(config: DictConfig) -> list[list[list[str]]] | None:
    """The basic sweeper's batches for this command line, computed as the sweeper does (also
    the first batches of a sweeper built on it, such as an adaptive study's grid)."""
    if _basic_sweeper(config) is None:
        return None
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = config.hydra.sweeper.get("params") or {}
    arguments = [f"{key}={value}" for key, value in params.items()] + list(config.hydra.overrides.task)
    overrides = OverridesParser.create().parse_overrides(arguments)
    return BasicSweeper.split_arguments(overrides, config.hydra.sweeper.get("max_batch_size"))


def _parallel(config: DictConfig) -> int:
    """Jobs the launcher runs at once (joblib's n_jobs when positive), else 1."""
    n_jobs = OmegaConf.select(config, "hydra.launcher.n_jobs", default=None)
    return n_jobs if isinstance(n_jobs, int) and n_jobs > 1 else 1


def _status(output_dir: Path, job_return: JobReturn, started: float) -> str:
    """finished, skipped or failed: from the job's job.json (resomap.run.job.read_job) when the
    sweep writes one, else from its failure file."""
    if job_return.status == JobStatus.FAILED:
        return "failed"
    failure = output_dir / "failure.json"
    if failure.is_file() and failure.stat().st_mtime >= started:
        return "failed"
    from resomap.run.job import read_job

    job = read_job(output_dir)
    return str(job["status"]) if job and job.get("status") else "finished"


def progress_line(plan: dict[str, Any] | None, sweep_dir: Path, num: int, run_name: str, status: str,
                  seconds: float, parallel: int = 1) -> str:
    """The job's line from the plan and the jobs' progress files in ``sweep_dir``."""
    done = {"finished": f"done in {clock(seconds)}", "skipped": "skipped (finished before)",
            "failed": f"failed after {clock(seconds)}"}.get(status, f"{status} after {clock(seconds)}")
    batch = next((item for item in (plan or {}).get("batches", [])
                  if any(job["num"] == num for job in item["jobs"])), None)
    if batch is None:
        return f"[{num + 1}] {run_name} {done}"
    records = {record["num"]: record for record in _job_records(sweep_dir, plan.get("started", 0.0))}
    ended = {job["num"]: records[job["num"]] for job in batch["jobs"] if job["num"] in records}
    total = len(batch["jobs"])
    label = batch.get("label")
    count = f"[{label}: {len(ended)}/{total}]" if label else f"[{len(ended)}/{total}]"
    scope = "look" if label and label.startswith("look") else ("batch" if label else "sweep")
    trained = [(job["work"], ended[job["num"]]["seconds"]) for job in batch["jobs"]
               if ended.get(job["num"], {}).get("status") == "finished" and job["work"] > 0]
    left = [job["work"] for job in batch["jobs"] if job["num"] not in ended]
    if not left:
        wall = max(record["ended"] for record in ended.values()) - plan.get("started", 0.0)
        return f"{count} {run_name} {done}, all {total} jobs done in {clock(wall)}"
    if not trained:
        return f"{count} {run_name} {done}, {scope} ETA after the first trained run"
    rate = sum(seconds for _, seconds in trained) / sum(work for work, _ in trained)
    return f"{count} {run_name} {done}, {scope} ETA {approx(rate * sum(left) / parallel)}"


def _job_records(sweep_dir: Path, started: float) -> list[dict[str, Any]]:
    """Progress files of this sweep's jobs (older ones belong to an earlier sweep in the folder)."""
    records = []
    for path in sweep_dir.glob(f"*/{JOB_FILE}"):
        record = _read(path)
        if record is not None and record.get("ended", 0) >= started:
            records.append(record)
    return records


class SweepProgress(Callback):
    """One line per job of a multirun: count, run name, time, and the sweep's ETA."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.started = time.time()
        try:
            batches = basic_sweep_batches(config)
        except Exception:
            log.debug("Could not list the sweep's jobs", exc_info=True)
            batches = None
        if batches:
            # The basic sweeper's batches are known now: one running total over all of them. A
            # sweeper built on it may launch more batches later (plan_batch with their label):
            # its grid is then one labelled batch too.
            exact = OmegaConf.select(config, "hydra.sweeper._target_") == BASIC_SWEEPER
            plan_batch(config, [job for batch in batches for job in batch], 0, None if exact else "grid")
            plan = _read(Path(config.hydra.sweep.dir) / PLAN_FILE)
            if plan:
                jobs = plan["batches"][-1]["jobs"]
                log.info("Sweep of %d jobs: %s", len(jobs), ", ".join(job["run_name"] for job in jobs))

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.job_started = time.time()

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        from hydra.types import RunMode

        if config.hydra.mode != RunMode.MULTIRUN:
            return
        try:
            self._report(config, job_return)
        except Exception:  # progress must never fail a job
            log.debug("Could not report the sweep's progress", exc_info=True)

    def _report(self, config: DictConfig, job_return: JobReturn) -> None:
        from resomap.io import write_json

        started = getattr(self, "job_started", time.time())
        ended = time.time()
        output_dir = Path(config.hydra.runtime.output_dir)
        sweep_dir = Path(config.hydra.sweep.dir)
        num = int(config.hydra.job.num)
        run_name = str(config.get("run_name", num))
        status = _status(output_dir, job_return, started)
        write_json(output_dir / JOB_FILE, {"num": num, "run_name": run_name, "status": status,
                                           "seconds": ended - started, "ended": ended})
        plan = _read(sweep_dir / PLAN_FILE)
        log.info("%s", progress_line(plan, sweep_dir, num, run_name, status, ended - started,
                                     _parallel(config)))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        started = getattr(self, "started", time.time())
        records = _job_records(Path(config.hydra.sweep.dir), started)
        counts = {status: sum(record["status"] == status for record in records)
                  for status in ("finished", "skipped", "failed")}
        log.info("Sweep's jobs done in %s (%d trained, %d skipped, %d failed); building the report",
                 clock(time.time() - started), counts["finished"], counts["skipped"], counts["failed"])
