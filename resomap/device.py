"""The one answer to "is this CUDA?", and what follows from it: precision, device names, memory."""

from __future__ import annotations

import functools
import gc
import os
import platform
from pathlib import Path
from typing import Any

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


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bf16 dot-product instructions (AVX512-BF16 or AMX), which oneDNN's
    bf16 convolutions need to run at speed.

    Measured (docs/benchmarks.md, "bf16 or fp32 on the CPU"): a simple_cnn training step ran
    2.43x faster in bf16 than in fp32 on an AMD EPYC with AVX512-BF16, 1.04x on a Xeon with
    AVX512-BF16, and 9.8x *slower* on an AVX2-only AMD EPYC (Zen 3), where oneDNN falls back to
    reference bf16 kernels. torch reads the flags (cpuinfo), on every OS.
    """
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # a torch without the probes: keep bf16, Lightning's own CPU choice
        return True


def resolve_precision(precision: str, accelerator: str = "auto") -> str:
    """``16-mixed`` needs CUDA; on a CPU it runs as ``bf16-mixed`` where the CPU has bf16
    instructions, else as ``32-true`` (bf16 without them is several times slower than fp32).
    Chosen here so the run records the precision it ran and no warning is printed."""
    precision = str(precision)
    if precision in ("16-mixed", "16") and not uses_cuda(accelerator):
        return "bf16-mixed" if cpu_has_native_bf16() else "32-true"
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


# ---- the machine, named once -------------------------------------------------------------------

# CPU flags that decide how fast bf16/fp32 convolutions and matrix products run (oneDNN picks its
# kernels by them): AMX tiles, AVX-512 with bf16 dot products, AVX2.
CPU_FLAGS = ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f", "avx2")


def parse_cpuinfo(text: str) -> dict[str, Any]:
    """The CPU's model name, logical core count and flags of interest from ``/proc/cpuinfo`` text.

    Read, not guessed: the kind of CPU (with or without AMX, AVX512-BF16) changes bf16
    convolution speed by 1.6-1.7x between machines of the same core count.
    """
    names: list[str] = []
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name":
            names.append(value.strip())
        elif key == "flags" and not flags:
            flags = set(value.split())
    return {"cpu": names[0] if names else "", "cores": len(names),
            **{flag: flag in flags for flag in CPU_FLAGS}}


def cpu_kind(info: dict[str, Any]) -> str:
    """A short label of the CPU's matrix features: ``AMX-BF16``, ``AVX512-BF16``, ``AVX-512``,
    ``AVX2`` or ``no AVX2`` (the best one it has)."""
    for flag, label in (("amx_bf16", "AMX-BF16"), ("avx512_bf16", "AVX512-BF16"), ("avx512f", "AVX-512"),
                        ("avx2", "AVX2")):
        if info.get(flag):
            return label
    return "no AVX2"


def machine(cpuinfo: str | Path = "/proc/cpuinfo") -> dict[str, Any]:
    """The machine a figure was measured on: CPU model name, its matrix features (flags read from
    ``cpuinfo``), logical cores, GPU name (or None) and torch's version.

    Where ``/proc/cpuinfo`` does not exist (macOS, Windows) the CPU name comes from ``platform``
    and the flags are None (unknown), never False.
    """
    try:
        info = parse_cpuinfo(Path(cpuinfo).read_text())
    except OSError:
        info = {"cpu": "", "cores": 0, **{flag: None for flag in CPU_FLAGS}}
    info["cpu"] = info["cpu"] or platform.processor() or platform.machine()
    info["cores"] = info["cores"] or os.cpu_count() or 0
    info["cpu_kind"] = cpu_kind(info) if info.get("avx2") is not None else "unknown"
    info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    info["torch"] = torch.__version__
    info["torch_threads"] = torch.get_num_threads()
    return info


def describe(info: dict[str, Any]) -> str:
    """One line naming the machine, e.g. ``Intel(R) Xeon(R) Processor (AVX512-BF16, no AMX), 2 cores``."""
    features = info.get("cpu_kind", "unknown")
    if features not in ("AMX-BF16", "unknown"):
        features += ", no AMX"
    text = f"{info['cpu']} ({features}), {info['cores']} cores"
    return text + (f"; GPU {info['gpu']}" if info.get("gpu") else "")
