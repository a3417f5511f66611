"""The GPU figures of docs/benchmarks.md in one command (``gpu_check=true``): the GPU's matmul
peak, the seed-scale study projected from a stand-in of the seed's image size, profiles of every
study model with the data cache resident, the framework overhead and step times per precision x
compile. Each step is timed; ``bench.json`` gets their figures and the ``timing``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, open_dict

from resomap.benchmarks.harness import (
    machine_facts,
    make_datamodule,
    trainer_for,
    training_device,
    with_model,
)
from resomap.benchmarks.overhead import overhead, print_overhead
from resomap.benchmarks.precision import step_variants
from resomap.benchmarks.projection import print_projection, project_study, use_seed_scale
from resomap.callbacks.profile import ProfileCallback
from resomap.errors import ResoMapError
from resomap.io import write_json
from resomap.measure.peak import measure_peak
from resomap.run.build import build_module

PEAK_DTYPES = ("bfloat16", "float16", "float32")


def profile_untrained(cfg: DictConfig, model: str, res: int) -> dict[str, Any]:
    """The ``profiling`` and ``complexity`` sections of ``model`` at ``res``, as a run records them
    after its test (weights do not change time or memory), with the data cache resident."""
    run_cfg = with_model(cfg, model, res)
    datamodule = make_datamodule(run_cfg, "cached")
    datamodule.prepare_data()
    datamodule.setup("test")
    profile = ProfileCallback(image_size=res, batch_size=int(cfg.bench.gpu_check.profile_batch_size))
    trainer = trainer_for(run_cfg, [profile], limit_test_batches=2)
    trainer.test(build_module(run_cfg, datamodule), datamodule=datamodule, verbose=False)
    sections = dict(profile.sections or {})
    sections["profiling"] = {key: value for key, value in sections.get("profiling", {}).items()
                             if key != "training"}
    return sections


def cuda_device(cfg: DictConfig, require_cuda: bool) -> torch.device:
    """The training device; a user error when it is not CUDA and ``require_cuda``."""
    device = training_device(cfg)
    if require_cuda and device.type != "cuda":
        raise ResoMapError(
            "gpu_check=true measures the GPU path and needs a CUDA GPU, but "
            f"trainer.accelerator={cfg.trainer.accelerator} gives {device} here "
            f"(torch.cuda.is_available() is {torch.cuda.is_available()}). Run it on a machine with "
            "a GPU; on a CPU, python -m resomap.bench gives the CPU figures.")
    return device


def peak_step(cfg: DictConfig, device: torch.device) -> dict[str, Any]:
    peak = measure_peak(device, dtypes=PEAK_DTYPES, sizes=[int(n) for n in cfg.bench.gpu_check.peak_sizes],
                        min_seconds=float(cfg.bench.roofline.peak_seconds))
    print("GPU matmul peak, measured: " + ", ".join(f"{name} {peak[name]['tflops']:.1f} TFLOP/s"
                                                    for name in PEAK_DTYPES))
    return peak


def projection_step(cfg: DictConfig) -> dict[str, Any]:
    counts = {key: int(value) for key, value in cfg.bench.gpu_check.counts.items()}
    projection = project_study(cfg, counts=counts)
    print_projection(projection, "Projected seed-scale study (counts " + ", ".join(
        f"{key} {value}" for key, value in counts.items()) + ")")
    return projection


def profiles_step(cfg: DictConfig) -> list[dict[str, Any]]:
    profiles = []
    for res in cfg.bench.gpu_check.profile_resolutions:
        for model in cfg.bench.study.models:
            sections = profile_untrained(cfg, str(model), int(res))
            profiles.append({"model": str(model), "res": int(res), **sections})
            figures = sections["profiling"]
            print(f"profile {model} @ {res}: {1000 * figures['median_time_sec']:.2f} ms per batch of "
                  f"{figures['batch_size']}, model GPU peak {figures.get('gpu_memory_peak_mib', 0):.0f} MiB "
                  f"(data cache {figures.get('data_cache_gpu_mib', 0):.0f} MiB left out)")
    return profiles


def overhead_step(cfg: DictConfig, device: torch.device) -> dict[str, Any]:
    with open_dict(cfg):
        cfg.bench.overhead.res = int(cfg.bench.gpu_check.overhead_res)
    result = overhead(cfg, device)
    print_overhead(result)
    return result


def variants_step(cfg: DictConfig) -> list[dict[str, Any]]:
    rows = step_variants(cfg)
    for row in rows:
        print(f"step {row['model']} @ {row['res']} {row['precision']:>10} compile={row['compile']!s:5}: "
              f"{1000 * row['train_step_sec']:.2f} ms ({row['images_per_sec']:.0f} img/s)")
    return rows


def gpu_check(cfg: DictConfig, require_cuda: bool = True) -> dict[str, Any]:
    """The GPU figures of docs/benchmarks.md in one command (``gpu_check=true``, sized for the
    issue's 8 minutes on one H100/H200; not yet run on a GPU): the seed-scale study projected
    from a stand-in of the seed's image size,
    profiles of every study model at 224 and 512 px with the data cache resident, the framework
    overhead at 224 px, and training step times under 16-mixed vs bf16-mixed and compile on vs
    off. Writes ``bench.json`` beside the run."""
    device = cuda_device(cfg, require_cuda)
    started = time.perf_counter()
    use_seed_scale(cfg, cfg.bench.gpu_check.data, name="synthetic_gpu_check")
    payload: dict[str, Any] = {**machine_facts(), "mode": "gpu_check", "device": str(device)}
    timings: dict[str, float] = {}
    steps: tuple[tuple[str, Callable[[], Any]], ...] = (
        ("peak", lambda: peak_step(cfg, device)), ("projection", lambda: projection_step(cfg)),
        ("profiles", lambda: profiles_step(cfg)), ("overhead", lambda: overhead_step(cfg, device)),
        ("variants", lambda: variants_step(cfg)))
    for key, step in steps:
        clock = time.perf_counter()
        payload[key] = step()
        timings[f"{key}_sec"] = time.perf_counter() - clock
    timings["total_sec"] = time.perf_counter() - started
    payload["timing"] = timings
    output = Path(cfg.bench.output)
    write_json(output, payload)
    print(f"\ngpu_check took {timings['total_sec'] / 60:.1f} min; wrote {output}")
    return payload
