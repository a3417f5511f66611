"""Checkpoints of a run: written atomically, resumed only by the run that wrote them.

Each identity has its own folder (``checkpoints/{run_name}/{digest}/``), so a changed config
never finds, loads or deletes another config's ``last.ckpt``. ``ckpt_path=last`` resumes the
folder's ``last.ckpt`` after checking the identity stored in it; a truncated file is a clear
error naming it.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from resomap.errors import ResoMapError
from resomap.io import write_json
from resomap.models.classifier import CheckpointMismatchError
from resomap.run.identity import IDENTITY_FILE, RunIdentity
from resomap.run.oom import UntrustedCheckpointError

log = logging.getLogger(__name__)

LAST = "last.ckpt"
BEST = "best.ckpt"


class CorruptCheckpointError(ResoMapError):
    """A checkpoint file cannot be read (truncated or not a checkpoint)."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, made atomic on any file system.

    Lightning's own writer goes through fsspec, which writes into the system temp dir and then
    moves the file: across file systems that move is a copy in place, and a kill mid-copy leaves
    a truncated ``last.ckpt``. Here the temporary file is in the checkpoint's own folder and
    ``os.replace`` swaps it in, so readers see the old checkpoint or the new one.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike,
                        storage_options: Any | None = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(descriptor, "wb") as handle:
                torch.save(checkpoint, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint on the CPU with ``weights_only=True``; a clear error when unreadable."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except pickle.UnpicklingError as error:
        raise UntrustedCheckpointError(
            f"Refusing to load checkpoint {path}: it holds objects other than tensors and plain "
            "containers, and ResoMap loads checkpoints with weights_only=True so that a checkpoint "
            "cannot run code. Use a checkpoint written by ResoMap, or ckpt_path=null to train from "
            f"scratch. ({str(error).splitlines()[0]})") from error
    except Exception as error:
        raise CorruptCheckpointError(
            f"Checkpoint {path} cannot be read ({type(error).__name__}: {str(error).splitlines()[0]}): "
            "it is truncated or not a ResoMap checkpoint. Move it away and train this run from scratch "
            "with ckpt_path=null, or pass ckpt_path=<another checkpoint>.") from error


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


def resolve_resume(ckpt_path: str | None, folder: Path, identity: RunIdentity,
                   command: list[str], keep_aside: bool = True) -> str | None:
    """The checkpoint ``Trainer.fit`` should resume from, or None to train from scratch.

    - ``last``: this identity's ``last.ckpt`` if there is one (its stored identity checked);
      otherwise a fresh start, saying which keys differ when other configurations of the run
      left checkpoints (those are kept).
    - a path: that file, after checking its identity.
    - None: a fresh start; an interrupted ``last.ckpt`` of this identity is kept aside (renamed,
      never deleted) and the command that would have resumed it is logged (``keep_aside``:
      by rank 0 only).
    """
    last = folder / LAST
    if ckpt_path is None:
        if last.is_file() and keep_aside:
            stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            aside = folder / f"interrupted-{stamp}.ckpt"
            os.replace(last, aside)
            import shlex

            log.warning("Run %s has an unfinished checkpoint; training from scratch as asked "
                        "(ckpt_path=null). The old checkpoint is kept as %s; to resume it instead, "
                        "stop this run and start: %s", identity.run_name, aside,
                        shlex.join([*command, f"ckpt_path={aside}"]))
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
    return str(path)
