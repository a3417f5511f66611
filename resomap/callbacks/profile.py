"""Measures what a run costs: training throughput during fit, inference latency and memory after test.

The ``profiling`` section keeps the seed study's keys (forward-only time per inference batch,
``throughput_samples_sec = batch_size / avg_time_sec``, GPU keys on CUDA only, MiB; CPU memory
in decimal MB) and adds the median, p95, batch-1 latency and training figures. Memory figures
measure the model, not the process: ``gpu_memory_peak_mb`` leaves out the data cache and
whatever else was already on the GPU (recorded apart), ``cpu_memory_increase_mb`` is the rise
of resident memory over the process's baseline during the measured passes (docs/profiling.md).
The number of passes suits the measurement's noise (``"auto"``: 5 warm-up passes on CUDA, 1 on a
CPU, then timed passes until the mean is known to ``target_rse``, between ``min_timed_runs`` and
25 passes and within ``max_seconds``) and the section records what was measured, the machine
(:func:`resomap.device.machine`: CPU model and matrix features, GPU) and the ``seconds`` it took.
The ``complexity`` section holds FLOPs, parameters and activation memory.

Latency, memory and complexity depend on the model, resolution and configuration, not on the
seed: with ``seeds: [0]`` a run of another seed keeps its training figures and the machine and
skips the passes (``profiling.measured_on_seeds`` says so); the study averages what was measured.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import math
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch

from resomap.device import machine
from resomap.measure.complexity import analyse

log = logging.getLogger(__name__)

MIB = 2**20
MB = 1e6
# (warm-up, most timed) forward passes per batch size under "auto": at most the seed's 5 + 25 where
# a pass takes milliseconds; on a CPU, where a batch of 32 at 512 px takes 1.5-3 s (simple_cnn, 2
# cores), 1 warm-up. Under "auto" the timed passes stop once the mean is known well enough
# (AutoStop), so a steady CPU measures 3-5 passes (docs/profiling.md).
AUTO_RUNS = {"cuda": (5, 25), "cpu": (1, 25)}


def _check_count(name: str, value: int | str | None, minimum: int = 1) -> int | str:
    if value is None or (isinstance(value, str) and value.lower() == "auto"):
        return "auto"
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"callbacks.profile.{name}={value!r} is not valid: it must be an integer "
                         f">= {minimum} or auto (e.g. callbacks.profile.{name}=3).")
    return value


def check_seeds(seeds: Any, key: str = "seeds") -> list[int] | None:
    """``seeds`` as a list of ints (None stays None); anything else is refused, naming ``key``."""
    if seeds is None:
        return None
    values = list(seeds) if isinstance(seeds, (list, tuple)) or type(seeds).__name__ == "ListConfig" else None
    if values is None or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise ValueError(f"{key}={seeds!r} is not valid: a list of integer seeds whose runs pay this "
                         f"once-per-configuration cost (e.g. {key}=[0]), or null for every seed.")
    return [int(v) for v in values]


def measures_seed(seed: int, seeds: list[int] | None) -> bool:
    """Whether a run of ``seed`` pays the once-per-configuration costs (``seeds`` None: every run)."""
    return seeds is None or int(seed) in seeds


def runs_for(device: torch.device, warmup_runs: int | str, timed_runs: int | str) -> tuple[int, int]:
    """Warm-up and timed passes, ``"auto"`` resolved for ``device``'s type."""
    auto = AUTO_RUNS.get(device.type, AUTO_RUNS["cpu"])
    return (auto[0] if warmup_runs == "auto" else int(warmup_runs),
            auto[1] if timed_runs == "auto" else int(timed_runs))


def reset_peak_rss() -> None:
    """Reset the kernel's resident-memory high-water mark (Linux), so a peak belongs to one phase.

    Hydra's basic launcher runs every job of a sweep in one process: without a reset, the
    peak of an earlier job would be reported again. Where unsupported the peak is process-wide.
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def current_rss_mb() -> float | None:
    """Resident memory of this process now (Linux), decimal MB; None where unknown."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024 / MB
    except OSError:
        pass
    return None


