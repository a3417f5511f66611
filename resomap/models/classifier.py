"""The LightningModule that wraps every architecture: loss, optimisation and metrics."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import torch
import torchmetrics
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from resomap.errors import ResoMapError

# The seed study's metric names: per-epoch ``{stage}_f1``, final ``test_f1_score``.
_F1_NAME = {"train": "f1", "val": "f1", "test": "f1_score"}
STAGES = ("train", "val", "test")


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int,
                  warmup_fraction: float = 0.05) -> LambdaLR:
    """Linear warm-up over ``warmup_fraction`` of the steps, then cosine decay to zero."""
    warmup_steps = max(1, round(warmup_fraction * total_steps))

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return LambdaLR(optimizer, factor)


def confusion_metrics(confusion: torch.Tensor) -> dict[str, torch.Tensor]:
    """The stage's metrics from its confusion counts (rows: true class, columns: predicted).

    Derived once per epoch from counts updated with one ``bincount`` per step, instead of five
    torchmetrics objects logged on every step (Lightning walks each logged metric object per
    step: most of the framework's per-step cost for a small CNN). Same definitions as
    torchmetrics' multiclass metrics: macro averages over the classes that occur in the
    targets or predictions; balanced accuracy is macro recall, ISIC's mean per-class recall.
    """
    confusion = confusion.double()
    tp = confusion.diag()
    support, predicted = confusion.sum(1), confusion.sum(0)
    recall = torch.where(support > 0, tp / support.clamp(min=1), torch.zeros_like(tp))
    precision = torch.where(predicted > 0, tp / predicted.clamp(min=1), torch.zeros_like(tp))
    denominator = precision + recall
    f1 = torch.where(denominator > 0, 2 * precision * recall / denominator.clamp(min=1e-12),
                     torch.zeros_like(tp))
    seen = (support + predicted) > 0
    macro = (lambda values: values[seen].mean()) if seen.any() else (lambda values: values.sum() * 0)
    return {"accuracy": tp.sum() / confusion.sum().clamp(min=1), "balanced_accuracy": macro(recall),
            "precision": macro(precision), "recall": macro(recall), "f1": macro(f1),
            "per_class_recall": recall}


class CheckpointMismatchError(ResoMapError):
    """A checkpoint was written by another run (model, resolution, data or training config)."""


class LitClassifier(pl.LightningModule):
    """Cross-entropy classification of any ``net`` with torchmetrics for every stage.

    ``run_config`` (plain containers, secrets redacted, so checkpoints load with
    ``weights_only``) and the run's identity are saved in every checkpoint; resuming a
    checkpoint of another identity is refused, naming what differs.
    """

    def __init__(self, net: nn.Module, num_classes: int, class_names: list[str],
                 optimizer: Callable[..., torch.optim.Optimizer],
                 scheduler: Callable[..., LambdaLR] | None = None,
                 class_weights: list[float] | None = None, channels_last: bool = True,
                 run_config: dict[str, Any] | None = None, compile: bool = False,
                 identity: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.save_hyperparameters({"num_classes": num_classes, "class_names": list(class_names),
                                   "class_weights": class_weights, "run_config": run_config or {},
                                   "identity": identity or {}})
        self.net = net.to(memory_format=torch.channels_last) if channels_last else net
        self.channels_last = channels_last
        if compile:
            # In place, so state_dict keys (and checkpoints) are the same as without compile.
            self.net.compile()
        self.compiled = compile
        # Wall time of the first training step (includes compilation) and the mean of the rest
        # of that epoch, so compile cost is reported apart from the steady speed.
        self.step_timing: dict[str, float] = {}
        self._clock: dict[str, float] = {}
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        weight = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        self.loss = nn.CrossEntropyLoss(weight=weight)
        # Per stage, confusion counts and the mean loss: updated each step, turned into the
        # stage's metrics and logged once per epoch. torchmetrics keeps them in step across DDP
        # processes. ModuleDict keys may not shadow Module methods such as ``train``.
        self.confusion = nn.ModuleDict({
            f"{stage}_confusion": torchmetrics.ConfusionMatrix(task="multiclass", num_classes=num_classes,
                                                               validate_args=False)
            for stage in STAGES})
        self.mean_loss = nn.ModuleDict({f"{stage}_loss": torchmetrics.MeanMetric() for stage in STAGES})
        # Per-epoch records and fit time survive resume through the checkpoint.
        self.history: list[dict[str, Any]] = []
        self._train_images = 0
        self.fit_seconds = 0.0
        self.test_outputs: dict[str, list[torch.Tensor]] = {}
        self._epoch_start = 0.0
        self._val_row: dict[str, Any] = {}
        self.test_results: dict[str, Any] = {}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.net(images)

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor],
              stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        images, targets = batch
        logits = self(images)
        loss = self.loss(logits.float(), targets)
        self.confusion[f"{stage}_confusion"].update(logits.detach().argmax(dim=1), targets)
        self.mean_loss[f"{stage}_loss"].update(loss.detach(), weight=len(targets))
        return loss, logits

    def _epoch_metrics(self, stage: str) -> dict[str, Any]:
        """The stage's epoch metrics under the seed's names, logged once; the counters reset."""
        confusion = self.confusion[f"{stage}_confusion"]
        derived = confusion_metrics(confusion.compute())
        per_class = derived.pop("per_class_recall")
        values = {f"{stage}_{_F1_NAME[stage] if name == 'f1' else name}": value.float()
                  for name, value in derived.items()}
        values[f"{stage}_loss"] = self.mean_loss[f"{stage}_loss"].compute().float()
        confusion.reset()
        self.mean_loss[f"{stage}_loss"].reset()
        for name, value in values.items():
            self.log(name, value, prog_bar=name.endswith(("_loss", "balanced_accuracy")))
        return {"values": {name: float(value) for name, value in values.items()},
                "per_class_recall": dict(zip(self.hparams.class_names, per_class.tolist()))}

    def training_step(self, batch, batch_idx):
        self._train_images += len(batch[1])
        return self._step(batch, "train")[0]

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        _, logits = self._step(batch, "test")
        probabilities = logits.float().softmax(dim=1)
        self.test_outputs.setdefault("probabilities", []).append(probabilities.cpu())
        self.test_outputs.setdefault("labels", []).append(batch[1].cpu())

    def on_test_epoch_start(self) -> None:
        self.test_outputs = {}
        self.test_results = {}

    def on_test_epoch_end(self) -> None:
        confusion = self.confusion["test_confusion"].compute().long()
        self.test_results = {**self._epoch_metrics("test"), "confusion": confusion.tolist()}

    def on_train_epoch_start(self) -> None:
        self._epoch_start = time.perf_counter()
        self._train_images = 0
        self._val_row = {}

    def _synchronized_now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if not self._clock:
            self._clock["start"] = self._synchronized_now()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if "first_end" not in self._clock:
            self._clock.update(first_end=self._synchronized_now(), steps=0)
            self.step_timing["first_step_sec"] = self._clock["first_end"] - self._clock["start"]
        else:
            self._clock["steps"] += 1

    def _close_step_timing(self) -> None:
        if self._clock.get("steps") and "later_step_sec" not in self.step_timing:
            elapsed = self._synchronized_now() - self._clock["first_end"]
            self.step_timing["later_step_sec"] = elapsed / self._clock["steps"]

    def compile_report(self) -> dict[str, Any]:
        """``{"enabled", "first_step_sec", "later_step_sec", "overhead_sec"}`` of this fit."""
        report: dict[str, Any] = {"enabled": self.compiled, **self.step_timing}
        if "later_step_sec" in self.step_timing:
            report["overhead_sec"] = self.step_timing["first_step_sec"] - self.step_timing["later_step_sec"]
        return report

    def on_validation_epoch_start(self) -> None:
        if self.trainer.state.fn == "fit":
            self._close_step_timing()

    def on_train_epoch_end(self) -> None:
        """Close the epoch's history row: its own train metrics and, validation having run
        before this hook in Lightning 2.x, its own val metrics."""
        self._close_step_timing()
        epoch_time = time.perf_counter() - self._epoch_start
        self.fit_seconds += epoch_time
        self.log("train_epoch_time", epoch_time, on_epoch=True)
        # The learning rate the epoch ended with, before a per-epoch scheduler steps it: logged
        # here rather than by Lightning's LearningRateMonitor, which refuses runs without a logger.
        lr = float(self.trainer.optimizers[0].param_groups[0]["lr"]) if self.trainer.optimizers else None
        if lr is not None:
            self.log("lr", lr, on_epoch=True)
        record: dict[str, Any] = {"epoch": self.current_epoch, **self._epoch_metrics("train")["values"]}
        record.update(self._val_row)
        record.update(train_epoch_time=epoch_time, train_time_sec=self.fit_seconds,
                      train_images=self._train_images, lr=lr)
        self.history = [row for row in self.history if row["epoch"] != self.current_epoch]
        self.history.append(record)

    def on_validation_epoch_end(self) -> None:
        measured = self._epoch_metrics("val")
        if not self.trainer.sanity_checking:
            self._val_row = {**measured["values"], "val_per_class_recall": measured["per_class_recall"]}

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer,
                                           total_steps=int(self.trainer.estimated_stepping_batches))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["resomap"] = {"history": self.history, "fit_seconds": self.fit_seconds}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get("hyper_parameters", {}).get("identity") or {}
        mine = self.hparams.get("identity") or {}
        if mine and saved and mine.get("digest") != saved.get("digest"):
            raise CheckpointMismatchError(
                f"Refusing to resume: the checkpoint was written by run {saved.get('run_name')} "
                f"(identity {saved.get('digest')}), this is run {mine.get('run_name')} (identity "
                f"{mine.get('digest')}). Pass a checkpoint of this run, or ckpt_path=null to train "
                "from scratch.")
        # Testing the best checkpoint must not roll the fit history back; a module loaded for a
        # later reader (no trainer: run.trained.load_trained) gets the history it was saved with.
        if self._trainer is not None and self.trainer.state.fn != "fit":
            return
        state = checkpoint.get("resomap", {})
        self.history = list(state.get("history", []))
        self.fit_seconds = float(state.get("fit_seconds", 0.0))
