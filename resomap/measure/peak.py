"""The machine's own arithmetic peak, and a training configuration's place under it (roofline).

A figure such as "0.11 TFLOP/s" means little without the machine's ceiling. The ceiling is
measured, not taken from a data sheet: a dense matrix product at a size that saturates the
cores (the rate stops growing with size), in bf16 and in fp32, in this process, with the thread
count the training uses. A training configuration is then reported as a fraction of the bf16
peak (what bf16-mixed training can at most reach); convolutions with small channel counts,
batch norm, pooling and the optimiser are memory-bound, so a small CNN sits well below 1.

FLOP convention: 2 FLOPs per multiply-add (the matmul's ``2 n^3``); fvcore's counts (one per
multiply-add) are doubled before comparison, and a training image costs 3 forward passes
(forward, then backward about twice the forward).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

import torch

TRAIN_FORWARDS = 3
SIZES = (512, 1024, 2048, 4096)
# The peak is reached once doubling the size gains less than this.
SATURATED = 1.05


def matmul_flops(n: int) -> float:
    """FLOPs of one ``n x n`` by ``n x n`` matrix product (2 per multiply-add)."""
    return 2.0 * n ** 3


def tflops(flops: float, seconds: float) -> float:
    """TFLOP/s of ``flops`` done in ``seconds``."""
    if seconds <= 0:
        raise ValueError(f"seconds must be positive, got {seconds}")
    return flops / seconds / 1e12


def training_tflops(forward_mult_adds: float, images_per_sec: float,
                    forwards_per_image: int = TRAIN_FORWARDS) -> float:
    """Achieved TFLOP/s of training at ``images_per_sec`` for a network whose forward pass costs
    ``forward_mult_adds`` multiply-adds per image (fvcore's count, in MACs)."""
    # MACs -> FLOPs: 2 FLOPs per multiply-add.
    return 2.0 * forward_mult_adds * forwards_per_image * images_per_sec / 1e12


def fraction_of_peak(achieved_tflops: float, peak_tflops: float | None) -> float | None:
    """Roofline fraction: the achieved rate over the machine's measured peak (None without one)."""
    if not peak_tflops or peak_tflops <= 0:
        return None
    return achieved_tflops / peak_tflops


def _rate(n: int, dtype: torch.dtype, device: torch.device, min_seconds: float) -> float:
    """Median TFLOP/s of repeated ``n x n`` products, after one untimed product."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    torch.mm(a, b)
    rates = []
    deadline = time.perf_counter() + min_seconds
    while len(rates) < 3 or time.perf_counter() < deadline:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        torch.mm(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        rates.append(tflops(matmul_flops(n), time.perf_counter() - started))
        if len(rates) >= 50:
            break
    return statistics.median(rates)


def saturate(rate_at: Any, sizes: Sequence[int] = SIZES) -> tuple[float, int, dict[int, float]]:
    """Grow the size until the rate stops growing by ``SATURATED``; ``rate_at(n)`` gives TFLOP/s.

    Returns the best rate, its size and every rate measured.
    """
    rates: dict[int, float] = {}
    for n in sizes:
        rates[n] = rate_at(n)
        if len(rates) >= 2 and rates[n] < SATURATED * max(v for k, v in rates.items() if k != n):
            break
    best = max(rates, key=rates.get)
    return rates[best], best, rates


def measure_peak(device: torch.device | str = "cpu", dtypes: Sequence[str] = ("bfloat16", "float32"),
                 sizes: Sequence[int] = SIZES, min_seconds: float = 0.5) -> dict[str, Any]:
    """Measured matmul peak of ``device`` per dtype: ``{"bfloat16": {"tflops", "size", "rates"}, ...}``."""
    device = torch.device(device)
    found: dict[str, Any] = {"device": str(device), "threads": torch.get_num_threads(),
                             "convention": "2 FLOPs per multiply-add; median of timed n x n products"}
    with torch.inference_mode():
        for name in dtypes:
            dtype = getattr(torch, name)
            rate, size, rates = saturate(lambda n, dtype=dtype: _rate(n, dtype, device, min_seconds), sizes)
            found[name] = {"tflops": rate, "size": size, "rates": {str(k): v for k, v in rates.items()}}
    return found