def release_freed_memory() -> None:
    """Return memory freed by earlier phases to the OS (glibc's ``malloc_trim``; Linux).

    Without it, what a phase allocates can reuse pages an earlier phase freed but the C
    library kept resident, and its rise of resident memory would read as nearly zero.
    """
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class RssIncrease:
    """Rise of resident memory over the process's baseline during a phase (Linux).

    Frees what earlier phases left, resets the high-water mark, takes the current resident
    set as the baseline, and reports ``peak - baseline`` at the end: what the phase added
    (its tensors' pages), not what the process held before (the Python runtime, libraries,
    data caches of earlier jobs). None where the mark cannot be reset or read.
    """

    def __init__(self) -> None:
        release_freed_memory()
        reset_peak_rss()
        self.baseline = current_rss_mb()
        peak = _vm_hwm_mb()
        # The reset worked if the high-water mark now equals the resident set (within 1 MB).
        self.valid = self.baseline is not None and peak is not None and peak <= self.baseline + 1.0

    def mb(self) -> float | None:
        peak = _vm_hwm_mb()
        if not self.valid or peak is None or self.baseline is None:
            return None
        return max(0.0, peak - self.baseline)


def _vm_hwm_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / MB
    except OSError:
        pass
    return None


def peak_rss_mb() -> float:
    """Peak resident memory of this process since the last reset, decimal MB (as the seed)."""
    peak_mb = _vm_hwm_mb()
    if peak_mb is not None:
        return peak_mb
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MB if sys.platform == "darwin" else peak * 1024 / MB


def relative_standard_error(times: list[float]) -> float:
    """Standard error of the mean over the mean (inf for fewer than 2 values)."""
    if len(times) < 2:
        return math.inf
    values = np.asarray(times, dtype=np.float64)
    return float(values.std(ddof=1) / math.sqrt(len(values)) / values.mean())


class AutoStop:
    """Stop timing once the mean is known to ``target_rse`` (relative standard error), after at
    least ``min_runs`` passes, or once ``max_seconds`` of timed passes are spent.

    Why: a fixed count is either wasted (a steady 1.5 s pass measured 25 times) or too few (a
    noisy millisecond pass); the standard error says when more passes stop changing the figure.
    """

    def __init__(self, target_rse: float = 0.02, min_runs: int = 3, max_seconds: float = 10.0) -> None:
        self.target_rse, self.min_runs, self.max_seconds = target_rse, min_runs, max_seconds

    def __call__(self, times: list[float]) -> bool:
        if len(times) < self.min_runs:
            return False
        return sum(times) >= self.max_seconds or relative_standard_error(times) <= self.target_rse


def time_forward(forward: Callable[[], Any], device: torch.device, warmup_runs: int,
                 timed_runs: int, stop: Callable[[list[float]], bool] | None = None) -> list[float]:
    """Seconds of each of at most ``timed_runs`` calls of ``forward`` after ``warmup_runs`` untimed
    ones; ``stop(times)`` ends the timed passes early when it returns True.

    On CUDA each call is timed with CUDA events and synchronised; elsewhere with perf_counter.
    """
    for _ in range(warmup_runs):
        forward()
    times: list[float] = []
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    for _ in range(timed_runs):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            forward()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end) / 1000)
        else:
            start = time.perf_counter()
            forward()
            times.append(time.perf_counter() - start)
        if stop is not None and stop(times):
            break
    return times


def latency_stats(times: list[float], batch_size: int) -> dict[str, float]:
    """Per-batch and per-image statistics of forward times, and the throughput they imply."""
    values = np.asarray(times, dtype=np.float64)
    per_batch = {"mean": values.mean(), "std": values.std(), "min": values.min(), "max": values.max(),
                 "p50": np.percentile(values, 50), "p95": np.percentile(values, 95)}
    stats: dict[str, float] = {"batch_size": batch_size}
    stats.update({f"{key}_sec": float(value) for key, value in per_batch.items()})
    stats.update({f"per_image_{key}_sec": float(value) / batch_size for key, value in per_batch.items()})
    stats["runs"] = len(values)
    rse = relative_standard_error(list(values))
    stats["relative_standard_error"] = rse if math.isfinite(rse) else None
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


