"""Classic vs cached data pipeline, one table row each: setup time (decode-once cache build
included), data-only throughput, training throughput and epoch time, test accuracy after the
same epochs, and the achieved FLOP rate against the machine's peak.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import lightning.pytorch as pl
import torch
from omegaconf import DictConfig

from resomap.benchmarks.harness import (
    Clock,
    format_table,
    forward_macs,
    make_datamodule,
    steady,
    sync,
    trainer_for,
    training_device,
)
from resomap.measure.peak import fraction_of_peak, training_tflops
from resomap.run.build import build_module

log = logging.getLogger(__name__)



def data_throughput(datamodule: Any, device: torch.device) -> float:
    """Training images per second through the loader, on to ``device``, augmented and
    normalised as for training (the data module's own ``prepare_batch``), no model: the second
    epoch of one loader, so starting its worker processes is not counted (training reuses
    them: persistent workers)."""
    datamodule.target_device = device
    loader = datamodule.train_dataloader()
    for _ in range(2):  # the first epoch starts the workers
        images_seen = 0
        started = sync(device)
        for images, labels in loader:
            batch = (images.to(device, non_blocking=True), labels.to(device, non_blocking=True))
            images, labels = datamodule.prepare_batch(batch, training=True)
            images_seen += len(labels)
        seconds = sync(device) - started
    return images_seen / seconds


def fit_and_test(cfg: DictConfig, datamodule: Any, epochs: int) -> dict[str, Any]:
    pl.seed_everything(cfg.seed, workers=True)
    module = build_module(cfg, datamodule)
    clock = Clock()
    trainer = trainer_for(cfg, [clock], max_epochs=epochs, min_epochs=epochs)
    trainer.fit(module, datamodule=datamodule)
    tested = trainer.test(module, datamodule=datamodule, verbose=False)[0]
    n_train = len(datamodule.datasets["train"])
    return {
        "train_images_per_sec": n_train / steady(clock.train_seconds),
        "epoch_sec": steady(clock.epoch_seconds),
        "epoch_seconds": clock.epoch_seconds,
        "train_seconds": clock.train_seconds,
        "test_accuracy": float(tested["test_accuracy"]),
        "test_balanced_accuracy": float(tested["test_balanced_accuracy"]),
        "compile": module.compile_report(),
    }


def bench_pipeline(cfg: DictConfig, pipeline: str) -> dict[str, Any]:
    """Every figure of one table row."""
    started = time.perf_counter()
    datamodule = make_datamodule(cfg, pipeline)
    datamodule.prepare_data()
    datamodule.setup("fit")
    row: dict[str, Any] = {"pipeline": pipeline, "setup_sec": time.perf_counter() - started,
                           "num_classes": datamodule.num_classes}
    log.info("%s: setup %.1f s; timing the data path", pipeline, row["setup_sec"])
    row["data_images_per_sec"] = data_throughput(datamodule, training_device(cfg))
    log.info("%s: %.1f img/s data only; training %d epoch(s)", pipeline, row["data_images_per_sec"],
             cfg.bench.epochs)
    row.update(fit_and_test(cfg, datamodule, int(cfg.bench.epochs)))
    return row


def compare_pipelines(cfg: DictConfig, peak: float | None) -> dict[str, Any]:
    """The table of ``bench.pipelines`` (printed) and, with both pipelines, cached over classic:
    the payload's ``forward_gmacs`` (fvcore), ``rows`` and ``speedup``."""
    rows = [bench_pipeline(cfg, pipeline) for pipeline in cfg.bench.pipelines]
    macs = forward_macs(cfg, rows[0]["num_classes"]) if rows else 0.0
    for row in rows:
        # training_tflops converts: 2 FLOPs per multiply-add, 3 forwards per training image.
        row["train_tflops"] = training_tflops(macs, row["train_images_per_sec"])
        row["fraction_of_peak"] = fraction_of_peak(row["train_tflops"], peak)
    found: dict[str, Any] = {"forward_gmacs": macs / 1e9, "rows": rows}
    if rows:
        print(f"\nData pipelines: {cfg.model.name} at {cfg.res} px, {cfg.bench.epochs} epoch(s), data "
              f"{cfg.data.name}")
        print(f"forward {macs / 1e9:.3f} GMACs/image (fvcore multiply-adds); TFLOP/s below count "
              f"2 FLOPs per multiply-add and 3 forwards per training image\n")
        print(format_table(rows))
    by_name = {row["pipeline"]: row for row in rows}
    if {"classic", "cached"} <= by_name.keys():
        speedups = {key: by_name["cached"][key] / by_name["classic"][key]
                    for key in ("data_images_per_sec", "train_images_per_sec")}
        found["speedup"] = speedups
        print(f"\ncached / classic: data {speedups['data_images_per_sec']:.2f}x, "
              f"training {speedups['train_images_per_sec']:.2f}x")
    return found
