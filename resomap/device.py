"""The one answer to "is this CUDA?", and what follows from it: precision, device names, memory."""

from __future__ import annotations

import gc
import platform

import torch


def uses_cuda(accelerator: str = "auto") -> bool:
    """Whether a Lightning ``accelerator`` setting trains on a CUDA GPU on this machine."""
    accelerator = str(accelerator)
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


def torch_device(accelerator: str = "auto") -> torch.device:
    """The device a single-process run with ``accelerator`` uses."""
    return torch.device("cuda" if uses_cuda(accelerator) else "cpu")


def device_count(devices: object = "auto", accelerator: str = "auto") -> int:
    """Processes per node Lightning starts for ``trainer.devices`` (``auto``/-1 resolved here)."""
    if isinstance(devices, bool):
        return 1
    if isinstance(devices, int) and devices > 0:
        return devices
    if isinstance(devices, str) and devices.strip().isdigit():
        return int(devices)
    if isinstance(devices, str) and "," in devices:
        return len([item for item in devices.split(",") if item.strip()])
    if isinstance(devices, (list, tuple)) or type(devices).__name__ == "ListConfig":
        return len(devices)
    if uses_cuda(accelerator):
        return torch.cuda.device_count()
    return 1


def resolve_precision(precision: str, accelerator: str = "auto") -> str:
    """``16-mixed`` needs CUDA; elsewhere use ``bf16-mixed`` (what Lightning would pick,
    chosen here so the run records it and no warning is printed)."""
    precision = str(precision)
    if precision in ("16-mixed", "16") and not uses_cuda(accelerator):
        return "bf16-mixed"
    return precision


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model name from /proc/cpuinfo."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def free_accelerator_memory() -> None:
    """Release what a finished or failed attempt held, and reset the peak counters.

    Hydra's basic launcher runs every job of a sweep in one process: without this, a later
    job's peak-memory figure would include an earlier job's.
    """
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
