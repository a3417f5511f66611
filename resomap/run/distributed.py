"""How a run spreads over processes, and how a Hydra job starts them.

Training on several GPUs or machines is Lightning's ``ddp`` strategy (``trainer=ddp``).
``ddp`` starts its other ranks by re-running the command line, which is right for a
single run and wrong inside a Hydra multirun (rank 1 would re-run the whole sweep) or a
joblib/submitit worker (whose command line is not ours). So a multirun job that needs
several processes runs as a single run in a child process, where ``ddp`` works as in any
single run. On SLURM (and torchrun) the scheduler starts one process per rank and the
job runs in place.

A job is placed from :class:`JobSettings` (built by :mod:`resomap.sweep` from the composed
config); what the run must use instead of the composed values (``ckpt_path=last`` for a requeued
SLURM job, ``trainer.sync_batchnorm=false`` for DDP on CPU) comes back as :attr:`Placement.changes`,
never written into the config.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shlex
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.fabric.plugins.environments import (
    LightningEnvironment,
    SLURMEnvironment,
    TorchElasticEnvironment,
)
from lightning.pytorch.utilities.exceptions import SIGTERMException

from resomap.device import device_count as devices_per_node
from resomap.device import uses_cuda
from resomap.errors import ResoMapError
from resomap.run import record as results
from resomap.secret_overrides import SecretOverrideError, overrides_without_secrets

log = logging.getLogger(__name__)

# Strategies whose workers are started by multiprocessing: what they compute in the
# LightningModule and callbacks (history, fit time, profiles) stays in the workers.
SPAWN_WORDS = ("spawn", "fork", "notebook")


class DistributedConfigError(ResoMapError):
    """A combination of strategy, devices and launcher that cannot run correctly."""


class ChildRunError(ResoMapError):
    """A sweep job run in its own process failed; its error was printed by that process."""


@dataclasses.dataclass(frozen=True)
class JobSettings:
    """What placing a job needs of its config. ``trainer``: the trainer's ``strategy``,
    ``devices``, ``accelerator``, ``num_nodes`` and ``sync_batchnorm`` (those set), plain values."""

    trainer: Mapping[str, Any]
    run_name: str
    ckpt_path: str | None
    results_dir: Path
    objective: str
    gpu_per_job: bool = False


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where a job runs: in this process (no ``command``) or as a single run in a child process
    (``command``, on ``gpus``, from ``cwd``). ``changes``: dotted config keys and the values the
    run uses instead of the composed ones."""

    changes: dict[str, Any]
    command: ChildCommand | None = None
    gpus: str | None = None
    cwd: str = ""

    @property
    def in_place(self) -> bool:
        return self.command is None


def _strategy_name(trainer_cfg: Mapping[str, Any]) -> str:
    strategy = trainer_cfg.get("strategy", "auto")
    if isinstance(strategy, str):
        return strategy
    target = str(strategy.get("_target_", ""))
    return f"{target}(start_method={strategy.get('start_method', 'popen')})"


def device_count(trainer_cfg: Mapping[str, Any]) -> int:
    """Processes per node Lightning will start for ``trainer_cfg``."""
    return devices_per_node(trainer_cfg.get("devices", "auto"), trainer_cfg.get("accelerator", "auto"))


def world_size(trainer_cfg: Mapping[str, Any]) -> int:
    return device_count(trainer_cfg) * int(trainer_cfg.get("num_nodes", 1))


def is_multi_process(trainer_cfg: Mapping[str, Any]) -> bool:
    return world_size(trainer_cfg) > 1 and _strategy_name(trainer_cfg) != "single_device"


def scheduler_starts_ranks() -> bool:
    """True under SLURM ``srun`` or torchrun: one process per rank already exists."""
    return SLURMEnvironment.detect() or TorchElasticEnvironment.detect()


