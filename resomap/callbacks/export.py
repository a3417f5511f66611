"""Writes a finished run's result JSON and test predictions (rank 0 only)."""

from __future__ import annotations

import datetime as dt
import logging
import platform
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch

from resomap.device import device_name
from resomap.io import write_json
from resomap.run import record as results

log = logging.getLogger(__name__)

LIBRARIES = ("torch", "torchvision", "lightning", "torchmetrics", "hydra-core", "mlflow", "fvcore",
             "captum", "resomap")


def library_versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found



def _best_epoch(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    scored = [row for row in history if row.get("val_balanced_accuracy") is not None]
    return max(scored, key=lambda row: row["val_balanced_accuracy"]) if scored else None


class ResultExport(pl.Callback):
    """After testing, writes ``results_dir/test_results/{run_name}.json`` and ``.npz``.

    Other callbacks that implement ``result_section`` add their sections; the
    experiment adds run facts (fingerprints, skipped files) with ``add_section``.
    """

    def __init__(self, results_dir: str, run_name: str) -> None:
        self.results_dir = results_dir
        self.run_name = run_name
        self.sections: dict[str, Any] = {}
        self.written: dict[str, Any] | None = None

    def add_section(self, name: str, value: Any) -> None:
        self.sections[name] = value

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        payload = self.build(trainer, pl_module)
        self.written = payload
        if not trainer.is_global_zero:
            return
        outputs = pl_module.test_outputs
        results.write_predictions(results.predictions_path(self.results_dir, self.run_name),
                                  torch.cat(outputs["labels"]).numpy(),
                                  torch.cat(outputs["probabilities"]).numpy())
        path = results.result_path(self.results_dir, self.run_name)
        write_json(path, payload)
        log.info("Result written to %s", path)

    def build(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        config = pl_module.hparams.run_config
        classes = list(pl_module.hparams.class_names)
        metrics = {key: float(value) for key, value in trainer.callback_metrics.items()
                   if key.startswith("test_") and value.numel() == 1}
        per_class = pl_module.test_per_class.compute().tolist()
        confusion = pl_module.test_confusion.compute().tolist()
        history = pl_module.history
        best = _best_epoch(history)
        val_losses = [row["val_loss"] for row in history if row.get("val_loss") is not None]
        payload: dict[str, Any] = {
            "schema_version": results.SCHEMA_VERSION,
            "run_name": self.run_name,
            "model": config["model"]["name"],
            "resolution": int(config["res"]),
            "seed": int(config["seed"]),
            "timestamp": dt.datetime.now().isoformat(),
            "best_val_loss": min(val_losses) if val_losses else None,
            "best_epoch": best["epoch"] if best else None,
            "best_val_metrics": {key: value for key, value in (best or {}).items()
                                 if key.startswith("val_")},
            "test_metrics": {
                "loss": metrics.get("test_loss"),
                "accuracy": metrics.get("test_accuracy"),
                "precision": metrics.get("test_precision"),
                "recall": metrics.get("test_recall"),
                "f1_score": metrics.get("test_f1_score"),
                "balanced_accuracy": metrics.get("test_balanced_accuracy"),
                "per_class_recall": dict(zip(classes, per_class)),
                "confusion_matrix": confusion,
                "num_images": int(np.sum(confusion)),
            },
            "classes": classes,
            "epochs_run": len(history),
            "global_step": trainer.global_step,
            "fit_time_sec": pl_module.fit_seconds,
            "precision": str(trainer.precision),
            "accelerator": trainer.strategy.root_device.type,
            "device": device_name(trainer.strategy.root_device),
            "num_devices": trainer.world_size,
            "versions": library_versions(),
            "predictions_file": results.predictions_path("", self.run_name).name,
            "history": history,
            "config": config,
        }
        for callback in trainer.callbacks:
            if callback is not self and hasattr(callback, "result_section"):
                payload.update(callback.result_section(trainer, pl_module))
        payload.update(self.sections)
        return payload
