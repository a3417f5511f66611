"""Training step time per precision and compile setting: ``bench.precision`` (rounds alternating
in one process; whether bf16 pays on this CPU) and ``gpu_check``'s variants.
"""

from __future__ import annotations

import logging
import statistics
import time
from typing import Any

import lightning.pytorch as pl
from omegaconf import DictConfig

from resomap.benchmarks.harness import Clock, make_datamodule, trainer_for, with_model
from resomap.run.build import build_module

log = logging.getLogger(__name__)



def step_row(cfg: DictConfig, model: str, res: int, precision: str, compiled: bool, warmup_steps: int,
             timed_steps: int) -> dict[str, Any]:
    """Mean training step time of ``model`` at ``res`` in ``precision`` after ``warmup_steps``."""
    run_cfg = with_model(cfg, model, res, **{"trainer.precision": precision, "model.compile": compiled})
    datamodule = make_datamodule(run_cfg, "cached")
    datamodule.prepare_data()
    datamodule.setup("fit")
    clock = Clock(warmup_steps, timed_steps)
    trainer = trainer_for(run_cfg, [clock], max_epochs=1, limit_train_batches=warmup_steps + timed_steps,
                          limit_val_batches=0)
    pl.seed_everything(cfg.seed)
    module = build_module(run_cfg, datamodule)
    started = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    return {"model": model, "res": res, "precision": precision, "compile": compiled,
            "train_step_sec": clock.step_seconds,
            "images_per_sec": datamodule.batch_size / clock.step_seconds,
            "fit_sec": time.perf_counter() - started, "compile_report": module.compile_report()}


def step_variants(cfg: DictConfig) -> list[dict[str, Any]]:
    """Training step time of one model x resolution under each precision x compile setting."""
    spec = cfg.bench.gpu_check.variants
    rows = []
    for precision in spec.precisions:
        for compiled in spec.compile:
            rows.append(step_row(cfg, str(spec.model), int(spec.res), str(precision), bool(compiled),
                                 int(spec.warmup_steps), int(spec.timed_steps)))
            log.info("variant %s: %.2f ms/step", rows[-1], 1000 * rows[-1]["train_step_sec"])
    return rows


def compare_precisions(cfg: DictConfig) -> dict[str, Any]:
    """Training step time per precision (``bench.precision``), rounds alternating in one process
    so that the machine's load falls on every precision alike; the median round per precision.
    Decides ``resolve_precision``'s CPU choice: bf16 is fast only with bf16 instructions."""
    spec = cfg.bench.precision
    precisions = [str(name) for name in spec.precisions]
    seconds: dict[str, list[float]] = {name: [] for name in precisions}
    for _ in range(int(spec.rounds)):
        for name in precisions:
            row = step_row(cfg, str(spec.model), int(spec.res), name, False, int(spec.warmup_steps),
                           int(spec.timed_steps))
            seconds[name].append(row["train_step_sec"])
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    return {"model": str(spec.model), "res": int(spec.res), "batch_size": int(cfg.data.batch_size),
            "rounds": seconds, "median_step_sec": medians,
            "time_over_first": {name: medians[name] / medians[precisions[0]] for name in precisions}}


def print_precisions(result: dict[str, Any]) -> None:
    print(f"\nPrecision: {result['model']} at {result['res']} px, batch {result['batch_size']}, training "
          f"step, median of {len(next(iter(result['rounds'].values())))} alternating rounds")
    for name, median in result["median_step_sec"].items():
        print(f"  {name:>10}: {1000 * median:9.1f} ms/step  ({result['time_over_first'][name]:.2f}x the "
              f"time of {next(iter(result['median_step_sec']))})")
