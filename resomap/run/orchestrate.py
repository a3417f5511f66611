"""One run of the study: build the pieces from the config, train, test, export."""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from resomap.callbacks.export import ResultExport
from resomap.config import config_fingerprint
from resomap.device import free_accelerator_memory, resolve_precision
from resomap.models.classifier import LitClassifier
from resomap.run import distributed
from resomap.run import record as results
from resomap.run.oom import BatchPlan, call_trainer, run_with_oom_retries
from resomap.run.validation import validate_config
from resomap.tracking import mlflow as tracking

log = logging.getLogger(__name__)

OBJECTIVE = "test_balanced_accuracy"



def find_completed(results_dir: str, run_name: str, fingerprint: str) -> dict[str, Any] | None:
    """The local result of an equivalent finished run, if one exists."""
    path = results.result_path(results_dir, run_name)
    if not path.is_file():
        return None
    try:
        payload = results.read_result(path)
    except results.InvalidResult:
        return None
    return payload if payload.get("config_fingerprint") == fingerprint else None


def _clear_stale_checkpoints(checkpoint_dir: Path) -> None:
    """A fresh run must not leave an older run's last.ckpt for a later ``ckpt_path=last``."""
    for name in ("last.ckpt", "best.ckpt"):
        (checkpoint_dir / name).unlink(missing_ok=True)


def build_trainer(cfg: DictConfig, callbacks: list[pl.Callback], loggers: list[Any],
                  **overrides: Any) -> pl.Trainer:
    precision = resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator)
    return instantiate(cfg.trainer, precision=precision, callbacks=callbacks,
                       logger=loggers or False, **overrides)


def run(cfg: DictConfig) -> float | None:
    """Train and test one model at one resolution; return the test balanced accuracy."""
    validate_config(cfg)
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data, validation_cache=str(Path(cfg.paths.cache_dir) / "validation"))
    datamodule.prepare_data()
    datamodule.setup("fit")
    data_fingerprint = datamodule.fingerprint
    fingerprint = config_fingerprint(cfg, data_fingerprint)
    results_dir = cfg.paths.results_dir
    loggers = tracking.build_loggers(cfg)

    if cfg.skip_completed and (done := find_completed(results_dir, cfg.run_name, fingerprint)):
        log.info("Skipping %s: finished with the same config (%s)", cfg.run_name,
                 results.result_path(results_dir, cfg.run_name))
        return done["test_metrics"].get("balanced_accuracy")
    if cfg.skip_completed and (done := tracking.find_finished(loggers, cfg, fingerprint, data_fingerprint)):
        log.info("Skipping %s: finished with the same config (MLflow run %s)", cfg.run_name,
                 done.info.run_id)
        return done.data.metrics.get(OBJECTIVE)

    checkpoint_dir = Path(cfg.run_checkpoint_dir)
    weights = datamodule.class_weights()

    def attempt(plan: BatchPlan) -> float:
        """One fit and test with ``plan``'s batch sizes; every attempt starts from fresh objects."""
        if cfg.ckpt_path is None:
            _clear_stale_checkpoints(checkpoint_dir)
        datamodule.batch_size, datamodule.eval_batch_size = plan.batch_size, plan.eval_batch_size
        module = LitClassifier(
            net=instantiate(cfg.model.net, num_classes=datamodule.num_classes),
            num_classes=datamodule.num_classes,
            class_names=datamodule.classes,
            optimizer=instantiate(cfg.optimizer),
            scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
            class_weights=weights.tolist() if weights is not None else None,
            channels_last=cfg.channels_last,
            run_config=OmegaConf.to_container(cfg, resolve=True),
            compile=bool(cfg.model.get("compile", False)),
        )
        callbacks = [instantiate(node) for node in (cfg.get("callbacks") or {}).values()]
        # The exporter reads what the other callbacks measured, so it goes last.
        callbacks.sort(key=lambda callback: isinstance(callback, ResultExport))
        exporter = next((c for c in callbacks if isinstance(c, ResultExport)), None)
        if exporter is not None:
            exporter.add_section("config_fingerprint", fingerprint)
            exporter.add_section("data", {"name": datamodule.name, "root": str(datamodule.root),
                                          "fingerprint": data_fingerprint,
                                          "class_counts": {split: datamodule.class_counts(split)
                                                           for split in ("train", "val", "test")}})
            exporter.add_section("batch", plan.section())
            exporter.add_section("skipped_images", datamodule.skipped_images)
        trainer = build_trainer(cfg, callbacks, loggers,
                                accumulate_grad_batches=plan.accumulate_grad_batches)

        try:
            call_trainer(trainer, "fit", model=module, datamodule=datamodule, ckpt_path=cfg.ckpt_path,
                         weights_only=True)
            best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
            if exporter is not None:
                exporter.add_section("compile", module.compile_report())
            tester = distributed.trainer_for_test(trainer, partial(build_trainer, cfg, callbacks, loggers))
            if tester is None:  # another rank of a multi-process fit: global rank 0 tests alone
                return None
            call_trainer(tester, "test", model=module, datamodule=datamodule, ckpt_path=best or None,
                         weights_only=True)
            return float(tester.callback_metrics[OBJECTIVE])
        finally:
            # Hydra's basic launcher runs every job of a sweep in this process.
            del trainer, module
            free_accelerator_memory()

    plan = BatchPlan(cfg.data.batch_size, cfg.data.eval_batch_size, cfg.trainer.accumulate_grad_batches)
    with tracking.tracked_run(cfg, loggers, fingerprint, data_fingerprint):
        return run_with_oom_retries(attempt, plan, OmegaConf.select(cfg, "oom.min_batch_size", default=1))
