"""Checkpoints of a run: written atomically, resumed only by the run that wrote them.

Each identity has its own folder (``checkpoints/{run_name}/{digest}/``), so a changed config
never finds, loads or deletes another config's ``last.ckpt``. ``ckpt_path=last`` resumes the
folder's ``last.ckpt`` after checking the identity stored in it; a truncated file is a clear
error naming it. The checkpoints of one attempt travel together: a plain re-run keeps the whole
set (``best.ckpt``, ``last.ckpt`` with its callback and early-stopping state) aside in
``interrupted-<time>/``, and resuming that folder's ``last.ckpt`` moves the set back, so the
resumed run tests its own best checkpoint. A run that stopped early stays stopped when resumed
(:class:`FitState`).
"""

from __future__ import annotations

import datetime as dt
import errno
import logging
import os
import shlex
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from resomap.errors import ResoMapError
from resomap.io import atomic_path, write_json
from resomap.models.classifier import CheckpointMismatchError
from resomap.run.identity import IDENTITY_FILE, RunIdentity
from resomap.run.trained import BEST, LAST, read_checkpoint

log = logging.getLogger(__name__)

ASIDE_PREFIX = "interrupted-"
# The files of one attempt, kept aside and restored together.
ATTEMPT_FILES = (LAST, BEST)


class DiskFullError(ResoMapError):
    """A run's file could not be written: its disk is full."""


def disk_full(error: BaseException) -> bool:
    """Whether ``error`` (or what caused it) is a full disk or quota: torch reports a failed
    write as a RuntimeError naming ``inline_container``, the OS as ENOSPC or EDQUOT."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if isinstance(error, RuntimeError) and "file write failed" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


def disk_full_message(path: str | os.PathLike, key: str, resume: str) -> str:
    return (f"Cannot write {path}: its disk is full (or over quota). Nothing already written was lost. "
            f"Free space there, or point {key} at another disk, then {resume}.")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, made atomic on any file system.

    Lightning's own writer goes through fsspec, which writes into the system temp dir and then
    moves the file: across file systems that move is a copy in place, and a kill mid-copy leaves
    a truncated ``last.ckpt``. Here :func:`resomap.io.atomic_path` writes beside the checkpoint and
    swaps it in, so readers see the old checkpoint or the new one; the bytes are synced first.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike,
                        storage_options: Any | None = None) -> None:
        try:
            with atomic_path(path) as temporary, open(temporary, "wb") as handle:
                torch.save(checkpoint, handle)
                handle.flush()
                os.fsync(handle.fileno())
        except Exception as error:
            if disk_full(error):
                raise DiskFullError(disk_full_message(
                    path, "paths.checkpoint_dir", "resume with ckpt_path=last (the last whole checkpoint "
                    "is kept)")) from error
            raise


class FitState(pl.Callback):
    """Keeps, in every checkpoint, whether training had been told to stop (early stopping).

    Lightning saves the EarlyStopping counters but not ``trainer.should_stop``: a run that stopped
    early and was killed before its test would train on past its stop when resumed. This state is
    read back on resume and stops the fit at once, so the resumed run tests what it trained.
    """

    def __init__(self) -> None:
        self.trainer: pl.Trainer | None = None
        self.stopped = False

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        trainer = self.trainer
        if trainer is None:
            return {"should_stop": False, "finished": False}
        last_epoch = trainer.max_epochs is not None and trainer.max_epochs > 0 and (
            trainer.current_epoch + 1 >= trainer.max_epochs)
        steps_done = trainer.max_steps is not None and 0 < trainer.max_steps <= trainer.global_step
        epoch_done = bool(trainer.fit_loop.epoch_loop.done)
        return {"should_stop": bool(trainer.should_stop),
                "finished": bool(trainer.should_stop or steps_done or (last_epoch and epoch_done))}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.stopped = bool(state_dict.get("should_stop"))

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.stopped:
            log.info("The resumed run had stopped early at epoch %d; testing it without training on",
                     trainer.current_epoch - 1)
            trainer.should_stop = True


def stored_identity(checkpoint: dict[str, Any]) -> RunIdentity | None:
    saved = (checkpoint.get("hyper_parameters") or {}).get("identity")
    return RunIdentity.from_dict(saved) if saved else None


def write_identity(folder: Path, identity: RunIdentity) -> None:
    """``identity.json`` in the run's checkpoint folder: how a later config explains a difference."""
    write_json(folder / IDENTITY_FILE, identity.to_dict())


