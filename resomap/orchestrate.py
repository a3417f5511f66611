"""One run of the study, on one road: compose -> identity -> lock -> skip? -> resume? -> build ->
fit, test -> record (the commit point) -> tracking.

A finished run costs a file read: the skip check comes before any data module or model is
built. Everything the run writes is named by its identity digest (``results/runs/{digest}/``,
``checkpoints/{run_name}/{digest}/``, the MLflow tag ``identity``). The record is written last,
atomically, so a run with a record is finished; tracking mirrors it afterwards, and a re-run
reconciles a store that a kill left behind.

The composed config is read here (and by the builders and checks this calls), never below: the
tracking mirror gets :class:`TrackingSettings`, built once per run by :func:`tracking_settings`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shlex
import sys
import time
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from resomap.config_validation import validate_config
from resomap.device import free_accelerator_memory
from resomap.errors import ResoMapError
from resomap.run import build, checkpoint, distributed, record_write
from resomap.run import record as records
from resomap.run.identity import RunIdentity
from resomap.run.lock import run_lock
from resomap.run.oom import BatchPlan, call_trainer, run_with_oom_retries
from resomap.tracking import mirror
from resomap.tracking.settings import TrackingSettings, store_nodes

log = logging.getLogger(__name__)


class CorruptRecordError(ResoMapError):
    """A run's record file exists but is not a readable record."""


class FailedAfterTraining(ResoMapError):
    """Training finished and its checkpoint is kept, but testing or writing the record failed."""


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What one job did: its identity, ``finished`` / ``skipped`` (and the objective)."""

    identity: RunIdentity
    status: str
    objective: float | None


def run_command(cfg: DictConfig) -> list[str]:
    """This run as a single ``python -m resomap.train`` command (for resume hints)."""
    from hydra.core.hydra_config import HydraConfig

    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    kept = [item for item in overrides if not item.startswith(("ckpt_path=", "hydra/launcher="))]
    return [Path(sys.executable).name, "-m", "resomap.train", *kept]


def tracking_settings(cfg: DictConfig, identity: RunIdentity | None = None) -> TrackingSettings:
    """What tracking needs of this run (``identity``) or sweep (no identity): its stores (the MLflow
    and DagsHub logger nodes, resolved), folders, and a run's params and redacted config."""
    stores = store_nodes(cfg.get("logger"))
    # The config is resolved only when a store will hold it.
    config = build.run_config(cfg) if identity is not None and stores else None
    return TrackingSettings.of(stores, cfg.paths.checkpoint_dir, cfg.paths.results_dir, identity, config)


def _skip(cfg: DictConfig, identity: RunIdentity, settings: TrackingSettings) -> float | None | bool:
    """The objective of an equivalent finished run (False when there is none). A local record
    is mirrored to a tracking store that does not have it as FINISHED yet; a run finished
    elsewhere brings its record back from the store into this identity's run folder."""
    try:
        done = records.find_finished(cfg.paths.results_dir, identity)
    except records.InvalidRecord as error:
        retrain = shlex.join([*run_command(cfg), "skip_completed=false"])
        raise CorruptRecordError(
            f"The record of run {identity.run_name} is damaged ({error}). It cannot be skipped as "
            f"finished nor reported. Retrain this run (its record is replaced when the run ends) with: "
            f"{retrain}") from error
    if done is not None:
        log.info("Skipping %s: finished with the same configuration (%s)", identity.run_name,
                 records.record_path(cfg.paths.results_dir, identity))
        # Entering the context is the work: each store is made to hold the run FINISHED (a kill
        # may have come between the record and the end of its MLflow run, or the store is new).
        with mirror.tracked_run(settings, identity, record=done):
            pass
        return done.objective(cfg.objective)
    found = mirror.find_finished(settings, identity)
    if found is not None:
        fetched = mirror.fetch_record(settings, found, records.run_dir(cfg.paths.results_dir, identity))
        where = (f"its record is now in {fetched}" if fetched else
                 "its record is not in the store, so this results folder's report leaves it out")
        log.info("Skipping %s: finished with the same configuration (MLflow run %s); %s", identity.run_name,
                 found.info.run_id, where)
        if fetched:
            try:
                record = records.read_record(fetched)
                record_write.write_record(cfg.paths.results_dir, record)  # the view
                return record.objective(cfg.objective)
            except records.InvalidRecord as error:
                log.warning("The record fetched from MLflow run %s is not usable: %s", found.info.run_id,
                            error)
        return None
    return False


def run(cfg: DictConfig) -> float | None:
    """Train and test one model at one resolution; return its objective (``cfg.objective``, a
    validation metric of the best checkpoint's epoch, for a sweeper)."""
    return run_outcome(cfg).objective


def run_outcome(cfg: DictConfig) -> Outcome:
    """:func:`run`, saying which identity ran and whether it was trained or skipped."""
    started = time.perf_counter()
    validate_config(cfg)
    identity = build.identify(cfg)
    settings = tracking_settings(cfg, identity)
    folder = identity.checkpoint_dir(cfg.paths.checkpoint_dir)
    # The processes that DDP starts for ranks above 0 re-run this command: they join the run
    # that rank 0 holds the lock of, and leave skip checks and checkpoint files to it.
    leader = rank_zero_only.rank == 0
    with run_lock(folder.parent, identity.run_name) if leader else contextlib.nullcontext():
        if leader:
            _remove_temporary_files(cfg, identity, folder)
        if leader and cfg.skip_completed and (objective := _skip(cfg, identity, settings)) is not False:
            return Outcome(identity, "skipped", objective)
        ckpt_path = checkpoint.resolve_resume(cfg.ckpt_path, folder, identity, run_command(cfg),
                                              keep_aside_allowed=leader)
        if leader:
            checkpoint.write_identity(folder, identity)
        return Outcome(identity, "finished", _train(cfg, identity, settings, folder, ckpt_path, started))


