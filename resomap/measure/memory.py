"""Memory of one measured phase: the rise of this process's resident memory over its baseline
(Linux ``/proc``), its peak, the model's own bytes and its GPU peak over what was resident
before. Figures measure the model, not the process (docs/profiling.md); CPU memory in decimal
MB, GPU memory in MiB.
"""

from __future__ import annotations

import ctypes
import gc
import resource
import sys
from pathlib import Path
from typing import Any

import torch

MIB = 2**20
MB = 1e6


def reset_peak_rss() -> None:
    """Reset the kernel's resident-memory high-water mark (Linux), so a peak belongs to one phase.

    Hydra's basic launcher runs every job of a sweep in one process: without a reset, the
    peak of an earlier job would be reported again. Where unsupported the peak is process-wide.
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _status_mb(field: str) -> float | None:
    """``field`` (``VmRSS``, ``VmHWM``) of /proc/self/status in decimal MB; None where unknown."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024 / MB
    except OSError:
        pass
    return None


def current_rss_mb() -> float | None:
    """Resident memory of this process now (Linux), decimal MB; None where unknown."""
    return _status_mb("VmRSS")


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
    return _status_mb("VmHWM")


def peak_rss_mb() -> float:
    """Peak resident memory of this process since the last reset, decimal MB (as the seed)."""
    peak_mb = _vm_hwm_mb()
    if peak_mb is not None:
        return peak_mb
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MB if sys.platform == "darwin" else peak * 1024 / MB


def model_bytes(module: torch.nn.Module) -> int:
    """Bytes of the module's parameters and buffers."""
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


def gpu_baseline(device: torch.device) -> int:
    """Bytes allocated on ``device`` now, its peak statistics reset (CUDA; 0 elsewhere)."""
    if device.type != "cuda":
        return 0
    torch.cuda.synchronize(device)
    baseline = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    return baseline


def gpu_memory_figures(module: torch.nn.Module, device: torch.device, baseline: int,
                       data_cache: int) -> dict[str, Any]:
    """GPU memory of passes measured since :func:`gpu_baseline` returned ``baseline``, MiB."""
    peak = torch.cuda.max_memory_allocated(device)
    weights = model_bytes(module)
    return {
        # The model's own: weights and buffers + what the forward passes added on top
        # of the memory in use before them (inputs, activations, workspaces).
        "gpu_memory_peak_mib": (weights + peak - baseline) / MIB,
        "gpu_memory_model_weights_mib": weights / MIB,
        "gpu_memory_baseline_mib": baseline / MIB,
        "gpu_memory_peak_process_mib": peak / MIB,
        "data_cache_gpu_mib": data_cache / MIB,
        "gpu_memory_allocated_mib": torch.cuda.memory_allocated(device) / MIB,
        "gpu_memory_reserved_mib": torch.cuda.memory_reserved(device) / MIB,
    }
