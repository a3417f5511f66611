"""Measures what a run costs: training throughput during fit, inference latency and memory after test.

The ``profiling`` section keeps the seed study's keys (forward-only time per inference batch,
``throughput_samples_sec = batch_size / avg_time_sec``, GPU keys on CUDA only, MiB; CPU memory
in decimal MB) and adds the median, p95, batch-1 latency and training figures. Memory figures
measure the model, not the process: ``gpu_memory_peak_mib`` leaves out the data cache and
whatever else was already on the GPU (recorded apart), ``cpu_memory_increase_mb`` is the rise
of resident memory over the process's baseline during the measured passes (docs/profiling.md).
The number of passes suits the measurement's noise (``"auto"``: 5 warm-up passes on CUDA, 1 on a
CPU, then timed passes until the mean is known to ``target_rse``, between ``min_timed_runs`` and
25 passes and within ``max_seconds``) and the section records what was measured, the machine
(:func:`resomap.device.machine`: CPU model and matrix features, GPU) and the ``seconds`` it took.
The ``complexity`` section holds multiply-adds (MACs), parameters and activation memory. The measuring itself
(passes, timing, memory) lives in resomap/measure/ (latency.py, memory.py); this module is the
Lightning callback that runs it at the right moments and shapes the sections.

Lightning's ``ThroughputMonitor`` is not used for the training figures: it logs windowed rates
under its own metric names, while the record keeps per-epoch images and seconds (the first epoch
left out of the mean) under the keys below.

Latency, memory and complexity depend on the model, resolution and configuration, not on the
seed: with ``seeds: [0]`` a run of another seed keeps its training figures and the machine and
skips the passes (``profiling.measured_on_seeds`` says so); the study averages what was measured.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch

from resomap.device import machine
from resomap.errors import ConfigError
from resomap.measure.complexity import analyse
from resomap.measure.latency import AutoStop, latency_stats, runs_for, time_forward
from resomap.measure.memory import MIB, RssIncrease, gpu_baseline, gpu_memory_figures, peak_rss_mb
from resomap.measure.seeds import check_seeds, measures_seed

log = logging.getLogger(__name__)

NOTES = ("forward pass only, eval mode, random input; *_time_sec are per inference batch "
         "(batch_size images); std is the population std; GPU memory in MiB: "
         "gpu_memory_peak_mib = model weights and buffers + the peak the measured passes "
         "added over gpu_memory_baseline_mib (data cache and other resident memory "
         "excluded); CPU memory in decimal MB: cpu_memory_increase_mb = peak resident "
         "set during the passes minus the resident set before them, peak_cpu_memory_mb "
         "= the process's peak resident set (baseline included)")


def _check_count(name: str, value: int | str | None, minimum: int = 1) -> int | str:
    if value is None or (isinstance(value, str) and value.lower() == "auto"):
        return "auto"
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"callbacks.profile.{name}={value!r} is not valid: it must be an integer "
                         f">= {minimum} or auto (e.g. callbacks.profile.{name}=3).")
    return value


def _scalars(prefix: str, section: dict[str, Any], out: dict[str, float]) -> dict[str, float]:
    """Numeric leaves of ``section`` as ``{prefix}_{path}`` metrics for the loggers."""
    for key, value in section.items():
        name = f"{prefix}_{key}"
        if isinstance(value, dict):
            _scalars(name, value, out)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def _seed_figures(main: dict[str, Any]) -> dict[str, float]:
    """The seed study's latency keys, from the inference batch's statistics."""
    return {
        "avg_time_sec": main["mean_sec"],
        "std_time_sec": main["std_sec"],
        "min_time_sec": main["min_sec"],
        "max_time_sec": main["max_sec"],
        "median_time_sec": main["p50_sec"],
        "p95_time_sec": main["p95_sec"],
        "throughput_samples_sec": main["throughput_images_sec"],
    }


def _batch_images(batch: Any) -> int:
    images = batch[0] if isinstance(batch, (list, tuple)) else batch
    return len(images)


def data_cache_bytes(trainer: pl.Trainer) -> int:
    """Bytes of cached data the trainer's data module keeps in accelerator memory (0 if none)."""
    datamodule = getattr(trainer, "datamodule", None)
    measure = getattr(datamodule, "device_cache_bytes", None)
    return int(measure()) if callable(measure) else 0


