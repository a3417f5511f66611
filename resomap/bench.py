"""Classic vs cached data pipeline, side by side: ``python -m resomap.bench model=... res=...``.

For each pipeline: setup time (decode-once cache build included), data-only throughput (one
training epoch of batches, augmented and normalised, on the training device, no model),
end-to-end training throughput and epoch time, test accuracy after the same epochs, and the
achieved FLOP rate. Beside them, the framework overhead: ResoMap's training rate (Lightning,
LitClassifier, its data module) over a bare PyTorch loop doing the same work on the same
cached tensors (``bench.overhead``). With ``bench.seed_scale=true`` the data is a synthetic
stand-in of the seed study's size and the 10-run study's time is projected from timed steps
of every model x resolution. ``gpu_check=true`` runs the GPU figures of docs/benchmarks.md in
one go (a CUDA device is required).

FLOP convention: fvcore counts multiply-adds (MACs; it calls one a "flop"); the table reports
standard FLOPs (2 per multiply-add, converted in resomap.measure.peak.training_tflops) and a
training step as 3 forward passes (forward + backward ~ 2 forwards).

The sections live in resomap/benchmarks/ (harness, pipelines, roofline, overhead, projection,
precision, gpu_check); this module is the Hydra entry point that runs the enabled ones in order
and writes ``bench.output``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig

import resomap  # noqa: F401  (registers the config resolvers)
from resomap.benchmarks.gpu_check import gpu_check
from resomap.benchmarks.harness import machine_facts, training_device
from resomap.benchmarks.overhead import overhead, print_overhead
from resomap.benchmarks.pipelines import compare_pipelines
from resomap.benchmarks.precision import compare_precisions, print_precisions
from resomap.benchmarks.projection import print_projection, project_study, use_seed_scale
from resomap.benchmarks.roofline import print_roofline, roofline
from resomap.cli import CONFIG_PATH, VERSION_BASE
from resomap.device import describe
from resomap.errors import user_errors
from resomap.io import write_json


def set_threads(cfg: DictConfig) -> None:
    """``bench.threads``: torch's intra-op threads for the whole bench (null: torch's default).

    On a CPU shared with other jobs, OpenMP threads that wait for a descheduled peer spin:
    measured here, a tiny_cnn step at 64 px took 12 ms on 1 thread and 420 ms on 2 threads
    while two other processes ran. One thread keeps comparisons stable on a busy machine.
    """
    if cfg.bench.get("threads"):
        torch.set_num_threads(int(cfg.bench.threads))


def run(cfg: DictConfig) -> dict[str, Any]:
    set_threads(cfg)
    if cfg.get("gpu_check"):
        return gpu_check(cfg)
    if cfg.bench.seed_scale:
        use_seed_scale(cfg)
    device = training_device(cfg)
    facts = {**machine_facts(), "device": str(device), "data": cfg.data.name,
             "threads": torch.get_num_threads()}
    print(f"\nResoMap bench on {describe(facts['machine'])}; device {device}, {facts['threads']} torch "
          f"thread(s), load average {facts['load_average']} (1, 5, 15 min), {facts['date']}")
    payload: dict[str, Any] = {**facts}
    if cfg.bench.roofline.enabled:
        payload["roofline"] = roofline(cfg, device)
        print_roofline(payload["roofline"]["peak"], payload["roofline"]["rows"])
    measured_peak = ((payload.get("roofline") or {}).get("peak") or {}).get("bfloat16", {}).get("tflops")
    peak = float(cfg.bench.peak_tflops) if cfg.bench.peak_tflops else measured_peak
    payload.update({"model": cfg.model.name, "res": int(cfg.res), "epochs": int(cfg.bench.epochs),
                    **compare_pipelines(cfg, peak)})
    if cfg.bench.overhead.enabled:
        payload["overhead"] = overhead(cfg, device)
        print_overhead(payload["overhead"])
    if cfg.bench.precision.enabled:
        payload["precision"] = compare_precisions(cfg)
        print_precisions(payload["precision"])
    if cfg.bench.seed_scale:
        payload["projection"] = projection = project_study(cfg)
        print_projection(projection)
    output = Path(cfg.bench.output)
    write_json(output, payload)
    print(f"\nWrote {output}")
    return payload


@hydra.main(version_base=VERSION_BASE, config_path=CONFIG_PATH, config_name="bench")
def main(cfg: DictConfig) -> None:
    from resomap.extras import extras

    extras(cfg)  # one line per log record, known warnings filtered, no advertisements
    with user_errors():
        run(cfg)


if __name__ == "__main__":
    from resomap.cli import start

    start(main)
