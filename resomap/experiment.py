"""One run of the study: build the pieces from the config, train, test, export."""

from __future__ import annotations

import gc
import logging
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from resomap import results
from resomap.callbacks.export import ResultExport
from resomap.config import config_fingerprint
from resomap.data.datamodule import dataset_fingerprint
from resomap.module import LitClassifier

log = logging.getLogger(__name__)

OBJECTIVE = "test_balanced_accuracy"


def resolve_precision(precision: str, accelerator: str) -> str:
    """``16-mixed`` needs CUDA; elsewhere use ``bf16-mixed`` (what Lightning would pick,
    chosen here so the run records it and no warning is printed)."""
    precision = str(precision)
    on_cuda = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if precision in ("16-mixed", "16") and not on_cuda:
        return "bf16-mixed"
    return precision


def find_completed(results_dir: str, run_name: str, fingerprint: str) -> dict[str, Any] | None:
    """The local result of an equivalent finished run, if one exists."""
    path = results.result_path(results_dir, run_name)
    if not path.is_file():
        return None
    try:
        payload = results.read_result(path)
    except results.InvalidResult:
        return None
    return payload if payload.get("config_fingerprint") == fingerprint else None


def _clear_stale_checkpoints(checkpoint_dir: Path) -> None:
    """A fresh run must not leave an older run's last.ckpt for a later ``ckpt_path=last``."""
    for name in ("last.ckpt", "best.ckpt"):
        (checkpoint_dir / name).unlink(missing_ok=True)


def build_trainer(cfg: DictConfig, callbacks: list[pl.Callback], loggers: list[Any]) -> pl.Trainer:
    precision = resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator)
    return instantiate(cfg.trainer, precision=precision, callbacks=callbacks,
                       logger=loggers or False)


def run(cfg: DictConfig) -> float | None:
    """Train and test one model at one resolution; return the test balanced accuracy."""
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    data_fingerprint = dataset_fingerprint(datamodule.root)
    fingerprint = config_fingerprint(cfg, data_fingerprint)
    results_dir = cfg.paths.results_dir

    if cfg.skip_completed and (done := find_completed(results_dir, cfg.run_name, fingerprint)):
        log.info("Skipping %s: finished with the same config (%s)", cfg.run_name,
                 results.result_path(results_dir, cfg.run_name))
        return done["test_metrics"].get("balanced_accuracy")

    checkpoint_dir = Path(cfg.run_checkpoint_dir)
    if cfg.ckpt_path is None:
        _clear_stale_checkpoints(checkpoint_dir)

    weights = datamodule.class_weights()
    module = LitClassifier(
        net=instantiate(cfg.model.net, num_classes=datamodule.num_classes),
        num_classes=datamodule.num_classes,
        class_names=datamodule.classes,
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
        class_weights=weights.tolist() if weights is not None else None,
        channels_last=cfg.channels_last,
        run_config=OmegaConf.to_container(cfg, resolve=True),
    )
    callbacks = [instantiate(node) for node in (cfg.get("callbacks") or {}).values()]
    # The exporter reads what the other callbacks measured, so it goes last.
    callbacks.sort(key=lambda callback: isinstance(callback, ResultExport))
    exporter = next((c for c in callbacks if isinstance(c, ResultExport)), None)
    if exporter is not None:
        exporter.add_section("config_fingerprint", fingerprint)
        exporter.add_section("data", {"name": datamodule.name, "root": str(datamodule.root),
                                      "fingerprint": data_fingerprint,
                                      "class_counts": {split: datamodule.class_counts(split)
                                                       for split in ("train", "val", "test")}})
    loggers = [instantiate(node) for node in (cfg.get("logger") or {}).values()]
    trainer = build_trainer(cfg, callbacks, loggers)

    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        trainer.test(module, datamodule=datamodule, ckpt_path=best or None)
        return float(trainer.callback_metrics[OBJECTIVE])
    finally:
        # Hydra's basic launcher runs every job of a sweep in this process.
        del trainer, module, datamodule
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