def data_cache_bytes(trainer: pl.Trainer) -> int:
    """Bytes of cached data the trainer's data module keeps in accelerator memory (0 if none)."""
    datamodule = getattr(trainer, "datamodule", None)
    measure = getattr(datamodule, "device_cache_bytes", None)
    return int(measure()) if callable(measure) else 0


def model_bytes(module: torch.nn.Module) -> int:
    """Bytes of the module's parameters and buffers."""
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


class ProfileCallback(pl.Callback):
    """Training throughput during fit; latency, throughput, memory and complexity after test.

    Args:
        image_size: the run's resolution; inputs are random ``image_size`` squares.
        batch_size: the inference batch of the seed figures (``avg_time_sec`` is per batch).
        warmup_runs, timed_runs: untimed then timed forward passes per batch size; ``"auto"``
            chooses by device (AUTO_RUNS) and, for ``timed_runs``, stops when the mean is known
            to ``target_rse`` (at least ``min_timed_runs`` passes, at most ``max_seconds`` of them).
        complexity: also count FLOPs, parameters and activation memory (fvcore).
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
                "gpu_memory_peak_mb": (peak - cache) / MIB,
                "gpu_memory_peak_process_mb": peak / MIB,
                "gpu_memory_peak_reserved_mb": torch.cuda.max_memory_reserved(pl_module.device) / MIB,
                "data_cache_gpu_mb": cache / MIB,
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
        if "gpu_memory_peak_mb" in profiling:
            metrics["gpu_memory_peak_mb"] = profiling["gpu_memory_peak_mb"]
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)

    def result_section(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        if self.sections is None:
            self.sections = self.measure(trainer, pl_module)
        return self.sections

    def measure(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        """Latency, throughput and memory of the trained model, in the run's precision; on a seed
        outside ``seeds``, only the training figures and the machine."""
        started = time.perf_counter()
        device = pl_module.device
        if not measures_seed(self.run_seed, self.seeds):
            return {"profiling": {"training": self.training, "machine": machine(), "device": device.type,
                                  "precision": str(trainer.precision), "image_size": self.image_size,
                                  "measured_on_seeds": self.seeds,
                                  "notes": f"seed {self.run_seed}: latency, memory and complexity are "
                                           f"measured on the runs of seeds {self.seeds} of the same "
                                           "configuration",
                                  "seconds": time.perf_counter() - started}}
        warmup_runs, timed_runs = runs_for(device, self.warmup_runs, self.timed_runs)
        channels_last = bool(getattr(pl_module, "channels_last", False))
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        was_training = pl_module.training
        pl_module.eval()
        rss = RssIncrease()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            gpu_baseline = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
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
            "cpu_memory_increase_mb": rss.mb(),
        }
        if device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(device)
            weights = model_bytes(pl_module)
            profiling.update({
                # The model's own: weights and buffers + what the forward passes added on top
                # of the memory in use before them (inputs, activations, workspaces).
                "gpu_memory_peak_mb": (weights + peak - gpu_baseline) / MIB,
                "gpu_memory_model_weights_mb": weights / MIB,
                "gpu_memory_baseline_mb": gpu_baseline / MIB,
                "gpu_memory_peak_process_mb": peak / MIB,
                "data_cache_gpu_mb": data_cache_bytes(trainer) / MIB,
                "gpu_memory_allocated_mb": torch.cuda.memory_allocated(device) / MIB,
                "gpu_memory_reserved_mb": torch.cuda.memory_reserved(device) / MIB,
            })
        profiling.update({
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
            "latency": latency,
            "training": self.training,
            "machine": machine(),
            "notes": "forward pass only, eval mode, random input; *_time_sec are per inference batch "
                     "(batch_size images); std is the population std; GPU memory in MiB: "
                     "gpu_memory_peak_mb = model weights and buffers + the peak the measured passes "
                     "added over gpu_memory_baseline_mb (data cache and other resident memory "
                     "excluded); CPU memory in decimal MB: cpu_memory_increase_mb = peak resident "
                     "set during the passes minus the resident set before them, peak_cpu_memory_mb "
                     "= the process's peak resident set (baseline included)",
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
        profiling["seconds"] = time.perf_counter() - started
        return sections
