"""OmegaConf resolvers used by ``conf/`` and the run identity derived from a config."""

from __future__ import annotations

import hashlib
import json

from omegaconf import DictConfig, OmegaConf


def seed_suffix(seed: int) -> str:
    """``""`` for the default seed 0 (the seed study's file names), ``_seed{N}`` otherwise."""
    return "" if int(seed) == 0 else f"_seed{int(seed)}"


def seed_dir(seed: int) -> str:
    return "" if int(seed) == 0 else f"/seed{int(seed)}"


def per_res(key: str, *, _root_: DictConfig) -> object:
    """``resolution[<res>][key]``, else ``resolution.default[key]``: settings that depend on size."""
    presets = _root_.resolution
    own = presets.get(str(_root_.res)) or {}
    return own[key] if key in own else presets.default[key]


def register_resolvers() -> None:
    for name, function in (("resomap.seed_suffix", seed_suffix), ("resomap.seed_dir", seed_dir),
                           ("resomap.per_res", per_res)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, function)


# Keys of a run's config that decide what is trained; anything else (paths, logging,
# ckpt_path, workers) may change without making a finished run different.
TRAINING_KEYS = ("model", "res", "optimizer", "scheduler", "seed", "channels_last")
TRAINING_TRAINER_KEYS = ("max_epochs", "min_epochs", "gradient_clip_val", "accumulate_grad_batches",
                         "limit_train_batches", "limit_val_batches", "limit_test_batches")
NON_TRAINING_DATA_KEYS = ("num_workers", "pin_memory", "root", "eval_batch_size", "cache_dir",
                          "device_cache")


def training_config(cfg: DictConfig) -> dict:
    """The part of ``cfg`` that determines the trained model, as plain containers."""
    container = OmegaConf.to_container(cfg, resolve=True)
    selected = {key: container.get(key) for key in TRAINING_KEYS}
    selected["trainer"] = {key: container["trainer"].get(key) for key in TRAINING_TRAINER_KEYS}
    selected["data"] = {key: value for key, value in container["data"].items()
                        if key not in NON_TRAINING_DATA_KEYS}
    return selected


def config_fingerprint(cfg: DictConfig, data_fingerprint: str) -> str:
    """Hash of the training config and the data: equal fingerprints mean an equivalent run."""
    payload = json.dumps({"config": training_config(cfg), "data": data_fingerprint},
                         sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
