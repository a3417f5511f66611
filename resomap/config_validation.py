"""Checks a run's config before any work, so a typo costs seconds and one clear message.

Hydra already refuses an unknown config-group option (``model=foo``: "Could not find
'model/foo'" with the available options) and, through the schema of :mod:`resomap.config_schema`,
a value of the wrong type for one of train.yaml's own keys (``res=abc``, ``seed=1.5``) while it
composes: :func:`schema_problem` says that refusal as one sentence. The rest is checked here: the
ranges (a positive size, a known model, a Lightning precision, a ``val_*`` objective, ...) and the
types of the group keys the schema leaves open (``data.batch_size``, ``optimizer.lr``, ...).
This module is the one place saying what is valid.
"""

from __future__ import annotations

import re
import typing
from importlib import resources
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException, ValidationError

from resomap.config_schema import schema_field
from resomap.errors import ConfigError

# What ``data.on_bad_image`` may say: stop at the first unreadable image, or leave it out and list it.
ON_BAD_IMAGE = ("error", "skip")
# Keys the schema types and that must also be in a range (checked in config_problems): what a
# schema refusal says is valid for them.
SCHEMA_VALID = {"res": "a positive integer number of pixels", "oom.min_batch_size": "a positive integer",
                "objective": "the name of a validation metric, e.g. val_balanced_accuracy"}
# The schema's types, as a sentence says them.
TYPE_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
# How OmegaConf's ValidationError quotes the refused value and its type (omegaconf/nodes.py).
REFUSED_VALUE = (re.compile(r"Value '(?P<value>.*)' of type '(?P<type>\w+)'", re.S),
                 re.compile(r"Value '(?P<value>.*)' is not a valid bool \(type (?P<type>\w+)\)", re.S),
                 re.compile(r"Cannot convert '(?P<type>\w+)' to string: '(?P<value>.*)'", re.S))


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


def schema_problem(error: BaseException) -> str | None:
    """The sentence for a value the schema refused while Hydra composed (``error`` or the error
    behind it is OmegaConf's ValidationError): the key, the value and what is valid. None for
    any other error."""
    found: BaseException | None = error
    while found is not None and not isinstance(found, ValidationError):
        found = found.__cause__ or found.__context__
    if found is None or not found.full_key:
        return None
    key, message = str(found.full_key), str(found.msg)
    kind, optional = schema_field(key)
    if kind is Any:
        return None  # a key the schema leaves open: not its refusal
    valid = SCHEMA_VALID.get(key) or TYPE_WORDS.get(kind, f"a {getattr(kind, '__name__', kind)}")
    if optional:
        valid += " or null"
    for pattern in REFUSED_VALUE:
        match = pattern.search(message)
        if match:
            value = repr(match["value"]) if match["type"] == "str" else match["value"]
            return f"{key}={value} must be {valid}."
    if "Optional" in message or "None" in message:
        return f"{key}=null is not valid: {key} must be {valid}."
    return f"{key} must be {valid} ({message.splitlines()[0]})."


def _is_positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def config_problems(cfg: DictConfig, check_precision: bool = True) -> list[str]:
    """One sentence per invalid value, naming the key, the value and what is valid.

    ``check_precision=False`` skips the one check that imports Lightning (and so torch): the
    ``resomap`` command checks every job's values that way before anything heavy is loaded.
    ``cfg`` is composed with the schema, so train.yaml's own keys have their types (an
    interpolation that resolves to a wrong type is refused by the schema here).
    """
    try:
        OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as error:
        return [schema_problem(error) or f"{error.full_key or 'config'}: {str(error).splitlines()[0]}"]
    problems = []
    models = available_models()
    name = cfg.model.get("name")
    if name not in models:
        problems.append(f"model.name={name!r} is not a known model; available: {', '.join(models)}.")
    res, min_size = cfg.res, cfg.model.get("min_size", 1)
    grid = ", ".join(key for key in cfg.get("resolution", {}) if key != "default")
    if res <= 0:
        problems.append(f"res={res!r} must be a positive integer number of pixels "
                        f"(the study's grid: {grid}).")
    elif res < min_size:
        problems.append(f"res={res} is below the smallest input model={name} supports "
                        f"(model.min_size={min_size}); use res>={min_size}.")
    min_batch_size = OmegaConf.select(cfg, "oom.min_batch_size")
    if min_batch_size is not None and min_batch_size <= 0:
        problems.append(f"oom.min_batch_size={min_batch_size} must be a positive integer.")
    # Group keys: the schema leaves the group nodes open (resomap.config_schema), so their
    # types are checked here too.
    for key in ("data.batch_size", "data.eval_batch_size", "trainer.max_epochs",
                "trainer.accumulate_grad_batches"):
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
    if not re.fullmatch(r"val_[a-z0-9_]+", objective):
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
