"""Build what a run trains with: the one place that turns a composed config into objects.

:func:`build` gives one attempt of a run everything it fits and tests with (:class:`Built`); the
``build_*`` parts serve it and the benchmarks. Loading what a run trained, for later readers,
is :mod:`resomap.run.trained`'s.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from resomap.data.datamodule import ImageFolderDataModule, dataset_fingerprint
from resomap.device import resolve_precision
from resomap.models.classifier import LitClassifier
from resomap.redact import redact_config
from resomap.run.checkpoint import AtomicCheckpointIO, FitState
from resomap.run.export import RecordExport
from resomap.run.identity import RunIdentity
from resomap.run.record_schema import EXPLANATIONS, DataInfo

log = logging.getLogger(__name__)


def data_fingerprint(cfg: DictConfig) -> str:
    """Generate the data set if its config says how (a no-op once it exists), then fingerprint
    its content: bytes are read only for images whose size, mtime or inode changed since the
    last run (cached in ``paths.cache_dir/fingerprints/``); no image is decoded."""
    import hashlib

    root = Path(cfg.data.root).expanduser().resolve()
    if cfg.data.get("generator"):
        instantiate(cfg.data.generator)(root=root)
    if not root.is_dir():
        return ""  # the data module's set-up names the missing folder with the expected layout
    key = hashlib.sha256(str(root).encode()).hexdigest()[:16]
    return dataset_fingerprint(root, Path(cfg.paths.cache_dir) / "fingerprints" / f"{key}.json")


def identify(cfg: DictConfig) -> RunIdentity:
    """The run's identity from its composed config and its data."""
    return RunIdentity.from_config(cfg, data_fingerprint(cfg))


def run_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain containers with secrets redacted: what records and
    checkpoints keep."""
    return redact_config(OmegaConf.to_container(cfg, resolve=True))


def build_datamodule(cfg: DictConfig) -> ImageFolderDataModule:
    return instantiate(cfg.data, validation_cache=str(Path(cfg.paths.cache_dir) / "validation"))


def build_module(cfg: DictConfig, datamodule: ImageFolderDataModule,
                 identity: RunIdentity | None = None) -> LitClassifier:
    """The LightningModule of ``cfg.model`` for ``datamodule``'s classes (set up first); without
    an identity (benchmarks) its checkpoints resume nothing."""
    weights = datamodule.class_weights()
    return LitClassifier(
        net=instantiate(cfg.model.net, num_classes=datamodule.num_classes),
        num_classes=datamodule.num_classes,
        class_names=datamodule.classes,
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
        class_weights=weights.tolist() if weights is not None else None,
        channels_last=cfg.channels_last,
        run_config=run_config(cfg) if identity else None,
        compile=bool(cfg.model.get("compile", False)),
        identity=identity.to_dict() if identity else None,
    )


def _accepts(target: str, argument: str) -> bool:
    """Whether the callable ``target`` (a dotted path from the project's config) takes ``argument``."""
    import inspect

    from hydra.utils import get_object

    try:
        return argument in inspect.signature(get_object(target)).parameters
    except (ImportError, ValueError, TypeError, AttributeError):
        return False


def build_callbacks(cfg: DictConfig, checkpoint_dir: Path, exporter: RecordExport,
                    output_dir: Path | None = None) -> list[pl.Callback]:
    """``cfg.callbacks`` with every ModelCheckpoint writing into the run's own checkpoint folder
    and every callback that writes files (explanations) into the run's own results folder
    ``output_dir``; then :class:`FitState` (an early stop survives a resume) and the exporter,
    last, since it reads what the others measured."""
    callbacks = []
    for node in (cfg.get("callbacks") or {}).values():
        target = str(node.get("_target_", ""))
        extra = {"dirpath": str(checkpoint_dir)} if target.endswith("ModelCheckpoint") else {}
        if output_dir is not None and _accepts(target, "output_dir"):
            extra["output_dir"] = str(Path(output_dir) / EXPLANATIONS)
        callbacks.append(instantiate(node, **extra))
    return [*callbacks, FitState(), exporter]


def build_exporter(identity: RunIdentity, datamodule: ImageFolderDataModule) -> RecordExport:
    counts = {split: datamodule.class_counts(split) for split in ("train", "val", "test")}
    data = DataInfo(name=datamodule.name, root=str(datamodule.root), fingerprint=identity.data_fingerprint,
                    class_counts=counts)
    return RecordExport(identity=identity, data=data)


def build_trainer(cfg: DictConfig, callbacks: list[pl.Callback], loggers: list[Any],
                  **overrides: Any) -> pl.Trainer:
    """``cfg.trainer`` with the run's precision (``resolve_precision``), checkpoints written atomically."""
    precision = resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator)
    plugins = [*overrides.pop("plugins", []), AtomicCheckpointIO()]
    return instantiate(cfg.trainer, precision=precision, callbacks=callbacks, logger=loggers or False,
                       plugins=plugins, **overrides)


@dataclasses.dataclass(frozen=True)
class Built:
    """One attempt of a run, built from its config: fit ``module`` on ``datamodule`` with
    ``trainer``; ``tester(**overrides)`` builds the test trainer with the same callbacks and loggers
    (one device, for a multi-process fit); ``exporter`` turns the test into the run's record."""

    module: LitClassifier
    datamodule: ImageFolderDataModule
    exporter: RecordExport
    callbacks: list[pl.Callback]
    loggers: list[Any]
    trainer: pl.Trainer
    cfg: DictConfig = dataclasses.field(repr=False)

    def tester(self, **overrides: Any) -> pl.Trainer:
        return build_trainer(self.cfg, self.callbacks, self.loggers, **overrides)


def build(cfg: DictConfig, identity: RunIdentity, datamodule: ImageFolderDataModule, checkpoint_dir: Path,
          output_dir: Path, loggers: list[Any], accumulate_grad_batches: int) -> Built:
    """Everything one attempt of the run ``identity`` fits and tests with, fresh, from ``cfg`` and
    its set-up ``datamodule`` (batch sizes already chosen): the module, the exporter, the callbacks
    (checkpoints into ``checkpoint_dir``, files into ``output_dir``) and the trainer."""
    module = build_module(cfg, datamodule, identity)
    exporter = build_exporter(identity, datamodule)
    callbacks = build_callbacks(cfg, checkpoint_dir, exporter, output_dir)
    trainer = build_trainer(cfg, callbacks, loggers, accumulate_grad_batches=accumulate_grad_batches)
    return Built(module, datamodule, exporter, callbacks, loggers, trainer, cfg)
