"""What every entry point does before its work: a quiet console, one voice in the logs, ``.env``.

Like the lightning-hydra-template's ``extras``, but with no config of its own to learn: each
``resomap`` command calls :func:`load_env` and :func:`quiet_warnings` before Hydra composes
(``resomap.cli.start``), and :func:`extras` first thing inside its task function, where Hydra
has set up the job's logging (console and the job's ``.log`` file).

- Known third-party warnings, which say nothing a ResoMap user can act on, are filtered here
  and only here (:data:`KNOWN_WARNINGS`); any other warning goes through logging, so it is
  shown once on the console and kept in the job's log file.
- Lightning's own console handler is removed: Lightning adds a handler to the ``lightning``
  logger on import and lets records propagate, so every Lightning line was printed twice (once
  by Lightning to stderr, once by Hydra's handler). Its records now reach Hydra's handlers only.
- tqdm bars are off when stderr is not a terminal (SLURM, ``tee``): :func:`quiet_bars`.
- Advertisements are dropped: Lightning's "Tip: ... litlogger" line and MLflow's "View run ...
  at" / "View experiment at" lines (printed to stdout after every run against a server).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# (message regex, category, module regex): warnings a user cannot act on, filtered in one place.
KNOWN_WARNINGS: list[tuple[str, type[Warning], str]] = [
    # Each run's checkpoint folder is stable by design (resume and skip find it again).
    (r"Checkpoint directory .* exists and is not empty", UserWarning, r"lightning\."),
    # The demo's small data set has fewer batches per epoch than Lightning's logging interval;
    # per-epoch metrics are logged by resomap.callbacks.epoch_log.
    (r"The number of training batches .* is smaller than the logging interval", UserWarning,
     r"lightning\."),
    # The cached pipeline augments whole batches on the device and needs no loader workers.
    (r".*does not have many workers which may be a bottleneck", UserWarning, r"lightning\."),
    # Lightning's model summary sizes parameters in fp32 under bf16; the record measures memory.
    (r"Precision .* is not supported by the model summary", UserWarning, r"lightning\."),
    # Lightning 2.6 calls a torch pytree API that torch 2.10+ marks deprecated.
    (r".*isinstance\(treespec, LeafSpec\)", Warning, r""),
    # torchvision 0.29 points its image decoders at TorchCodec; ResoMap decodes in one place.
    (r".*(?:TorchCodec|torchcodec)", UserWarning, r"torchvision"),
    # fvcore scripts a helper at import time, which torch reports as deprecated.
    (r".*torch\.jit\.script.*deprecated", Warning, r""),
    # captum asks for gradients on inputs it was given without them; it sets them itself.
    (r"Input Tensor \d+ did not already require gradients", UserWarning, r"captum"),
]

# Log lines that advertise a product, dropped wherever they come from.
ADVERTISEMENTS = re.compile(r"^\W*Tip: For seamless cloud logging|litlogger")
# Loggers of libraries that attach their own console handler on import.
LIBRARY_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning",
                   "lightning_fabric")


class DropAdvertisements(logging.Filter):
    """A logging filter that drops product advertisements (Lightning's litlogger tip)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not ADVERTISEMENTS.search(str(record.msg))


def quiet_warnings() -> None:
    """Filter :data:`KNOWN_WARNINGS` and send every other warning through logging (shown once,
    kept in the job's log file). Safe to call more than once."""
    for message, category, module in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    logging.captureWarnings(True)
    # MLflow prints "View run ... at" / "View experiment at" after every run tracked on a server.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


def quiet_bars() -> None:
    """No tqdm bars (data checks, decoding, cross-resolution tests) when stderr is not a
    terminal: under SLURM or ``2>&1 | tee`` a bar is a stream of carriage returns in the log,
    where the log lines already say what each step does. ``TQDM_DISABLE`` set by the user wins;
    Lightning's own bar follows ``trainer.enable_progress_bar``."""
    if not sys.stderr.isatty():
        os.environ.setdefault("TQDM_DISABLE", "1")


def route_library_logs() -> None:
    """Lightning's records through the root logger only: one line each, in the job's log file.

    Lightning adds a console handler to ``lightning`` (and, when the root logger has none yet,
    to ``lightning.pytorch``/``lightning.fabric`` with propagation off) when it is imported, so
    this is called after the import, inside each task (:func:`extras`).
    """
    for name in LIBRARY_LOGGERS:
        if name.split(".")[0] not in sys.modules:
            continue
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if type(handler) is logging.StreamHandler:
                logger.removeHandler(handler)
        logger.propagate = True
    # A logger's filters do not see its children's records; the root's handlers see them all.
    root = logging.getLogger()
    for handler in root.handlers:
        if not any(isinstance(item, DropAdvertisements) for item in handler.filters):
            handler.addFilter(DropAdvertisements())


def extras(cfg: Any = None) -> None:
    """First thing in every task function: filter known warnings, one line per log record.

    ``cfg`` is the task's config; ``extras.ignore_warnings=false`` there shows every warning.
    """
    settings = (cfg.get("extras") if cfg is not None and hasattr(cfg, "get") else None) or {}
    if settings.get("ignore_warnings", True):
        quiet_warnings()
    else:
        logging.captureWarnings(True)
    route_library_logs()


def _read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines of a ``.env`` file, through python-dotenv (installed with MLflow)."""
    from dotenv import dotenv_values

    return {key: value for key, value in dotenv_values(path).items() if value is not None}


def load_env(folders: tuple[Path, ...] | None = None) -> list[Path]:
    """Read ``.env`` of the current folder and of ``$RESOMAP_ROOT`` into the environment.

    Secrets (``MLFLOW_TRACKING_PASSWORD``, ``DAGSHUB_USER_TOKEN``...) stay out of configs and
    command lines: configs read them with ``${oc.env:NAME}``. A variable already set in the
    environment wins over the file. Returns the files read.
    """
    if folders is None:
        folders = (Path.cwd(),)
        # RESOMAP_ROOT may itself come from the current folder's .env.
        read = load_env(folders)
        root = os.environ.get("RESOMAP_ROOT")
        if root and Path(root).expanduser().resolve() != Path.cwd().resolve():
            read += load_env((Path(root).expanduser(),))
        return read
    read = []
    for folder in folders:
        path = folder / ".env"
        if path.is_file():
            for key, value in _read_env_file(path).items():
                os.environ.setdefault(key, value)
            read.append(path)
    return read