def _other_configs(folder: Path, identity: RunIdentity) -> list[tuple[Path, RunIdentity]]:
    """Checkpoint folders of the same run name written by other configurations."""
    import json

    found = []
    for sibling in sorted(folder.parent.glob(f"*/{IDENTITY_FILE}")):
        if sibling.parent == folder or not (sibling.parent / LAST).is_file():
            continue
        try:
            found.append((sibling.parent, RunIdentity.from_dict(json.loads(sibling.read_text()))))
        except (OSError, ValueError, TypeError):
            continue
    return found


def _stamp() -> str:
    return dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")


def keep_aside(folder: Path) -> Path | None:
    """Move this attempt's checkpoints (best, last) together into ``folder/interrupted-<time>/``;
    None when there is no ``last.ckpt`` to keep."""
    if not (folder / LAST).is_file():
        return None
    aside = folder / f"{ASIDE_PREFIX}{_stamp()}"
    aside.mkdir()
    for name in ATTEMPT_FILES:
        if (folder / name).is_file():
            os.replace(folder / name, aside / name)
    return aside


def _restore(aside: Path, folder: Path, identity: RunIdentity) -> Path:
    """Put a kept-aside set back as the run's current checkpoints (keeping the current set aside
    first), so the resumed run's best checkpoint is its own."""
    current = keep_aside(folder)
    if current is not None:
        log.warning("Run %s: its current checkpoints are kept aside in %s", identity.run_name, current)
    for name in ATTEMPT_FILES:
        if (aside / name).is_file():
            os.replace(aside / name, folder / name)
    try:
        aside.rmdir()
    except OSError:
        pass
    log.info("Resuming %s from the checkpoints kept aside in %s (moved back into %s)", identity.run_name,
             aside, folder)
    return folder / LAST


def resolve_resume(ckpt_path: str | None, folder: Path, identity: RunIdentity,
                   command: list[str], keep_aside_allowed: bool = True) -> str | None:
    """The checkpoint ``Trainer.fit`` should resume from, or None to train from scratch.

    - ``last``: this identity's ``last.ckpt`` if there is one (its stored identity checked);
      otherwise a fresh start, saying which keys differ when other configurations of the run
      left checkpoints (those are kept).
    - a path: that file, after checking its identity. A ``last.ckpt`` kept aside in this run's
      ``interrupted-<time>/`` folder is moved back with its ``best.ckpt`` first.
    - None: a fresh start; an earlier attempt's checkpoints are kept aside together (moved, never
      deleted) and the command that would resume them is logged (``keep_aside_allowed``: rank 0
      only).
    """
    last = folder / LAST
    if ckpt_path is None:
        if last.is_file() and keep_aside_allowed:
            finished = fit_finished(last)
            aside = keep_aside(folder)
            what = ("checkpoints of a run that finished training but has no record"
                    if finished else "unfinished checkpoints")
            log.warning("Run %s has %s; training from scratch as asked (ckpt_path=null). They are kept "
                        "together in %s; to %s instead, stop this run and start: %s", identity.run_name,
                        what, aside, "test them without retraining" if finished else "resume them",
                        shlex.join([*command, f"ckpt_path={aside / LAST}"]))
        return None
    if ckpt_path == "last":
        if not last.is_file():
            others = _other_configs(folder, identity)
            if others:
                where, theirs = others[-1]
                log.warning("No checkpoint of this configuration of %s to resume; %d other "
                            "configuration(s) left checkpoints (kept, e.g. %s), differing in: %s. "
                            "Training from scratch.", identity.run_name, len(others), where,
                            "; ".join(identity.differences(theirs)))
            return None
        path = last
    else:
        path = Path(ckpt_path).expanduser()
        if not path.is_file():
            raise ResoMapError(f"ckpt_path={ckpt_path}: no such checkpoint file. Pass ckpt_path=last to "
                               "resume this run's last checkpoint, or ckpt_path=null to start fresh.")
    theirs = stored_identity(read_checkpoint(path))
    if theirs is not None and theirs != identity:
        raise CheckpointMismatchError(
            f"Refusing to resume {path}: it was written by run {theirs.run_name} with another "
            f"configuration ({'; '.join(identity.differences(theirs))}). Pass a checkpoint of this "
            "run, or ckpt_path=null to train from scratch.")
    aside = path.resolve().parent
    if (keep_aside_allowed and aside.parent == folder.resolve() and aside.name.startswith(ASIDE_PREFIX)
            and path.name == LAST):
        path = _restore(aside, folder, identity)
    return str(path)


def fit_finished(path: Path) -> bool:
    """Whether the checkpoint ``path`` was saved after training ended (last epoch done, or
    stopped early): resuming it trains nothing and only tests."""
    try:
        saved = read_checkpoint(path)
    except (ResoMapError, OSError):
        return False
    states = saved.get("callbacks") or {}
    return any(isinstance(state, dict) and state.get("finished") for key, state in states.items()
               if "FitState" in str(key))