def _remove_temporary_files(cfg: DictConfig, identity: RunIdentity, folder: Path) -> None:
    """What a kill mid-write left in this run's folders: this run is their only writer, and it
    holds the lock."""
    results_dir = Path(cfg.paths.results_dir)
    record_write.remove_temporary_files(folder, records.run_dir(results_dir, identity))
    record_write.remove_temporary_files(results_dir / records.TEST_RESULTS,
                                   prefixes=(f"{identity.run_name}.json.", f"{identity.run_name}.npz."))


def _train(cfg: DictConfig, identity: RunIdentity, settings: TrackingSettings, folder: Path,
           ckpt_path: str | None, started: float) -> float | None:
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = build.build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup("fit")
    timing = {"setup_sec": time.perf_counter() - started,
              "cache_sec": datamodule.timing.get("cache_load_or_build_sec", 0.0)}
    output_dir = records.run_dir(cfg.paths.results_dir, identity)

    def attempt(plan: BatchPlan) -> records.RunRecord | None:
        """One fit and test with ``plan``'s batch sizes; every attempt starts from fresh objects."""
        datamodule.batch_size, datamodule.eval_batch_size = plan.batch_size, plan.eval_batch_size
        loggers = mirror.build_loggers((cfg.get("logger") or {}).values())
        built = build.build(cfg, identity, datamodule, folder, output_dir, loggers,
                            plan.accumulate_grad_batches)
        built.exporter.add_section("batch", plan.section())
        built.exporter.add_section("skipped_images", datamodule.skipped_images)
        try:
            with mirror.tracked_run(settings, identity, loggers=loggers,
                                    resuming=ckpt_path is not None) as tracked:
                clock = time.perf_counter()
                call_trainer(built.trainer, "fit", model=built.module, datamodule=datamodule,
                             ckpt_path=ckpt_path, weights_only=True)
                timing["fit_sec"] = time.perf_counter() - clock
                try:
                    record = _test_and_commit(cfg, built, timing, started)
                    if record is not None:
                        tracked.finish(record)
                    return record
                except (KeyboardInterrupt, SIGTERMException):
                    raise
                except Exception as error:
                    raise _after_training(cfg, identity, folder, error) from error
        finally:
            # Hydra's basic launcher runs every job of a sweep in this process.
            del built
            free_accelerator_memory()

    plan = BatchPlan(cfg.data.batch_size, cfg.data.eval_batch_size, cfg.trainer.accumulate_grad_batches)
    record = run_with_oom_retries(attempt, plan, OmegaConf.select(cfg, "oom.min_batch_size", default=1))
    return None if record is None else record.objective(cfg.objective)


def _test_and_commit(cfg: DictConfig, built: build.Built, timing: dict[str, float],
                     started: float) -> records.RunRecord | None:
    """Test the best checkpoint and write the record (None on the ranks of a multi-process fit
    that do not test)."""
    trainer, module, exporter = built.trainer, built.module, built.exporter
    exporter.add_section("compile", module.compile_report())
    if trainer.world_size > 1:
        exporter.add_section("distributed", distributed.section(trainer))
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    tester = distributed.trainer_for_test(trainer, built.tester)
    if tester is None:  # another rank of a multi-process fit: global rank 0 tests alone
        return None
    clock = time.perf_counter()
    call_trainer(tester, "test", model=module, datamodule=built.datamodule, ckpt_path=best or None,
                 weights_only=True)
    timing["test_sec"] = time.perf_counter() - clock  # profiling and explanations included
    return _commit(cfg, exporter, timing, started)


def _after_training(cfg: DictConfig, identity: RunIdentity, folder: Path, error: Exception) -> Exception:
    """The error of a run that failed after its training ended: one paragraph with the command
    that finishes it without retraining (its checkpoints are kept)."""
    if isinstance(error, records.InvalidRecord) or not (folder / checkpoint.LAST).is_file():
        return error
    finish = shlex.join([*run_command(cfg), "ckpt_path=last"])
    cause = str(error) if isinstance(error, ResoMapError) else f"{type(error).__name__}: {error}"
    return FailedAfterTraining(
        f"Run {identity.run_name} finished training (checkpoints kept in {folder}) but failed afterwards: "
        f"{cause} Once that is fixed, finish the run without retraining (it tests the kept best "
        f"checkpoint and writes the record) with: {finish}")


def _commit(cfg: DictConfig, exporter, timing: dict[str, float], started: float) -> records.RunRecord:
    """Write the test predictions, then the record: the run's commit point."""
    record = exporter.record
    sections = {"profile": (record.profiling or {}).get("seconds"),
                "explain": (record.explain or {}).get("seconds")}
    timing = {**timing, **{f"{name}_sec": value for name, value in sections.items() if value is not None},
              "total_sec": time.perf_counter() - started}
    record = dataclasses.replace(record, timing=timing)
    labels, probabilities = exporter.predictions
    folder = records.run_dir(cfg.paths.results_dir, record)
    try:
        record_write.write_predictions(folder / records.PREDICTIONS_FILE, labels, probabilities,
                                  identity=record.identity)
        path = record_write.write_record(cfg.paths.results_dir, record)
    except OSError as error:
        if checkpoint.disk_full(error):
            raise checkpoint.DiskFullError(checkpoint.disk_full_message(
                folder, "paths.results_dir", "finish the run as said below")) from error
        raise
    log.info("Record written to %s", path)
    return record
