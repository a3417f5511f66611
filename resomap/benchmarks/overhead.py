"""Framework overhead: ResoMap's training rate (Lightning, LitClassifier, its data module) over
a bare PyTorch loop doing the same work on the same cached tensors (``bench.overhead``), in
alternating rounds so that a drifting load falls on both alike.
"""

from __future__ import annotations

import logging
import statistics
import time
from typing import Any

import lightning.pytorch as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from resomap.benchmarks.harness import Clock, load_average, make_datamodule, sync, trainer_for, with_model
from resomap.callbacks.profile import ProfileCallback
from resomap.data import cache
from resomap.device import resolve_precision
from resomap.run.build import build_module

log = logging.getLogger(__name__)

AUTOCAST_DTYPES = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def bare_loop(cfg: DictConfig, split: cache.CachedSplit, augment: Any, num_classes: int,
              class_weights: torch.Tensor | None, device: torch.device,
              epochs: int) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds of each training epoch of a plain PyTorch loop: the run's network,
    optimiser, scheduler, loss, gradient clipping, autocast and augmentation, on ``split``
    (resident on ``device``), with no Lightning, metrics, logging or callbacks."""
    pl.seed_everything(cfg.seed)
    net = instantiate(cfg.model.net, num_classes=num_classes).to(device)
    channels_last = bool(cfg.channels_last)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    if cfg.model.get("compile", False):
        net.compile()
    optimizer = instantiate(cfg.optimizer)(net.parameters())
    batch_size = int(cfg.data.batch_size)
    n = len(split)
    steps = epochs * -(-n // batch_size)
    scheduler = instantiate(cfg.scheduler)(optimizer, total_steps=steps) if cfg.get("scheduler") else None
    loss_fn = torch.nn.CrossEntropyLoss(
        weight=class_weights.to(device) if class_weights is not None else None)
    precision = resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator)
    dtype = AUTOCAST_DTYPES.get(precision)
    scaler = torch.amp.GradScaler("cuda") if precision == "16-mixed" and device.type == "cuda" else None
    clip = cfg.trainer.get("gradient_clip_val")
    net.train()
    seconds, cpu_seconds = [], []
    for _ in range(epochs):
        started, started_cpu = sync(device), time.process_time()
        order = torch.randperm(n, device=device)
        for start in range(0, n, batch_size):
            index = order[start:start + batch_size]
            images, labels = augment(split.images[index]), split.labels[index]
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                loss = loss_fn(net(images).float(), labels)
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
            else:
                loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(net.parameters(), float(clip))
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            if scheduler is not None:
                scheduler.step()
        seconds.append(sync(device) - started)
        cpu_seconds.append(time.process_time() - started_cpu)
    return seconds, cpu_seconds


def resomap_loop(cfg: DictConfig, datamodule: Any, epochs: int) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds of each training epoch of ResoMap's own fit (Lightning,
    LitClassifier with its metrics, the data module, the profiling callback), validation off."""
    pl.seed_everything(cfg.seed)
    clock = Clock()
    profile = ProfileCallback(image_size=int(cfg.res), complexity=False)
    trainer = trainer_for(cfg, [clock, profile], max_epochs=epochs, min_epochs=epochs, limit_val_batches=0)
    trainer.fit(build_module(cfg, datamodule), datamodule=datamodule)
    return clock.train_seconds, clock.train_cpu_seconds


def overhead_threads(setting: Any, load: float | None, device: torch.device) -> int | None:
    """Torch threads for the overhead comparison: ``bench.overhead.threads`` when a number;
    under ``auto``, 1 on a CPU whose 1-minute load is above 1 (another process is running: two
    threads whose peer is descheduled spin, and rounds of the same loops then differ 30x), else
    None (torch's default)."""
    if setting is not None and str(setting).lower() != "auto":
        return int(setting)
    if device.type == "cpu" and load is not None and load > 1.0:
        return 1
    return None


def rounds_disagree(ratios: list[float], tolerance: float = 0.2) -> bool:
    """Whether the rounds' ratios spread by more than ``tolerance`` of their median
    ((max - min) / median): then the median is not a measurement of the code but of the load."""
    if len(ratios) < 2:
        return False
    middle = statistics.median(ratios)
    return middle <= 0 or (max(ratios) - min(ratios)) / middle > tolerance


