"""Exponential moving average of the weights, as Lightning's ``EMAWeightAveraging`` keeps it, with
the averaged weights also the ones tested.

Why a subclass: Lightning's callback, still attached when the run tests its best checkpoint,
reloads that checkpoint's ``current_model_state`` (the raw, non-averaged weights at that epoch)
into the module, so the test would score other weights than validation chose. Outside fitting,
the checkpoint's ``state_dict`` (which the callback wrote as the averaged weights) is what the
run must test, and every later reader (the train x test matrix, ``resomap explain``) loads.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import EMAWeightAveraging


class EMAWeights(EMAWeightAveraging):
    """``EMAWeightAveraging`` whose checkpoints test as the averaged weights (see module doc)."""

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        if trainer.state.fn != "fit":
            return  # state_dict holds the averaged weights, already loaded into the module
        super().on_load_checkpoint(trainer, pl_module, checkpoint)
