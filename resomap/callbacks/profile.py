"""Measures what a run costs: training throughput during fit, inference latency and memory after test.

The ``profiling`` section keeps the seed study's keys and meanings (forward-only time per
inference batch, ``throughput_samples_sec = batch_size / avg_time_sec``, GPU keys on CUDA only,
MiB; CPU memory in decimal MB) and adds the median, p95, batch-1 latency and training figures.
The ``complexity`` section holds FLOPs, parameters and activation memory.
"""

from __future__ import annotations

import logging
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch

from resomap.measure.complexity import analyse

log = logging.getLogger(__name__)

MIB = 2**20
MB = 1e6


def _check_count(name: str, value: int, minimum: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"callbacks.profile.{name}={value!r} is not valid: it must be an integer "
                         f">= {minimum} (e.g. callbacks.profile.{name}=3).")
    return value


def reset_peak_rss() -> None:
    """Reset the kernel's resident-memory high-water mark (Linux), so a peak belongs to one phase.

    Hydra's basic launcher runs every job of a sweep in one process: without a reset, the
    peak of an earlier job would be reported again. Where unsupported the peak is process-wide.
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_mb() -> float:
    """Peak resident memory of this process since the last reset, decimal MB (as the seed)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / MB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MB if sys.platform == "darwin" else peak * 1024 / MB


def time_forward(forward: Callable[[], Any], device: torch.device, warmup_runs: int,
                 timed_runs: int) -> list[float]:
    """Seconds of each of ``timed_runs`` calls of ``forward`` after ``warmup_runs`` untimed ones.

    On CUDA each call is timed with CUDA events and synchronised; elsewhere with perf_counter.
    """
    for _ in range(warmup_runs):
        forward()
    times = []
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        for _ in range(timed_runs):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            forward()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end) / 1000)
    else:
        for _ in range(timed_runs):
            start = time.perf_counter()
            forward()
            times.append(time.perf_counter() - start)
    return times


def latency_stats(times: list[float], batch_size: int) -> dict[str, float]:
    """Per-batch and per-image statistics of forward times, and the throughput they imply."""
    values = np.asarray(times, dtype=np.float64)
    per_batch = {"mean": values.mean(), "std": values.std(), "min": values.min(), "max": values.max(),
                 "p50": np.percentile(values, 50), "p95": np.percentile(values, 95)}
    stats: dict[str, float] = {"batch_size": batch_size}
    stats.update({f"{key}_sec": float(value) for key, value in per_batch.items()})
    stats.update({f"per_image_{key}_sec": float(value) / batch_size for key, value in per_batch.items()})
    stats["throughput_images_sec"] = batch_size / float(per_batch["mean"])
    stats["throughput_median_images_sec"] = batch_size / float(per_batch["p50"])
    return stats


def _scalars(prefix: str, section: dict[str, Any], out: dict[str, float]) -> dict[str, float]:
    """Numeric leaves of ``section`` as ``{prefix}_{path}`` metrics for the loggers."""
    for key, value in section.items():
        name = f"{prefix}_{key}"
        if isinstance(value, dict):
            _scalars(name, value, out)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def _batch_images(batch: Any) -> int:
    images = batch[0] if isinstance(batch, (list, tuple)) else batch
    return len(images)


