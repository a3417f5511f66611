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


def _metrics(num_classes: int) -> torchmetrics.MetricCollection:
    # validate_args=False: no per-step checks of the inputs (each is a host-device sync on a GPU).
    task = {"task": "multiclass", "num_classes": num_classes, "validate_args": False}
    return torchmetrics.MetricCollection({
        "accuracy": torchmetrics.Accuracy(**task, average="micro"),
        # Macro recall over all classes is balanced accuracy.
        "balanced_accuracy": torchmetrics.Recall(**task, average="macro"),
        "precision": torchmetrics.Precision(**task, average="macro"),
        "recall": torchmetrics.Recall(**task, average="macro"),
        "f1": torchmetrics.F1Score(**task, average="macro"),
    })



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
        # ModuleDict keys may not shadow Module methods such as ``train``.
        self.stage_metrics = nn.ModuleDict({f"{stage}_metrics": _metrics(num_classes)
                                            for stage in ("train", "val", "test")})
        self.stage_losses = nn.ModuleDict({f"{stage}_loss": torchmetrics.MeanMetric()
                                           for stage in ("train", "val", "test")})
        self.val_per_class = torchmetrics.Recall(task="multiclass", num_classes=num_classes,
                                                 average=None, validate_args=False)
        self.test_per_class = torchmetrics.Recall(task="multiclass", num_classes=num_classes,
                                                  average=None, validate_args=False)
        self.test_confusion = torchmetrics.ConfusionMatrix(task="multiclass", num_classes=num_classes,
                                                           validate_args=False)
        # Per-epoch records and fit time survive resume through the checkpoint.
        self.history: list[dict[str, Any]] = []
        self._train_images = 0
        self.fit_seconds = 0.0
        self.test_outputs: dict[str, list[torch.Tensor]] = {}
        self._epoch_start = 0.0
        self._val_per_class: dict[str, float] | None = None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.net(images)

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        images, targets = batch
        logits = self(images)
        loss = self.loss(logits.float(), targets)
        metrics = self.stage_metrics[f"{stage}_metrics"]
        metrics.update(logits.detach(), targets)
        # Metric objects (not tensors) are logged, so this epoch's values can be read in
        # on_train_epoch_end, before Lightning reduces and resets them.
        mean_loss = self.stage_losses[f"{stage}_loss"]
        mean_loss.update(loss.detach(), weight=len(targets))
        self.log(f"{stage}_loss", mean_loss, on_step=False, on_epoch=True, prog_bar=True,
                 batch_size=len(targets))
        for name, metric in metrics.items():
            self.log(f"{stage}_{_F1_NAME[stage] if name == 'f1' else name}", metric,
                     on_step=False, on_epoch=True, prog_bar=name == "balanced_accuracy",
                     batch_size=len(targets))
        if stage == "val":
            self.val_per_class.update(logits.detach(), targets)
        return loss if stage != "test" else logits

    def training_step(self, batch, batch_idx):
        self._train_images += len(batch[1])
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        logits = self._step(batch, "test")
        targets = batch[1]
        self.test_per_class.update(logits, targets)
        self.test_confusion.update(logits, targets)
        probabilities = logits.float().softmax(dim=1)
        self.test_outputs.setdefault("probabilities", []).append(probabilities.cpu())
        self.test_outputs.setdefault("labels", []).append(targets.cpu())

    def on_test_epoch_start(self) -> None:
        self.test_outputs = {}
        self.test_per_class.reset()
        self.test_confusion.reset()

    def on_train_epoch_start(self) -> None:
        self._epoch_start = time.perf_counter()
        self._train_images = 0

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
        record: dict[str, Any] = {"epoch": self.current_epoch}
        train = {f"train_{_F1_NAME['train'] if name == 'f1' else name}": float(value)
                 for name, value in self.stage_metrics["train_metrics"].compute().items()}
        record.update(train_loss=float(self.stage_losses["train_loss"].compute()), **train)
        record.update({key: float(value) for key, value in self.trainer.callback_metrics.items()
                       if key.startswith("val_") and value.numel() == 1})
        if self._val_per_class is not None:
            record["val_per_class_recall"] = self._val_per_class
        record.update(train_epoch_time=epoch_time, train_time_sec=self.fit_seconds,
                      train_images=self._train_images)
        self.history = [row for row in self.history if row["epoch"] != self.current_epoch]
        self.history.append(record)

    def on_validation_epoch_end(self) -> None:
        per_class = self.val_per_class.compute()
        self.val_per_class.reset()
        if not self.trainer.sanity_checking:
            self._val_per_class = dict(zip(self.hparams.class_names, per_class.tolist()))

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
        if self.trainer.state.fn != "fit":
            return  # testing the best checkpoint must not roll the fit history back
        state = checkpoint.get("resomap", {})
        self.history = list(state.get("history", []))
        self.fit_seconds = float(state.get("fit_seconds", 0.0))
