"""Where the configs are, the OmegaConf resolvers ``conf/`` uses, and how a run is named."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from resomap.config_schema import register_schema

# The data set whose result files keep the seed study's bare names, ``{model}_{res}.json``;
# runs on any other data set get ``--{data name}`` appended.
PRIMARY_DATA = "synthetic"


def conf_dir() -> Path:
    """The project's config folder: ``conf/`` of a clone, shipped as the package ``resomap.conf``."""
    from importlib.resources import files

    return Path(str(files("resomap.conf")))


def seed_suffix(seed: int) -> str:
    """``""`` for the default seed 0 (the seed study's file names), ``_seed{N}`` otherwise."""
    return "" if int(seed) == 0 else f"_seed{int(seed)}"


def run_name(model: str, res: int, seed: int = 0, data: str = PRIMARY_DATA) -> str:
    """``{model}_{res}``, ``_seed{N}`` for seeds other than 0, ``--{data}`` off the primary data set."""
    suffix = "" if str(data) == PRIMARY_DATA else f"--{data}"
    return f"{model}_{res}{seed_suffix(seed)}{suffix}"


def folder_name(path: str) -> str:
    """The last component of ``path``: an image folder's data set name."""
    return Path(str(path)).expanduser().resolve().name


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``: config keys as dotted paths."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def per_res(key: str, *, _root_: DictConfig) -> object:
    """``resolution[<res>][key]``, else ``resolution.default[key]``: settings that depend on size."""
    presets = _root_.resolution
    own = presets.get(str(_root_.res)) or {}
    return own[key] if key in own else presets.default[key]


def study_looks(min_seeds: int, max_seeds: int) -> int:
    """The looks of an adaptive study that may decide: one per seed count, min_seeds..max_seeds."""
    return int(max_seeds) - int(min_seeds) + 1


def register_resolvers() -> None:
    for name, function in (("resomap.run_name", run_name), ("resomap.folder_name", folder_name),
                           ("resomap.per_res", per_res), ("resomap.looks", study_looks)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, function)


# At import, not from a function an entry point must remember to call: every entry point that
# composes conf/train.yaml (resomap.train, the resomap command's preflight, the tests' compose)
# imports resomap, and so this module, before Hydra composes; train.yaml's defaults list names it.
register_schema()