class ProfileCallback(pl.Callback):
    """Training throughput during fit; latency, throughput, memory and complexity after test.

    Args:
        image_size: the run's resolution; inputs are random ``image_size`` squares.
        batch_size: the inference batch of the seed figures (``avg_time_sec`` is per batch).
        warmup_runs, timed_runs: untimed then timed forward passes per batch size.
        complexity: also count FLOPs, parameters and activation memory (fvcore).
    """

    def __init__(self, image_size: int, batch_size: int = 32, warmup_runs: int = 5,
                 timed_runs: int = 25, in_channels: int = 3, complexity: bool = True) -> None:
        self.image_size = _check_count("image_size", image_size)
        self.batch_size = _check_count("batch_size", batch_size)
        self.warmup_runs = _check_count("warmup_runs", warmup_runs, minimum=0)
        self.timed_runs = _check_count("timed_runs", timed_runs)
        self.in_channels = in_channels
        self.complexity = complexity
        self.epochs: list[dict[str, float]] = []
        self.training: dict[str, Any] = {}
        self.sections: dict[str, Any] | None = None
        self._fit_start = self._epoch_start = self._last_batch_end = 0.0
        self._epoch_images = 0

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.epochs, self.training, self.sections = [], {}, None
        reset_peak_rss()
        if pl_module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(pl_module.device)
        self._fit_start = time.perf_counter()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_images = 0
        self._epoch_start = self._last_batch_end = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        self._epoch_images += _batch_images(batch)
        # Validation runs before on_train_epoch_end: the epoch's training time ends here.
        if pl_module.device.type == "cuda" and batch_idx + 1 == trainer.num_training_batches:
            torch.cuda.synchronize(pl_module.device)
        self._last_batch_end = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        seconds = self._last_batch_end - self._epoch_start
        images = self._epoch_images * trainer.world_size
        self.epochs.append({"epoch": trainer.current_epoch, "images": images, "seconds": seconds,
                            "images_per_sec": images / seconds if seconds > 0 else None})

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        measured = [row["images_per_sec"] for row in self.epochs[1:] if row["images_per_sec"]]
        self.training = {
            "fit_wall_time_sec": time.perf_counter() - self._fit_start,
            "images_per_sec": float(np.mean(measured)) if measured else None,
            "epochs_measured": len(measured),
            "epoch_images_per_sec": [row["images_per_sec"] for row in self.epochs],
            "peak_cpu_memory_mb": peak_rss_mb(),
        }
        if pl_module.device.type == "cuda":
            self.training["gpu_memory_peak_mb"] = torch.cuda.max_memory_allocated(pl_module.device) / MIB
            self.training["gpu_memory_peak_reserved_mb"] = (
                torch.cuda.max_memory_reserved(pl_module.device) / MIB)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.sections = self.measure(trainer, pl_module)
        metrics: dict[str, float] = {}
        for name, prefix in (("profiling", "profile"), ("complexity", "complexity")):
            _scalars(prefix, self.sections.get(name, {}), metrics)
        profiling = self.sections["profiling"]
        # The seed study's names of its final tracked metrics.
        metrics.update({"inference_time_sec": profiling["avg_time_sec"],
                        "throughput_samples_sec": profiling["throughput_samples_sec"],
                        "peak_memory_mb": profiling["peak_cpu_memory_mb"]})
        if "gpu_memory_peak_mb" in profiling:
            metrics["gpu_memory_peak_mb"] = profiling["gpu_memory_peak_mb"]
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)

    def result_section(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        if self.sections is None:
            self.sections = self.measure(trainer, pl_module)
        return self.sections

    def measure(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        """Latency, throughput and memory of the trained model, in the run's precision."""
        device = pl_module.device
        channels_last = bool(getattr(pl_module, "channels_last", False))
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        was_training = pl_module.training
        pl_module.eval()
        reset_peak_rss()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        latency = {}
        with torch.inference_mode(), trainer.precision_plugin.forward_context():
            autocast = torch.is_autocast_enabled(device.type)
            autocast_dtype = torch.get_autocast_dtype(device.type) if autocast else None
            for name, batch_size in (("batch_1", 1), ("inference_batch", self.batch_size)):
                inputs = torch.randn(batch_size, self.in_channels, self.image_size, self.image_size,
                                     device=device).contiguous(memory_format=memory_format)
                times = time_forward(lambda inputs=inputs: pl_module(inputs), device,
                                     self.warmup_runs, self.timed_runs)
                latency[name] = latency_stats(times, batch_size)
        pl_module.train(was_training)
        main = latency["inference_batch"]
        profiling: dict[str, Any] = {
            "avg_time_sec": main["mean_sec"],
            "std_time_sec": main["std_sec"],
            "min_time_sec": main["min_sec"],
            "max_time_sec": main["max_sec"],
            "median_time_sec": main["p50_sec"],
            "p95_time_sec": main["p95_sec"],
            "throughput_samples_sec": main["throughput_images_sec"],
            "peak_cpu_memory_mb": peak_rss_mb(),
        }
        if device.type == "cuda":
            profiling.update({
                "gpu_memory_allocated_mb": torch.cuda.memory_allocated(device) / MIB,
                "gpu_memory_reserved_mb": torch.cuda.memory_reserved(device) / MIB,
                "gpu_memory_peak_mb": torch.cuda.max_memory_allocated(device) / MIB,
            })
        profiling.update({
            "batch_size": self.batch_size,
            "image_size": self.image_size,
            "warmup_runs": self.warmup_runs,
            "timed_runs": self.timed_runs,
            "precision": str(trainer.precision),
            "autocast_dtype": str(autocast_dtype).removeprefix("torch.") if autocast_dtype else None,
            "channels_last": channels_last,
            "device": device.type,
            "timer": "cuda_event" if device.type == "cuda" else "perf_counter",
            "latency": latency,
            "training": self.training,
            "notes": "forward pass only, eval mode, random input; *_time_sec are per inference batch "
                     "(batch_size images); std is the population std; GPU memory in MiB, "
                     "CPU memory in decimal MB (peak resident set during this measurement)",
        })
        sections = {"profiling": profiling}
        if self.complexity:
            net = getattr(pl_module, "net", pl_module)
            # fvcore traces with torch.jit, which cannot trace a torch.compile'd forward:
            # measure the same weights through the plain forward.
            compiled_call, net._compiled_call_impl = getattr(net, "_compiled_call_impl", None), None
            try:
                sections["complexity"] = analyse(net, self.image_size, self.in_channels).section()
            finally:
                net._compiled_call_impl = compiled_call
        return sections
