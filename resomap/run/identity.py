"""The identity of a run: what makes two runs the same run, and everything derived from it.

A run is the same run when it trains the same model, at the same resolution, with the same
seed, on the same data (name and content fingerprint) and with the same training config.
The identity decides the run's name, its result file, its checkpoint folder, its MLflow tags,
whether a finished run is skipped and whether a checkpoint may be resumed. Nothing else in
ResoMap derives those things on its own.

What counts as training config is spelled out below (:data:`IGNORED`): settings that cannot
change the trained model (data pipeline, workers, caches, compile, paths, loggers, profiling,
explanations) are left out, so changing them never retrains a finished run; anything else
(model, optimiser, scheduler, epochs, batch, effective batch over devices x nodes,
precision, strategy, augmentation, early stopping, best-checkpoint rule) is in.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from resomap.config import flatten, run_name
from resomap.device import device_count, resolve_precision
from resomap.tracking.redact import redact_config

IDENTITY_FILE = "identity.json"

# Keys of a composed config that cannot change what is trained (dotted paths).
IGNORED = {
    "data": ("root", "name", "num_workers", "pin_memory", "eval_batch_size", "cache_dir", "pipeline",
             "device_cache", "cache_workers", "cache_sizes", "on_bad_image", "generator", "validation_cache",
             "_target_"),
    "model": ("compile", "min_size"),
    # Callbacks that only observe a run: checkpoint writers, profiling, result export, explanations.
    "callbacks": ("last_checkpoint", "profile", "result_export", "explain"),
}
TRAINER_KEYS = ("max_epochs", "min_epochs", "max_steps", "gradient_clip_val", "gradient_clip_algorithm",
                "accumulate_grad_batches", "limit_train_batches", "limit_val_batches",
                "limit_test_batches", "val_check_interval", "check_val_every_n_epoch", "sync_batchnorm")


def _strategy(trainer: Mapping[str, Any]) -> str:
    strategy = trainer.get("strategy", "auto")
    return strategy if isinstance(strategy, str) else str(strategy.get("_target_", strategy))


def _world_size(trainer: Mapping[str, Any]) -> int:
    devices = device_count(trainer.get("devices", "auto"), trainer.get("accelerator", "auto"))
    return devices * int(trainer.get("num_nodes", 1) or 1)


def training_config(cfg: DictConfig) -> dict[str, Any]:
    """The part of ``cfg`` that determines the trained model, as plain containers."""
    container = OmegaConf.to_container(cfg, resolve=True)
    trainer = container["trainer"]
    data = {key: value for key, value in container["data"].items() if key not in IGNORED["data"]}
    world = _world_size(trainer)
    accumulate = int(trainer.get("accumulate_grad_batches") or 1)
    callbacks = {}
    for name, node in (container.get("callbacks") or {}).items():
        if name in IGNORED["callbacks"] or not isinstance(node, dict):
            continue
        callbacks[name] = {key: value for key, value in node.items() if key not in ("dirpath", "filename")}
    return {
        "model": {key: value for key, value in container["model"].items() if key not in IGNORED["model"]},
        "optimizer": container.get("optimizer"),
        "scheduler": container.get("scheduler"),
        "channels_last": container.get("channels_last"),
        "data": data,
        "trainer": {
            **{key: trainer.get(key) for key in TRAINER_KEYS if key in trainer},
            "precision": resolve_precision(trainer.get("precision"), trainer.get("accelerator", "auto")),
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
        training = redact_config(training_config(cfg))  # records and checkpoints keep it
        return cls(model=str(cfg.model.name), resolution=int(cfg.res), seed=int(cfg.seed),
                   data_name=str(cfg.data.get("name") or "data"), data_fingerprint=data_fingerprint,
                   training_hash=_digest(training), training=training)

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
        """``checkpoints/{run_name}/{digest}/``: a folder per identity, so configs never share one."""
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
