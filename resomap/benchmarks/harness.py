"""What every bench section shares: a configuration for another model and resolution, its data
module and trainer, the epoch and step clock, the forward multiply-add count, the machine's facts and
text tables. The sections (pipelines, roofline, overhead, projection, precision, gpu_check)
build on these; nothing here knows of the ``resomap bench`` command.
"""

from __future__ import annotations

import os
import statistics
import time
import warnings
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from resomap.device import machine as device_machine
from resomap.device import uses_cuda
from resomap.run.build import build_trainer

CONF_DIR = resources.files("resomap.conf")  # conf/ in a clone, resomap/conf/ when installed


class Clock(pl.Callback):
    """Per-epoch training and whole-epoch seconds; optionally the mean of steps after a warm-up."""

    def __init__(self, warmup_steps: int = 0, timed_steps: int = 0) -> None:
        self.warmup_steps, self.timed_steps = warmup_steps, timed_steps
        self.train_seconds: list[float] = []
        self.epoch_seconds: list[float] = []
        self.val_seconds: list[float] = []
        # CPU time of this process per training part of an epoch (work done, whatever the load).
        self.train_cpu_seconds: list[float] = []
        self.step_seconds: float | None = None
        self._marks: dict[str, float] = {}

    @staticmethod
    def now(module: pl.LightningModule) -> float:
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)
        return time.perf_counter()

    def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._marks = {"epoch": self.now(module), "epoch_cpu": time.process_time()}

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx: int) -> None:
        if self.timed_steps and batch_idx + 1 == self.warmup_steps:
            self._marks["steps"] = self.now(module)
        elif self.timed_steps and batch_idx + 1 == self.warmup_steps + self.timed_steps:
            self.step_seconds = (self.now(module) - self._marks["steps"]) / self.timed_steps

    def _end_of_training_part(self, module: pl.LightningModule) -> None:
        if "train_end" not in self._marks:
            self._marks["train_end"] = self.now(module)
            self.train_seconds.append(self._marks["train_end"] - self._marks["epoch"])
            self.train_cpu_seconds.append(time.process_time() - self._marks["epoch_cpu"])

    def on_validation_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.state.fn == "fit":
            self._end_of_training_part(module)

    def on_validation_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.state.fn == "fit":
            self.val_seconds.append(self.now(module) - self._marks["train_end"])

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._end_of_training_part(module)
        self.epoch_seconds.append(self.now(module) - self._marks["epoch"])


def steady(values: list[float]) -> float:
    """Median over epochs after the first (worker start-up, cudnn autotuning), if there are any."""
    return statistics.median(values[1:] or values)


def training_device(cfg: DictConfig) -> torch.device:
    return torch.device("cuda" if uses_cuda(str(cfg.trainer.accelerator)) else "cpu")


def sync(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def make_datamodule(cfg: DictConfig, pipeline: str, **overrides: Any) -> pl.LightningDataModule:
    return instantiate(cfg.data, pipeline=pipeline,
                       validation_cache=str(Path(cfg.paths.cache_dir) / "validation"), **overrides)


def forward_macs(cfg: DictConfig, num_classes: int) -> float:
    """fvcore's count (multiply-adds) of one image's forward pass at ``cfg.res``."""
    from fvcore.nn import FlopCountAnalysis

    net = instantiate(cfg.model.net, num_classes=num_classes).eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        analysis = FlopCountAnalysis(net, torch.zeros(1, 3, cfg.res, cfg.res))
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        return float(analysis.total())


def trainer_for(cfg: DictConfig, callbacks: list[pl.Callback], **overrides: Any) -> pl.Trainer:
    settings = {"enable_checkpointing": False, "enable_model_summary": False,
                "num_sanity_val_steps": 0, "default_root_dir": str(Path(cfg.bench.output).parent)}
    return build_trainer(cfg, callbacks, [], **{**settings, **overrides})


def with_model(cfg: DictConfig, model: str, res: int, **changes: Any) -> DictConfig:
    """``cfg`` for another model (its conf/model file) and resolution; ``changes`` are dotted
    keys set on the copy (e.g. ``{"trainer.precision": "bf16-mixed"}``)."""
    other = cfg.copy()
    with open_dict(other):
        other.model = OmegaConf.load(CONF_DIR / "model" / f"{model}.yaml")
        other.res = res
        for key, value in changes.items():
            OmegaConf.update(other, key, value, merge=False)
    return other


def load_average() -> float | None:
    """The 1-minute load average (None where the system has none)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def machine_facts() -> dict[str, Any]:
    """The machine (resomap.device.machine: CPU model and matrix features read from the system,
    GPU), the load and the date, for the header and bench.json."""
    info = device_machine()
    load = " ".join(f"{value:.2f}" for value in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return {"machine": info, "cpu": f"{info['cpu']} x {info['cores']}", "gpu": info.get("gpu") or "none",
            "torch": torch.__version__, "load_average": load,
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


COLUMNS = (("pipeline", "pipeline", "{}"), ("setup s", "setup_sec", "{:.1f}"),
           ("data img/s", "data_images_per_sec", "{:.1f}"),
           ("train img/s", "train_images_per_sec", "{:.1f}"), ("epoch s", "epoch_sec", "{:.1f}"),
           ("test acc", "test_accuracy", "{:.3f}"), ("test bal acc", "test_balanced_accuracy", "{:.3f}"),
           ("TFLOP/s", "train_tflops", "{:.3f}"), ("of peak", "fraction_of_peak", "{:.1%}"))


def format_table(rows: list[dict[str, Any]], columns: tuple[tuple[str, str, str], ...] = COLUMNS) -> str:
    """``rows`` as right-aligned text columns: (title, row key, format) per column; "-" where missing."""
    cells = [[title for title, _, _ in columns]]
    cells += [[fmt.format(row[key]) if row.get(key) is not None else "-" for _, key, fmt in columns]
              for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(line, widths)) for line in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)
