"""What a run does when the GPU runs out of memory or the user presses Ctrl-C.

Out of memory: the run is retried with half the batch size and twice the gradient
accumulation, so the effective batch (and with it the optimisation) stays the same,
until ``oom.min_batch_size``; the retries are recorded in the run's result.
"""

from __future__ import annotations

import dataclasses
import logging
import pickle
from collections.abc import Callable
from typing import Any, TypeVar

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException

from resomap.data import cache
from resomap.device import free_accelerator_memory
from resomap.errors import ResoMapError
from resomap.run import signals
from resomap.run.trained import untrusted_checkpoint

log = logging.getLogger(__name__)

T = TypeVar("T")


class OutOfMemoryAtFloorError(ResoMapError):
    """The run ran out of memory even at the smallest allowed batch size."""


@dataclasses.dataclass(frozen=True)
class BatchPlan:
    """Batch sizes of one attempt, and the attempts that ran out of memory before it."""

    batch_size: int
    eval_batch_size: int
    accumulate_grad_batches: int = 1
    retries: tuple[dict[str, Any], ...] = ()

    @property
    def effective_batch_size(self) -> int:
        return self.batch_size * self.accumulate_grad_batches

    def halved(self, error: BaseException) -> BatchPlan:
        """Half the batch, twice the accumulation; the failed attempt is added to ``retries``."""
        failed = {"batch_size": self.batch_size, "eval_batch_size": self.eval_batch_size,
                  "accumulate_grad_batches": self.accumulate_grad_batches,
                  "error": str(error).splitlines()[0] if str(error) else type(error).__name__}
        return BatchPlan(batch_size=self.batch_size // 2,
                         eval_batch_size=max(1, self.eval_batch_size // 2),
                         accumulate_grad_batches=self.accumulate_grad_batches * 2,
                         retries=(*self.retries, failed))

    def section(self) -> dict[str, Any]:
        """The ``batch`` section of the result: what the run finally used and why."""
        return {"batch_size": self.batch_size, "eval_batch_size": self.eval_batch_size,
                "accumulate_grad_batches": self.accumulate_grad_batches,
                "effective_batch_size": self.effective_batch_size,
                "oom_retries": list(self.retries)}



def run_with_oom_retries(attempt: Callable[[BatchPlan], T], plan: BatchPlan, min_batch_size: int) -> T:
    """``attempt(plan)``, halving the batch after each CUDA out-of-memory error down to the floor."""
    while True:
        try:
            return attempt(plan)
        except torch.cuda.OutOfMemoryError as error:
            if plan.batch_size // 2 < min_batch_size:
                raise OutOfMemoryAtFloorError(
                    f"Out of memory at data.batch_size={plan.batch_size} after "
                    f"{len(plan.retries)} retries, and halving it again would go below "
                    f"oom.min_batch_size={min_batch_size}. Lower res, use a smaller model or "
                    f"precision, or lower oom.min_batch_size. ({str(error).splitlines()[0]})"
                ) from error
            plan = plan.halved(error)
        # Outside the except block, so the traceback no longer holds the failed attempt's tensors;
        # data splits kept on the GPU for later jobs go too, the retry needs the room.
        cache.release()
        free_accelerator_memory()
        log.warning("Out of memory at batch size %d; retrying with batch size %d and "
                    "accumulate_grad_batches=%d (effective batch %d)", plan.retries[-1]["batch_size"],
                    plan.batch_size, plan.accumulate_grad_batches, plan.effective_batch_size)


def call_trainer(trainer: pl.Trainer, method: str, **kwargs: Any) -> Any:
    """``trainer.fit`` / ``trainer.test``, with Ctrl-C surfacing as KeyboardInterrupt.

    Lightning catches KeyboardInterrupt, runs the ``on_exception`` hooks (the last
    checkpoint saves itself there) and calls ``sys.exit(1)``; turning that back into
    KeyboardInterrupt lets the sweep tell an interrupt from a failure; in a multi-process fit
    every rank stops at the same step (:func:`signals.ctrl_c_at_step_boundary`). A checkpoint
    refused by ``weights_only=True`` loading becomes one clear error.
    """
    try:
        with signals.ctrl_c_at_step_boundary(trainer):
            result = getattr(trainer, method)(**kwargs)
    except SystemExit as stop:
        if isinstance(stop, SIGTERMException):
            raise  # a scheduler's stop: the tracking layer records it and exits 143
        if trainer.interrupted:
            raise KeyboardInterrupt(f"trainer.{method} interrupted") from stop
        raise
    except pickle.UnpicklingError as error:
        raise untrusted_checkpoint(kwargs.get("ckpt_path"), error) from error
    if signals.ctrl_c_noted():  # Ctrl-C after the last training step: the fit ended, the sweep stops
        raise KeyboardInterrupt(f"trainer.{method} interrupted")
    return result
