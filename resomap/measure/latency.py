"""Timing forward passes: warm-up and timed passes per device, a stop rule for when the mean is
known well enough, and the per-batch and per-image statistics of the times.

Why not ``torch.utils.benchmark.Timer``: its measurements aggregate blocks of calls and its
adaptive rule stops on its own criterion, while the record keeps every pass's time (CUDA events
on a GPU), the number of passes and their relative standard error.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

# (warm-up, most timed) forward passes per batch size under "auto": at most the seed's 5 + 25 where
# a pass takes milliseconds; on a CPU, where a batch of 32 at 512 px takes 1.5-3 s (simple_cnn, 2
# cores), 1 warm-up. Under "auto" the timed passes stop once the mean is known well enough
# (AutoStop), so a steady CPU measures 3-5 passes (docs/profiling.md).
AUTO_RUNS = {"cuda": (5, 25), "cpu": (1, 25)}


def runs_for(device: torch.device, warmup_runs: int | str, timed_runs: int | str) -> tuple[int, int]:
    """Warm-up and timed passes, ``"auto"`` resolved for ``device``'s type."""
    auto = AUTO_RUNS.get(device.type, AUTO_RUNS["cpu"])
    return (auto[0] if warmup_runs == "auto" else int(warmup_runs),
            auto[1] if timed_runs == "auto" else int(timed_runs))


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
