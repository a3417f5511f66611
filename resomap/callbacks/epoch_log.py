"""One log line per training epoch, for SLURM and ``tee`` users: the epoch's metrics in the
job's log file and on the console, where a progress bar leaves only carriage returns."""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import lightning.pytorch as pl

log = logging.getLogger(__name__)


def _format_value(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1e-2 and value != 0 else f"{value:.4f}"


def _seconds(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 60 else f"{int(seconds // 60)}:{int(seconds % 60):02d}"


class EpochLog(pl.Callback):
    """Log ``epoch 3/25: train_loss 0.7123, ..., val_balanced_accuracy 0.6512, lr 9.51e-04, 41.2 s``.

    Lightning calls a callback's ``on_train_epoch_end`` before the module's, where the module
    logs its epoch metrics, so an epoch's line is written when the next epoch starts or
    training ends (validation has run by then, in Lightning 2.x before ``on_train_epoch_end``).
    ``prefixes`` picks the metrics shown (logged scalars whose name starts with one of them).
    """

    def __init__(self, prefixes: tuple[str, ...] | list[str] = ("train_", "val_")) -> None:
        self.prefixes = tuple(prefixes)
        self._pending: dict[str, Any] | None = None
        self._started = 0.0

    def _learning_rate(self, trainer: pl.Trainer) -> float | None:
        optimizers = trainer.optimizers
        if not optimizers or not optimizers[0].param_groups:
            return None
        return float(optimizers[0].param_groups[0]["lr"])

    def line(self, trainer: pl.Trainer, epoch: int, seconds: float, lr: float | None) -> str:
        """The epoch's line from the trainer's logged metrics."""
        metrics = {name: float(value) for name, value in trainer.callback_metrics.items()
                   if name.startswith(self.prefixes) and not name.endswith("_time")
                   and getattr(value, "numel", lambda: 1)() == 1}
        ordered = sorted(metrics, key=lambda name: (
            next(index for index, prefix in enumerate(self.prefixes) if name.startswith(prefix)), name))
        parts = [f"{name} {_format_value(metrics[name])}" for name in ordered
                 if math.isfinite(metrics[name])]
        if lr is not None:
            parts.append(f"lr {lr:.3g}")
        parts.append(_seconds(seconds))
        total = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else "?"
        return f"epoch {epoch + 1}/{total}: " + ", ".join(parts)

    def _flush(self, trainer: pl.Trainer) -> None:
        if self._pending is not None and trainer.is_global_zero:
            log.info("%s", self.line(trainer, **self._pending))
        self._pending = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._flush(trainer)
        self._started = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # The learning rate at the epoch's end, before a per-epoch scheduler steps it.
        self._pending = {"epoch": trainer.current_epoch, "seconds": time.perf_counter() - self._started,
                         "lr": self._learning_rate(trainer)}

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._flush(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                     exception: BaseException) -> None:
        self._flush(trainer)
