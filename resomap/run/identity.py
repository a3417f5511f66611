"""The identity of a run: what makes two runs the same run, and everything derived from it.

A run is the same run when it trains the same model (config and network source code), at the
same resolution, with the same seed, on the same data (name and content fingerprint) and with
the same training config. The identity decides the folder of everything the run writes (its
digest), its checkpoint folder, its MLflow tags, whether a finished run is skipped and whether a
checkpoint may be resumed. Nothing else in ResoMap derives those things on its own.

The training config is chosen by a deny-list: every key of ``model``, ``data``, ``trainer``,
``optimizer``, ``scheduler`` and ``callbacks`` is in it, except the few keys listed in
:data:`IGNORED`, which cannot change the trained weights (workers, caches, pipeline, paths,
loggers, profiling, explanations, progress bars, file names...). A key nobody thought of, such
as Lightning's ``fast_dev_run``, ``overfit_batches``, ``max_time`` or ``min_steps``, is therefore
in the identity, and a run cut short by it is never taken for the full run. Values are
normalised first: precision aliases (``32`` = ``32-true``, ``16`` = ``16-mixed``, ``16-mixed``
on a CPU = the ``bf16-mixed`` or ``32-true`` it runs) and trainer keys left at Lightning's default (absent =
set to the default). The identity is computed from the config as composed, before any
redaction, so a model key named ``key_dim`` is hashed with its value; loggers, tracking URIs
and paths are never part of it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.util
import inspect
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from resomap.config import flatten, run_name
from resomap.device import device_count, resolve_precision
from resomap.redact import redact_config

IDENTITY_FILE = "identity.json"

# Top-level config sections that decide the trained model; every other one (paths, logger,
# hydra, report, explain, oom, ckpt_path...) cannot change the weights.
SECTIONS = ("model", "data", "trainer", "optimizer", "scheduler", "callbacks")

# The deny-list: keys of those sections that cannot change the trained weights (dotted paths
# below the section). Everything else is in the identity.
IGNORED = {
    # root and name are the identity's own fields (name, content fingerprint); the rest are how
    # images reach the model (workers, caches, evaluation batches), never what it sees.
    "data": ("root", "name", "num_workers", "pin_memory", "persistent_workers", "prefetch_factor",
             "eval_batch_size", "cache_dir", "pipeline", "device_cache", "cache_workers", "cache_sizes",
             "on_bad_image", "generator", "validation_cache", "_target_", "image_size"),
    # name is the identity's own field; family is a label; compile only changes speed;
    # min_size is a validation bound.
    "model": ("name", "family", "compile", "min_size"),
    # Where and how Lightning runs and reports, not what it computes. devices, num_nodes and
    # accumulate enter as the effective batch size and world size below.
    "trainer": ("_target_", "default_root_dir", "accelerator", "devices", "num_nodes", "logger",
                "callbacks", "plugins", "enable_progress_bar", "enable_model_summary",
                "enable_checkpointing", "log_every_n_steps", "profiler", "benchmark", "deterministic",
                "detect_anomaly", "num_sanity_val_steps", "barebones", "inference_mode"),
    # Callbacks that only observe a run (checkpoint writers of the last state, profiling, record
    # export, explanations), and file-naming or logging keys of every callback.
    "callbacks": ("last_checkpoint", "profile", "result_export", "explain", "epoch_log"),
    "callbacks.*": ("dirpath", "filename", "verbose", "auto_insert_metric_name", "enable_version_counter",
                    "save_on_exception", "save_last", "log_rank_zero_only"),
}


def _strategy(trainer: Mapping[str, Any]) -> str:
    strategy = trainer.get("strategy", "auto")
    return strategy if isinstance(strategy, str) else str(strategy.get("_target_", strategy))


def _world_size(trainer: Mapping[str, Any]) -> int:
    devices = device_count(trainer.get("devices", "auto"), trainer.get("accelerator", "auto"))
    return devices * int(trainer.get("num_nodes", 1) or 1)


def normalised_precision(precision: Any, accelerator: str = "auto") -> str:
    """Lightning's unified name of ``precision`` (``32`` -> ``32-true``, ``16`` -> ``16-mixed``,
    ``bf16`` -> ``bf16-mixed``), with ``16-mixed`` off CUDA as the precision it runs."""
    from lightning.fabric.connector import _PRECISION_INPUT_STR_ALIAS_CONVERSION as ALIASES

    text = str(precision)
    text = str(ALIASES.get(text, ALIASES.get(precision, text))) if precision is not None else "32-true"
    return resolve_precision(text, accelerator)


@functools.cache
def _trainer_defaults() -> dict[str, Any]:
    """``lightning.pytorch.Trainer``'s default of each argument: a key set to it is the same run
    as a key left out (``+trainer.max_time=null``)."""
    import lightning.pytorch as pl

    return {name: parameter.default for name, parameter in inspect.signature(pl.Trainer).parameters.items()
            if parameter.default is not inspect.Parameter.empty}


def source_hash(target: str) -> str:
    """A hash of the source file of the module that defines ``target`` (``pkg.module.Class``):
    editing the network's code makes another run. Empty when no source file is found. Read each
    time (a few kilobytes), so an edit between two runs of one process is seen."""
    module = str(target)
    while module:
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            spec = None
        if spec is not None and spec.origin and Path(spec.origin).is_file():
            return hashlib.sha256(Path(spec.origin).read_bytes()).hexdigest()[:16]
        module = module.rpartition(".")[0]
    return ""


def _without(node: Mapping[str, Any], denied: tuple[str, ...]) -> dict[str, Any]:
    return {key: value for key, value in node.items() if key not in denied}


def training_config(cfg: DictConfig) -> dict[str, Any]:
    """The part of ``cfg`` that determines the trained model, as plain, normalised containers.

    Taken from the composed config before any redaction; logger and path settings are never in it.
    """
    container = OmegaConf.to_container(cfg, resolve=True)
    trainer = dict(container["trainer"])
    accelerator = str(trainer.get("accelerator", "auto"))
    world = _world_size(trainer)
    accumulate = int(trainer.get("accumulate_grad_batches") or 1)
    defaults = _trainer_defaults()
    kept_trainer = {key: value for key, value in _without(trainer, IGNORED["trainer"]).items()
                    if not (key in defaults and defaults[key] == value and key != "precision")}
    data = _without(container["data"], IGNORED["data"])
    callbacks = {}
    for name, node in (container.get("callbacks") or {}).items():
        if name in IGNORED["callbacks"] or not isinstance(node, dict):
            continue
        callbacks[name] = _without(node, IGNORED["callbacks.*"])
    model = _without(container["model"], IGNORED["model"])
    target = str((model.get("net") or {}).get("_target_", ""))
    if target:
        model["source"] = source_hash(target)
    return {
        "model": model,
        "optimizer": container.get("optimizer"),
        "scheduler": container.get("scheduler"),
        "data": data,
        "trainer": {
            **kept_trainer,
            "precision": normalised_precision(trainer.get("precision"), accelerator),
            "strategy": _strategy(trainer),
            "world_size": world,
            "effective_batch_size": int(data.get("batch_size") or 0) * world * accumulate,
        },
        "callbacks": callbacks,
    }


def _digest(payload: Any, length: int = 16) -> str:
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]



@dataclasses.dataclass(frozen=True)
class RunIdentity:
    """Who a run is. Equal identities: the same run (skip when finished, resume when not)."""

    model: str
    resolution: int
    seed: int
    data_name: str
    data_fingerprint: str
    training_hash: str
    # The hashed training config, kept for explaining differences; not part of equality.
    training: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False, hash=False,
                                                 repr=False)

    @classmethod
    def from_config(cls, cfg: DictConfig, data_fingerprint: str) -> RunIdentity:
        # Before any redaction: a model key named like a secret (key_dim) is a setting. Loggers,
        # tracking URIs and paths never enter the training config.
        # The hash is of the config as composed; the copy kept for records, checkpoints and tags
        # is redacted (a secret passed in a training key never reaches a file).
        training = training_config(cfg)
        return cls(model=str(cfg.model.name), resolution=int(cfg.res), seed=int(cfg.seed),
                   data_name=str(cfg.data.get("name") or "data"), data_fingerprint=data_fingerprint,
                   training_hash=_digest(training), training=redact_config(training))

    @property
    def digest(self) -> str:
        """One hash of the whole identity: the name of this run's checkpoint folder."""
        return _digest([self.model, self.resolution, self.seed, self.data_name, self.data_fingerprint,
                        self.training_hash])

    @property
    def run_name(self) -> str:
        """``{model}_{res}``, ``_seed{N}`` for seeds other than 0, ``--{data}`` off the primary data set."""
        return run_name(self.model, self.resolution, self.seed, self.data_name)

    def checkpoint_dir(self, checkpoints_root: str | Path) -> Path:
        """``checkpoints/{run_name}/{digest}/``: a folder per identity, so configs never share one
        (the run name only groups the folders for a reader)."""
        return Path(checkpoints_root) / self.run_name / self.digest

    def tags(self) -> dict[str, str]:
        """MLflow tags: equal tags mean the same run."""
        return {"model": self.model, "res": str(self.resolution), "seed": str(self.seed),
                "data": self.data_name, "data_fingerprint": self.data_fingerprint,
                "training_hash": self.training_hash, "identity": self.digest}

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "digest": self.digest, "run_name": self.run_name}

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> RunIdentity:
        fields = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in payload.items() if key in fields})

    def differences(self, other: RunIdentity, limit: int = 6) -> list[str]:
        """What differs from ``other``, as ``key: theirs -> mine`` (``other`` is the older run)."""
        changes = [f"{name}: {theirs} -> {mine}" for name, mine, theirs in (
            ("model", self.model, other.model), ("res", self.resolution, other.resolution),
            ("seed", self.seed, other.seed), ("data", self.data_name, other.data_name),
            ("data fingerprint", self.data_fingerprint, other.data_fingerprint)) if mine != theirs]
        mine, theirs = flatten(self.training), flatten(other.training)
        for key in sorted(set(mine) | set(theirs)):
            if mine.get(key) != theirs.get(key):
                changes.append(f"{key}: {theirs.get(key, '(unset)')} -> {mine.get(key, '(unset)')}")
        if not changes and self.training_hash != other.training_hash:
            changes.append(f"training config hash {other.training_hash} -> {self.training_hash}")
        return changes[:limit] + ([f"... and {len(changes) - limit} more"] if len(changes) > limit else [])