def check(trainer_cfg: Mapping[str, Any], multirun: bool) -> None:
    """Refuse what would silently lose results or duplicate work."""
    strategy = _strategy_name(trainer_cfg)
    if is_multi_process(trainer_cfg) and any(word in strategy for word in SPAWN_WORDS):
        raise DistributedConfigError(
            f"trainer.strategy={strategy} is not supported: spawn- and fork-based strategies run "
            "training in worker processes, and the per-epoch history, fit time and profiles that "
            "ResoMap keeps in the LightningModule and callbacks never come back to the process that "
            "writes the result. Use trainer=ddp (strategy ddp), which works for single runs and, "
            "started in one process per job, for sweeps with every launcher.")
    nodes = int(trainer_cfg.get("num_nodes", 1))
    if multirun and nodes > 1 and not scheduler_starts_ranks():
        raise DistributedConfigError(
            f"trainer.num_nodes={nodes} in a multirun started on one machine: a sweep job cannot start "
            "processes on other machines. Use hydra/launcher=slurm (SLURM starts every rank on "
            "trainer.num_nodes nodes), or train one run at a time with torchrun or your scheduler; "
            "trainer.num_nodes=1 trains on this machine's devices.")



def cpu_sync_batchnorm_off(trainer_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """``trainer.sync_batchnorm`` off for DDP on CPU, where torch's SyncBatchNorm cannot run."""
    if trainer_cfg.get("sync_batchnorm") and not uses_cuda(trainer_cfg.get("accelerator", "auto")):
        log.info("trainer.sync_batchnorm=true needs CUDA; DDP on CPU keeps per-process BatchNorm")
        return {"trainer.sync_batchnorm": False}
    return {}


def resume_if_requeued(settings: JobSettings) -> dict[str, Any]:
    """``ckpt_path=last`` for a SLURM job requeued after preemption or timeout: it resumes from its
    last checkpoint.

    Submitit resubmits the job with the same overrides; ``SLURM_RESTART_COUNT`` is how
    the job knows it ran before.
    """
    if settings.ckpt_path is None and int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) > 0:
        log.info("SLURM requeued this job (restart %s): resuming %s with ckpt_path=last",
                 os.environ["SLURM_RESTART_COUNT"], settings.run_name)
        return {"ckpt_path": "last"}
    return {}


