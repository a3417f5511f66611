"""The callback that builds a tested run's record: metrics, per-epoch history, every section.

The callback only assembles the :class:`~resomap.run.record.RunRecord` after testing; the run
(``resomap.orchestrate``) writes it, once, as its commit point.
"""

from __future__ import annotations

import datetime as dt
import platform
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from resomap.device import device_name
from resomap.run.identity import RunIdentity
from resomap.run.record_schema import SCALAR_METRICS, DataInfo, RunRecord, TestMetrics

LIBRARIES = ("torch", "torchvision", "lightning", "torchmetrics", "hydra-core", "mlflow", "fvcore",
             "captum", "resomap")
# Record fields a callback's ``record_section`` may fill.
SECTIONS = ("profiling", "complexity", "explain", "compile", "distributed", "batch", "skipped_images",
            "timing")


def library_versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def ranking_scores(labels: np.ndarray, probabilities: np.ndarray,
                   classes: list[str]) -> tuple[dict[str, float | None], dict[str, float | None]]:
    """One-vs-rest ROC AUC and average precision of each class (scikit-learn), as the ISIC
    challenges report them; None for a class absent from (or alone in) the test labels."""
    auroc: dict[str, float | None] = {}
    average_precision: dict[str, float | None] = {}
    for index, name in enumerate(classes):
        positive = labels == index
        if positive.all() or not positive.any():
            auroc[name] = average_precision[name] = None
            continue
        auroc[name] = float(roc_auc_score(positive, probabilities[:, index]))
        average_precision[name] = float(average_precision_score(positive, probabilities[:, index]))
    return auroc, average_precision


def _best_epoch(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    scored = [row for row in history if row.get("val_balanced_accuracy") is not None]
    return max(scored, key=lambda row: row["val_balanced_accuracy"]) if scored else None


class RecordExport(pl.Callback):
    """After testing, assembles the run's :class:`RunRecord` (``self.record``) and its test
    labels and probabilities (``self.predictions``). Other callbacks that implement
    ``record_section`` add their sections; the run adds its own with :meth:`add_section`."""

    def __init__(self, identity: RunIdentity, data: DataInfo) -> None:
        self.identity = identity
        self.data = data
        self.sections: dict[str, Any] = {}
        self.record: RunRecord | None = None
        self.predictions: tuple[np.ndarray, np.ndarray] | None = None

    def add_section(self, name: str, value: Any) -> None:
        if name not in SECTIONS:
            raise KeyError(f"{name!r} is not a record section; one of {SECTIONS}")
        self.sections[name] = value

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        outputs = pl_module.test_outputs
        labels = torch.cat(outputs["labels"]).numpy()
        probabilities = torch.cat(outputs["probabilities"]).numpy()
        self.predictions = (labels, probabilities)
        self.record = self.build(trainer, pl_module, labels, probabilities)

    def build(self, trainer: pl.Trainer, pl_module: pl.LightningModule, labels: np.ndarray,
              probabilities: np.ndarray) -> RunRecord:
        classes = list(pl_module.hparams.class_names)
        tested = pl_module.test_results
        metrics, confusion = tested["values"], tested["confusion"]
        per_class = [tested["per_class_recall"][name] for name in classes]
        auroc, average_precision = ranking_scores(labels, probabilities, classes)
        known = [value for value in auroc.values() if value is not None]
        history = pl_module.history
        best = _best_epoch(history)
        val_losses = [row["val_loss"] for row in history if row.get("val_loss") is not None]
        sections = {}
        for callback in trainer.callbacks:
            if callback is not self and hasattr(callback, "record_section"):
                sections.update(callback.record_section(trainer, pl_module))
        sections.update(self.sections)
        return RunRecord(
            identity=self.identity,
            timestamp=dt.datetime.now().isoformat(),
            classes=classes,
            test_metrics=TestMetrics(
                **{name: metrics.get(f"test_{name}") for name in SCALAR_METRICS if name != "macro_auroc"},
                per_class_recall=dict(zip(classes, per_class)), confusion_matrix=confusion,
                num_images=int(np.sum(confusion)), per_class_auroc=auroc,
                macro_auroc=float(np.mean(known)) if known else None,
                per_class_average_precision=average_precision),
            data=self.data,
            best_val_loss=min(val_losses) if val_losses else None,
            best_epoch=best["epoch"] if best else None,
            best_val_metrics={key: value for key, value in (best or {}).items() if key.startswith("val_")},
            epochs_run=len(history),
            global_step=trainer.global_step,
            fit_time_sec=pl_module.fit_seconds,
            precision=str(trainer.precision),
            accelerator=trainer.strategy.root_device.type,
            device=device_name(trainer.strategy.root_device),
            num_devices=int(sections.get("distributed", {}).get("world_size", trainer.world_size)),
            versions=library_versions(),
            history=history,
            config=dict(pl_module.hparams.run_config),
            **{key: value for key, value in sections.items() if key in SECTIONS},
        )