class ProfileCallback(pl.Callback):
    """Training throughput during fit; latency, throughput, memory and complexity after test.

    Args:
        image_size: the run's resolution; inputs are random ``image_size`` squares.
        batch_size: the inference batch of the seed figures (``avg_time_sec`` is per batch).
        warmup_runs, timed_runs: untimed then timed forward passes per batch size; ``"auto"``
            chooses by device (AUTO_RUNS) and, for ``timed_runs``, stops when the mean is known
            to ``target_rse`` (at least ``min_timed_runs`` passes, at most ``max_seconds`` of them).
        complexity: also count multiply-adds (MACs), parameters and activation memory (fvcore).
        run_seed, seeds: the run's seed, and the seeds whose runs measure latency, memory and
            complexity (None: every seed). Added seeds of a study need not pay again for figures
            that do not depend on the seed.
    """

    def __init__(self, image_size: int, batch_size: int = 32, warmup_runs: int | str = "auto",
                 timed_runs: int | str = "auto", in_channels: int = 3, complexity: bool = True,
                 run_seed: int = 0, seeds: list[int] | None = None, target_rse: float = 0.02,
                 min_timed_runs: int = 3, max_seconds: float = 5.0) -> None:
        self.image_size = _check_count("image_size", image_size)
        self.batch_size = _check_count("batch_size", batch_size)
        self.warmup_runs = _check_count("warmup_runs", warmup_runs, minimum=0)
        self.timed_runs = _check_count("timed_runs", timed_runs)
        self.in_channels = in_channels
        self.complexity = complexity
        self.run_seed = int(run_seed)
        self.seeds = check_seeds(seeds, "callbacks.profile.seeds")
        self.auto_stop = AutoStop(float(target_rse), int(_check_count("min_timed_runs", min_timed_runs)),
                                  float(max_seconds))
        self.epochs: list[dict[str, float]] = []
        self.training: dict[str, Any] = {}
        self.sections: dict[str, Any] | None = None
        self._fit_start = self._epoch_start = self._last_batch_end = 0.0
        self._epoch_images = 0
        self._fit_rss: RssIncrease | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.epochs, self.training, self.sections = [], {}, None
        self._fit_rss = RssIncrease()
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
            "cpu_memory_increase_mb": self._fit_rss.mb() if self._fit_rss else None,
        }
        if pl_module.device.type == "cuda":
            # The data cache stays resident through the fit: its bytes are in the peak.
            cache = data_cache_bytes(trainer)
            peak = torch.cuda.max_memory_allocated(pl_module.device)
            self.training.update({
                "gpu_memory_peak_mib": (peak - cache) / MIB,
                "gpu_memory_peak_process_mib": peak / MIB,
                "gpu_memory_peak_reserved_mib": torch.cuda.max_memory_reserved(pl_module.device) / MIB,
                "data_cache_gpu_mib": cache / MIB,
            })

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.sections = self.measure(trainer, pl_module)
        metrics: dict[str, float] = {}
        for name, prefix in (("profiling", "profile"), ("complexity", "complexity")):
            section = {k: v for k, v in self.sections.get(name, {}).items() if k != "machine"}
            _scalars(prefix, section, metrics)
        profiling = self.sections["profiling"]
        if "avg_time_sec" in profiling:
            # The seed study's names of its final tracked metrics.
            metrics.update({"inference_time_sec": profiling["avg_time_sec"],
                            "throughput_samples_sec": profiling["throughput_samples_sec"],
                            "peak_memory_mb": profiling["peak_cpu_memory_mb"]})
        if "gpu_memory_peak_mib" in profiling:
            metrics["gpu_memory_peak_mib"] = profiling["gpu_memory_peak_mib"]
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)

    def record_section(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        if self.sections is None:
            self.sections = self.measure(trainer, pl_module)
        return self.sections

    def measure(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        """Latency, throughput and memory of the trained model, in the run's precision; on a seed
        outside ``seeds``, only the training figures and the machine."""
        started = time.perf_counter()
        device = pl_module.device
        if not measures_seed(self.run_seed, self.seeds):
            return {"profiling": self._other_seed_section(trainer, device, started)}
        warmup_runs, timed_runs = runs_for(device, self.warmup_runs, self.timed_runs)
        channels_last = bool(getattr(pl_module, "channels_last", False))
        was_training = pl_module.training
        pl_module.eval()
        rss = RssIncrease()
        baseline = gpu_baseline(device)
        latency, autocast_dtype = self._time_passes(trainer, pl_module, warmup_runs, timed_runs,
                                                    channels_last)
        pl_module.train(was_training)
        profiling: dict[str, Any] = {**_seed_figures(latency["inference_batch"]),
                                     "peak_cpu_memory_mb": peak_rss_mb(), "cpu_memory_increase_mb": rss.mb()}
        if device.type == "cuda":
            profiling.update(gpu_memory_figures(pl_module, device, baseline, data_cache_bytes(trainer)))
        profiling.update(self._settings(trainer, device, warmup_runs, timed_runs, channels_last,
                                        autocast_dtype, latency))
        profiling.update(latency=latency, training=self.training, machine=machine(), notes=NOTES)
        sections = {"profiling": profiling}
        if self.complexity:
            sections["complexity"] = self._complexity(pl_module)
        profiling["seconds"] = time.perf_counter() - started
        return sections

    def _other_seed_section(self, trainer: pl.Trainer, device: torch.device,
                            started: float) -> dict[str, Any]:
        """The profiling section of a seed outside ``seeds``: training figures and the machine."""
        return {"training": self.training, "machine": machine(), "device": device.type,
                "precision": str(trainer.precision), "image_size": self.image_size,
                "measured_on_seeds": self.seeds,
                "notes": f"seed {self.run_seed}: latency, memory and complexity are "
                         f"measured on the runs of seeds {self.seeds} of the same "
                         "configuration",
                "seconds": time.perf_counter() - started}

    def _time_passes(self, trainer: pl.Trainer, pl_module: pl.LightningModule, warmup_runs: int,
                     timed_runs: int, channels_last: bool) -> tuple[dict[str, Any], torch.dtype | None]:
        """Latency statistics at batch 1 and the inference batch, in the trainer's precision
        context, and the autocast dtype that context ran in (None: no autocast)."""
        device = pl_module.device
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        latency = {}
        with torch.inference_mode(), trainer.precision_plugin.forward_context():
            autocast = torch.is_autocast_enabled(device.type)
            autocast_dtype = torch.get_autocast_dtype(device.type) if autocast else None
            for name, batch_size in (("batch_1", 1), ("inference_batch", self.batch_size)):
                inputs = torch.randn(batch_size, self.in_channels, self.image_size, self.image_size,
                                     device=device).contiguous(memory_format=memory_format)
                times = time_forward(lambda inputs=inputs: pl_module(inputs), device, warmup_runs,
                                     timed_runs, stop=self.auto_stop if self.timed_runs == "auto" else None)
                latency[name] = latency_stats(times, batch_size)
                del inputs
        return latency, autocast_dtype

    def _settings(self, trainer: pl.Trainer, device: torch.device, warmup_runs: int, timed_runs: int,
                  channels_last: bool, autocast_dtype: torch.dtype | None,
                  latency: dict[str, Any]) -> dict[str, Any]:
        """What was measured and how: batch sizes, passes and their rule, precision, timer."""
        return {
            "batch_size": self.batch_size,
            "batch_sizes": [1, self.batch_size],
            "image_size": self.image_size,
            "warmup_runs": warmup_runs,
            "timed_runs": {name: int(stats["runs"]) for name, stats in latency.items()},
            "timed_runs_rule": (f"auto: until the mean's relative standard error <= "
                                f"{self.auto_stop.target_rse}, "
                                f"{self.auto_stop.min_runs} to {timed_runs} passes, at most "
                                f"{self.auto_stop.max_seconds} s" if self.timed_runs == "auto"
                                else f"fixed: {timed_runs}"),
            "precision": str(trainer.precision),
            "autocast_dtype": str(autocast_dtype).removeprefix("torch.") if autocast_dtype else None,
            "channels_last": channels_last,
            "device": device.type,
            "timer": "cuda_event" if device.type == "cuda" else "perf_counter",
        }

    def _complexity(self, pl_module: pl.LightningModule) -> dict[str, Any]:
        """Multiply-adds (MACs), parameters and activation memory of the module's network (fvcore)."""
        net = getattr(pl_module, "net", pl_module)
        # fvcore traces with torch.jit, which cannot trace a torch.compile'd forward:
        # measure the same weights through the plain forward.
        compiled_call, net._compiled_call_impl = getattr(net, "_compiled_call_impl", None), None
        try:
            return analyse(net, self.image_size, self.in_channels).section()
        finally:
            net._compiled_call_impl = compiled_call