def assigned_gpus(gpu_per_job: bool, devices: Any, job_num: int) -> str | None:
    """``CUDA_VISIBLE_DEVICES`` for job ``job_num`` when ``gpu_per_job`` is on: the
    ``devices`` (``trainer.devices``) GPUs of slot ``job_num % (GPUs // devices)``. None with
    fewer than two GPUs (nothing to share, so a no-op on CPU) or when off."""
    if not gpu_per_job:
        return None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    gpus = [item for item in visible.split(",") if item] if visible is not None else [
        str(index) for index in range(torch.cuda.device_count())]
    if len(gpus) < 2:
        return None
    if not isinstance(devices, int) or not 0 < devices <= len(gpus):
        raise DistributedConfigError(
            f"gpu_per_job=true gives each job trainer.devices GPUs out of the {len(gpus)} visible "
            f"({','.join(gpus)}), so trainer.devices must be a number from 1 to {len(gpus)}; it is "
            f"{devices!r}. Use trainer=gpu (1 GPU per job) or trainer=ddp trainer.devices=N.")
    slot = job_num % (len(gpus) // devices)
    return ",".join(gpus[slot * devices:(slot + 1) * devices])


class ChildCommand(list):
    """The argv of a child run, and in ``env`` the values moved out of it (secrets).

    A process's argv is readable by every user of the machine (``ps``), its environment only by
    its owner: an override holding a secret reaches the child as ``key=${oc.env:RESOMAP_SECRET_...}``
    with the value in ``env``.
    """

    def __init__(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        super().__init__(argv)
        self.env = dict(env or {})


def child_command(hydra_cfg: Any) -> ChildCommand:
    """This job as a single run of ``resomap.train`` writing into the job's own folder."""
    command = [sys.executable, "-m", "resomap.train", f"--config-name={hydra_cfg.job.config_name}"]
    for source in hydra_cfg.runtime.config_sources:
        if source.provider == "main" and source.schema == "file":
            command.append(f"--config-path={source.path}")
        elif source.provider == "command-line" and source.schema == "file":
            command.append(f"--config-dir={source.path}")
    try:
        overrides, env = overrides_without_secrets(list(hydra_cfg.overrides.task))
    except SecretOverrideError as error:
        raise DistributedConfigError(str(error)) from error
    return ChildCommand([*command, *overrides, f'hydra.run.dir="{hydra_cfg.runtime.output_dir}"',
                         "hydra.output_subdir=null"], env)


# How long an interrupted job waits for its child to save the interrupt checkpoint and end its
# MLflow run (subprocess.run would kill it after 0.25 s).
CHILD_STOP_SECONDS = 300


def run_in_child(settings: JobSettings, placement: Placement) -> float | None:
    """Run ``placement``'s command and return the objective of the run it did (None if skipped
    elsewhere).

    The values a :class:`ChildCommand` moved out of its argv reach the child in its environment.
    On Ctrl-C (which the terminal sends to the child too) or SIGTERM (forwarded) this waits for
    the child to save its interrupt checkpoint and end its MLflow run as KILLED, then stops.
    """
    import signal

    from resomap.run.job import read_job

    command = placement.command
    env = {**os.environ, **getattr(command, "env", {})}
    if placement.gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = placement.gpus
    output_dir = HydraConfig.get().runtime.output_dir
    child = subprocess.Popen(list(command), env=env, cwd=placement.cwd)
    try:
        returncode = child.wait()
    except BaseException as stop:
        if isinstance(stop, SIGTERMException):
            child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=CHILD_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            log.error("Run %s did not stop within %d s; killing it", settings.run_name, CHILD_STOP_SECONDS)
            child.kill()
            child.wait()
        raise
    if returncode in (130, 143, -2, -15):
        raise SIGTERMException() if returncode in (143, -15) else KeyboardInterrupt()
    if returncode != 0:
        raise ChildRunError(
            f"Run {settings.run_name} failed in its own process (exit status {returncode}); its "
            f"error is printed above and logged in {output_dir}.")
    job = read_job(output_dir)
    if job is None or not job["identity"]:
        return None
    path = results.record_path(settings.results_dir, job["identity"])
    if not path.is_file():
        return None
    return results.read_record(path).objective(settings.objective)


def place(settings: JobSettings) -> Placement:
    """How this Hydra job runs: in this process, or as a single run in a child process.

    Raises :class:`DistributedConfigError` for combinations that cannot run correctly, before
    anything starts, so a sweep stops at its first job instead of failing every job.
    """
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    check(settings.trainer, multirun)
    changes = resume_if_requeued(settings)
    in_place = not multirun or scheduler_starts_ranks()
    gpus = None if in_place else assigned_gpus(settings.gpu_per_job, settings.trainer.get("devices"),
                                               int(hydra_cfg.job.num))
    if in_place or (gpus is None and not is_multi_process(settings.trainer)):
        return Placement({**changes, **cpu_sync_batchnorm_off(settings.trainer)})
    command = child_command(hydra_cfg)
    launcher = hydra_cfg.runtime.choices.get("hydra/launcher", "basic")
    log.info("Job %s (%s launcher, %d processes%s) runs in its own process: %s", settings.run_name, launcher,
             world_size(settings.trainer), f", CUDA_VISIBLE_DEVICES={gpus}" if gpus else "",
             shlex.join(command))
    return Placement(changes, command, gpus, hydra_cfg.runtime.cwd)


def section(trainer: pl.Trainer) -> dict[str, Any]:
    """The record's ``distributed`` section of a multi-process fit."""
    batch_size = getattr(trainer.datamodule, "batch_size", None)
    return {"strategy": type(trainer.strategy).__name__, "world_size": trainer.world_size,
            "num_nodes": trainer.num_nodes,
            "effective_batch_size":
                batch_size and batch_size * trainer.world_size * trainer.accumulate_grad_batches,
            "test_devices": 1}


def trainer_for_test(trainer: pl.Trainer, build: Callable[..., pl.Trainer]) -> pl.Trainer | None:
    """The trainer that tests: ``trainer`` after a one-process fit; after a multi-process fit, a
    one-device trainer made by ``build`` on global rank 0, and None on the other ranks.

    Under DDP, Lightning's DistributedSampler pads the test set so every rank gets equal
    batches (some images are counted twice) and each rank keeps only its share of the
    predictions; testing on one device, as Lightning's own warning advises, keeps the
    metrics and the saved predictions exact.
    """
    if trainer.world_size == 1:
        return trainer
    # Every rank leaves the process group, so no later collective (a torchmetrics sync) waits for them.
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    if not trainer.is_global_zero:
        return None
    return build(devices=1, num_nodes=1, strategy="auto", sync_batchnorm=False,
                 plugins=[LightningEnvironment()])
