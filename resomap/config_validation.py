"""Checks a run's config before any work, so a typo costs seconds and one clear message.

Hydra already refuses an unknown config-group option (``model=foo``: "Could not find
'model/foo'" with the available options); this covers the values Hydra cannot judge.
"""

from __future__ import annotations

import re
import typing
from importlib import resources
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from resomap.errors import ConfigError

# What ``data.on_bad_image`` may say: stop at the first unreadable image, or leave it out and list it.
ON_BAD_IMAGE = ("error", "skip")


def lightning_precisions() -> list[str]:
    """Every ``Trainer(precision=...)`` value Lightning accepts, from its own type alias."""
    from lightning.fabric.connector import _PRECISION_INPUT

    def flatten(alias: Any) -> list[Any]:
        return [value for arg in typing.get_args(alias)
                for value in (flatten(arg) if typing.get_origin(arg) else [arg])]

    return list(dict.fromkeys(str(value) for value in flatten(_PRECISION_INPUT)))


def available_models() -> list[str]:
    """Options of the ``model`` config group, including any added through Hydra's search path."""
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        return sorted(GlobalHydra.instance().config_loader().get_group_options("model"))
    # The shipped configs (resomap.conf, conf/ in a clone) when no Hydra app is running.
    shipped = resources.files("resomap.conf").joinpath("model").iterdir()
    return sorted(path.name.removesuffix(".yaml") for path in shipped if path.name.endswith(".yaml"))


def _is_positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def config_problems(cfg: DictConfig, check_precision: bool = True) -> list[str]:
    """One sentence per invalid value, naming the key, the value and what is valid.

    ``check_precision=False`` skips the one check that imports Lightning (and so torch): the
    ``resomap`` command checks every job's values that way before anything heavy is loaded.
    """
    try:
        OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as error:
        return [f"{error.full_key or 'config'}: {str(error).splitlines()[0]}"]
    problems = []
    models = available_models()
    name = cfg.model.get("name")
    if name not in models:
        problems.append(f"model.name={name!r} is not a known model; available: {', '.join(models)}.")
    res, min_size = cfg.res, cfg.model.get("min_size", 1)
    grid = ", ".join(key for key in cfg.get("resolution", {}) if key != "default")
    if not _is_positive_int(res):
        problems.append(f"res={res!r} must be a positive integer number of pixels "
                        f"(the study's grid: {grid}).")
    elif res < min_size:
        problems.append(f"res={res} is below the smallest input model={name} supports "
                        f"(model.min_size={min_size}); use res>={min_size}.")
    for key in ("data.batch_size", "data.eval_batch_size", "trainer.max_epochs",
                "trainer.accumulate_grad_batches", "oom.min_batch_size"):
        value = OmegaConf.select(cfg, key)
        if value is not None and not _is_positive_int(value):
            problems.append(f"{key}={value!r} must be a positive integer.")
    lr = OmegaConf.select(cfg, "optimizer.lr")
    if lr is not None and not (_is_number(lr) and lr > 0):
        problems.append(f"optimizer.lr={lr!r} must be a positive number (e.g. optimizer.lr=1e-3).")
    decay = OmegaConf.select(cfg, "optimizer.weight_decay")
    if decay is not None and not (_is_number(decay) and decay >= 0):
        problems.append(f"optimizer.weight_decay={decay!r} must be a number >= 0.")
    objective = cfg.get("objective", "val_balanced_accuracy")
    if not (isinstance(objective, str) and re.fullmatch(r"val_[a-z0-9_]+", objective)):
        problems.append(f"objective={objective!r} must name a validation metric, e.g. val_balanced_accuracy "
                        "or val_loss: a sweeper that chooses on test images leaks them into the result "
                        "reported on them.")
    precisions = lightning_precisions() if check_precision else [str(cfg.trainer.precision)]
    if str(cfg.trainer.precision) not in precisions:
        problems.append(f"trainer.precision={cfg.trainer.precision!r} is not a Lightning precision; "
                        f"valid: {', '.join(precisions)}.")
    on_bad_image = cfg.data.get("on_bad_image", "error")
    if on_bad_image not in ON_BAD_IMAGE:
        problems.append(f"data.on_bad_image={on_bad_image!r} is not valid; use one of "
                        f"{', '.join(ON_BAD_IMAGE)}.")
    return problems


def validate_config(cfg: DictConfig) -> None:
    """Raise ConfigError listing every invalid value of ``cfg``."""
    problems = config_problems(cfg)
    if problems:
        raise ConfigError("Invalid configuration: " + " ".join(problems))
