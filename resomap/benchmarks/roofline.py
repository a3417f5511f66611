"""The machine's measured matmul peak, and training configurations placed under it (roofline):
img/s, TFLOP/s and fraction of the bf16 and fp32 peaks (``bench.roofline``).
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from omegaconf import DictConfig

from resomap.benchmarks.harness import (
    Clock,
    format_table,
    forward_macs,
    make_datamodule,
    trainer_for,
    with_model,
)
from resomap.device import resolve_precision
from resomap.measure.peak import fraction_of_peak, measure_peak, training_tflops
from resomap.run.build import build_module


def roofline_row(cfg: DictConfig, model: str, res: int, peak: dict[str, Any]) -> dict[str, Any]:
    """One training configuration as a run trains it (Lightning, the cached pipeline, the run's
    precision), timed over steps after a warm-up, and placed under the measured peak."""
    spec = cfg.bench.roofline
    run_cfg = with_model(cfg, model, res, **dict(spec.get("set") or {}))
    datamodule = make_datamodule(run_cfg, "cached")
    datamodule.prepare_data()
    datamodule.setup("fit")
    warmup, timed = int(spec.warmup_steps), int(spec.timed_steps)
    clock = Clock(warmup, timed)
    trainer = trainer_for(run_cfg, [clock], max_epochs=1, limit_train_batches=warmup + timed,
                          limit_val_batches=0)
    pl.seed_everything(cfg.seed)
    trainer.fit(build_module(run_cfg, datamodule), datamodule=datamodule)
    images_per_sec = datamodule.batch_size / clock.step_seconds
    mult_adds = forward_macs(run_cfg, datamodule.num_classes)
    precision = resolve_precision(run_cfg.trainer.precision, run_cfg.trainer.accelerator)
    # MACs to FLOPs: training_tflops counts 2 FLOPs per multiply-add and 3 forwards per image.
    achieved = training_tflops(mult_adds, images_per_sec)
    # bf16-mixed runs its convolutions in bf16: its ceiling is the bf16 peak.
    ceiling = "bfloat16" if precision.startswith("bf16") else "float32"
    return {"model": model, "res": res, "batch_size": datamodule.batch_size, "precision": precision,
            "train_step_sec": clock.step_seconds, "images_per_sec": images_per_sec,
            "forward_gmacs": mult_adds / 1e9, "train_tflops": achieved, "ceiling": ceiling,
            "fraction_of_peak": fraction_of_peak(achieved, (peak.get(ceiling) or {}).get("tflops")),
            "fraction_of_bf16_peak": fraction_of_peak(achieved, (peak.get("bfloat16") or {}).get("tflops")),
            "fraction_of_fp32_peak": fraction_of_peak(achieved, (peak.get("float32") or {}).get("tflops"))}


def print_roofline(peak: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    parts = [f"{name} {peak[name]['tflops']:.3f} TFLOP/s (n={peak[name]['size']})"
             for name in ("bfloat16", "float32") if name in peak]
    print(f"\nMachine peak, measured here (dense n x n matmul, same process, {peak['threads']} thread(s)): "
          + ", ".join(parts))
    if not rows:
        return
    print("Training as runs do it (cached pipeline, Lightning, the run's precision); TFLOP/s = 2 x fvcore "
          "multiply-adds x 3 forwards per image x img/s; of bf16 / fp32 peak = TFLOP/s over that measured "
          "matmul peak (without AMX, torch's bf16 matmul can be slower than its fp32 one while bf16 "
          "convolutions are faster: both are shown)\n")
    columns = (("model", "model", "{}"), ("res", "res", "{}"), ("batch", "batch_size", "{}"),
               ("precision", "precision", "{}"), ("img/s", "images_per_sec", "{:.1f}"),
               ("TFLOP/s", "train_tflops", "{:.3f}"), ("of bf16 peak", "fraction_of_bf16_peak", "{:.1%}"),
               ("of fp32 peak", "fraction_of_fp32_peak", "{:.1%}"))
    print(format_table(rows, columns))


def roofline(cfg: DictConfig, device: torch.device) -> dict[str, Any]:
    """The machine's measured peak, then every configuration of ``bench.roofline`` under it."""
    spec = cfg.bench.roofline
    peak = measure_peak(device, sizes=[int(n) for n in spec.peak_sizes], min_seconds=float(spec.peak_seconds))
    rows = [roofline_row(cfg, str(model), int(res), peak)
            for model in spec.models for res in spec.resolutions]
    return {"peak": peak, "rows": rows}