def overhead(cfg: DictConfig, device: torch.device) -> dict[str, Any]:
    """Run :func:`measure_overhead` with the threads the load calls for (restored afterwards)."""
    load = load_average()
    threads = overhead_threads(cfg.bench.overhead.get("threads", "auto"), load, device)
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        result = measure_overhead(cfg, device)
    finally:
        torch.set_num_threads(before)
    ratios = [row["ratio"] for row in result["rounds"]]
    result.update(load_1min=load, load_1min_after=load_average(), threads=threads or before,
                  spread=(max(ratios) - min(ratios)) / statistics.median(ratios) if ratios else None,
                  rounds_disagree=rounds_disagree(ratios))
    return result


def measure_overhead(cfg: DictConfig, device: torch.device) -> dict[str, Any]:
    """ResoMap's training rate over a bare PyTorch loop's, same model, batch, precision and
    cached tensors on ``device`` (``data.device_cache=true``: the splits in device or process
    memory, augmented in the training process, as the bare loop does). Rounds alternate the two
    so drifting load affects both; the ratio is the median of the rounds' ratios. ``cpu_ratio``
    compares CPU time per image instead (the work each does, steadier on a shared machine;
    meaningful on a CPU, where everything runs in this process)."""
    spec = cfg.bench.overhead
    run_cfg = with_model(cfg, str(spec.model), int(spec.res), **dict(spec.get("set") or {}))
    datamodule = make_datamodule(run_cfg, "cached", device_cache="true")
    datamodule.prepare_data()
    datamodule.setup("fit")
    datamodule.target_device = device
    split = cache.resident(datamodule.cached["train"], device)
    weights = datamodule.class_weights()
    epochs, n = int(spec.epochs), len(split)
    rounds = []
    for index in range(int(spec.rounds)):
        bare, bare_cpu = bare_loop(run_cfg, split, datamodule.batch_augment, datamodule.num_classes,
                                   weights, device, epochs)
        ours, ours_cpu = resomap_loop(run_cfg, datamodule, epochs)
        row = {"bare_images_per_sec": n * (epochs - 1) / sum(bare[1:]),
               "resomap_images_per_sec": n * (epochs - 1) / sum(ours[1:]),
               "bare_epoch_seconds": bare, "resomap_epoch_seconds": ours,
               "bare_epoch_cpu_seconds": bare_cpu, "resomap_epoch_cpu_seconds": ours_cpu,
               "cpu_ratio": sum(bare_cpu[1:]) / sum(ours_cpu[1:])}
        row["ratio"] = row["resomap_images_per_sec"] / row["bare_images_per_sec"]
        log.info("overhead round %d: bare %.1f img/s, resomap %.1f img/s, ratio %.3f", index,
                 row["bare_images_per_sec"], row["resomap_images_per_sec"], row["ratio"])
        rounds.append(row)
    return {"model": str(spec.model), "res": int(spec.res), "device": str(device),
            "batch_size": datamodule.batch_size, "train_images": n, "epochs": epochs,
            "precision": resolve_precision(run_cfg.trainer.precision, run_cfg.trainer.accelerator),
            "compile": bool(run_cfg.model.get("compile", False)),
            "ratio": statistics.median(row["ratio"] for row in rounds),
            "cpu_ratio": statistics.median(row["cpu_ratio"] for row in rounds),
            "threads": torch.get_num_threads(),
            "bare_images_per_sec": statistics.median(row["bare_images_per_sec"] for row in rounds),
            "resomap_images_per_sec": statistics.median(row["resomap_images_per_sec"] for row in rounds),
            "rounds": rounds,
            "note": "training epochs after the first, validation off; images/s of whole epochs"}


def print_overhead(result: dict[str, Any]) -> None:
    load = result.get("load_1min")
    print(f"\nFramework overhead ({result['model']} at {result['res']} px, batch {result['batch_size']}, "
          f"{result['precision']}, {result['device']}, cached tensors in memory, "
          f"{result['threads']} torch thread(s), 1-minute load "
          f"{'?' if load is None else f'{load:.2f}'}): ResoMap "
          f"{result['resomap_images_per_sec']:.1f} img/s, bare PyTorch loop "
          f"{result['bare_images_per_sec']:.1f} img/s, ratio {result['ratio']:.3f}, CPU-time ratio "
          f"{result['cpu_ratio']:.3f} "
          f"(median of {len(result['rounds'])} alternating rounds: "
          + ", ".join(f"{row['ratio']:.3f}" for row in result["rounds"]) + ")")
    if result.get("rounds_disagree"):
        print(f"WARNING: the rounds disagree by {result['spread']:.0%} of their median (more than 20 %): "
              "the machine's load changed during the comparison, so this ratio measures the load, not "
              "ResoMap. Run it again on a quieter machine"
              + (", or with bench.overhead.threads=1." if result["threads"] > 1 else "; the CPU-time ratio, "
                 "which counts the work each loop did, is steadier under load."))
