"""Whether a checkpoint or a run record may be trusted, and the trained model of a record: the one
place of each, for every later reader (report, cross-resolution matrix, explain, bench) and for resume.

A checkpoint is loaded with ``weights_only=True`` (it cannot run code). A record is data: the network
is rebuilt from the project's own ``conf/model/<name>.yaml`` (a name Hydra lists, never a path), never
from a ``_target_`` found in a file, and every path built from a record is checked to stay in its root.
Nothing here imports training machinery (trainer, callbacks, checkpoint writing).
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from resomap.data.datamodule import ImageFolderDataModule
from resomap.errors import ResoMapError
from resomap.models.classifier import LitClassifier
from resomap.names import UnsafeName, contained, safe_name
from resomap.run.record import RunRecord

log = logging.getLogger(__name__)

LAST = "last.ckpt"
BEST = "best.ckpt"


class UntrustedCheckpointError(ResoMapError):
    """A checkpoint holds objects that loading with ``weights_only=True`` refuses."""


class UntrustedRecordError(UnsafeName):
    """A run record names code that is not one of the project's own models or data modules, or a
    name or path that would lead outside its folders."""


class CorruptCheckpointError(ResoMapError):
    """A checkpoint file cannot be read (truncated or not a checkpoint)."""


def untrusted_checkpoint(path: str | os.PathLike | None, error: BaseException) -> UntrustedCheckpointError:
    """The error for a checkpoint that ``weights_only=True`` refuses to unpickle."""
    return UntrustedCheckpointError(
        f"Refusing to load checkpoint {path}: it holds objects other than tensors and plain "
        "containers, and ResoMap loads checkpoints with weights_only=True so that a checkpoint "
        "cannot run code. Use a checkpoint written by ResoMap, or ckpt_path=null to train from "
        f"scratch. ({str(error).splitlines()[0]})")


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint on the CPU with ``weights_only=True``; a clear error when unreadable."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except pickle.UnpicklingError as error:
        raise untrusted_checkpoint(path, error) from error
    except Exception as error:
        raise CorruptCheckpointError(
            f"Checkpoint {path} cannot be read ({type(error).__name__}: {str(error).splitlines()[0]}): "
            "it is truncated or not a ResoMap checkpoint. Move it away and train this run from scratch "
            "with ckpt_path=null, or pass ckpt_path=<another checkpoint>.") from error



def config_options(group: str) -> list[str]:
    """The configs of ``group`` on the running command's search path (the project's configs plus
    a user's ``--config-dir``), as Hydra's own config repository lists them; the shipped configs
    when no Hydra application is running."""
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        return list(GlobalHydra.instance().config_loader().get_group_options(group))
    with initialize_config_module(config_module="resomap.conf", version_base="1.3"):
        return list(GlobalHydra.instance().config_loader().get_group_options(group))


def _project_node(group: str, name: object, source: str | Path | None = None) -> dict[str, Any]:
    """``{group}/{name}.yaml`` as the running command's search path has it, else from the shipped
    configs. ``name`` comes from a record: it must be a plain name (:func:`resomap.names.safe_name`)
    and one of the configs Hydra lists for the group, never a path that could lead to a file
    planted beside the results."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    try:
        name = safe_name(name, f"{group} name", source)
    except UnsafeName as error:
        raise UntrustedRecordError(str(error)) from error
    options = config_options(group)
    if name not in options:
        where = f" (in {source})" if source is not None else ""
        raise UntrustedRecordError(f"{group} {name!r}{where} is not one of the {group} configs on the config "
                                   f"search path ({', '.join(options)}).")
    if GlobalHydra.instance().is_initialized():
        return OmegaConf.to_container(compose(overrides=[f"+{group}={name}"])[group], resolve=False)
    with initialize_config_module(config_module="resomap.conf", version_base="1.3"):
        return OmegaConf.to_container(compose(overrides=[f"+{group}={name}"])[group], resolve=False)


def _checked_arguments(recorded: Mapping[str, Any], project: Mapping[str, Any], what: str,
                       trusted: Iterable[str] = ()) -> dict[str, Any]:
    """The recorded constructor arguments when the recorded ``_target_`` is the project's.

    Only plain values are taken (numbers, strings, booleans, lists of them): a nested
    ``_target_`` or any other object found in a record is refused, so nothing in a results
    folder can make ``instantiate`` call code.
    """
    if not isinstance(recorded, Mapping):
        raise UntrustedRecordError(f"{what} is not a mapping of constructor arguments")
    target = recorded.get("_target_")
    if target != project.get("_target_") and target not in set(trusted):
        raise UntrustedRecordError(f"{what} names _target_={target!r}, not the project's "
                                   f"{project.get('_target_')!r}")

    def plain(value: Any) -> bool:
        if isinstance(value, (list, tuple)):
            return all(plain(item) for item in value)
        return value is None or isinstance(value, (bool, int, float, str))

    arguments = {}
    for key, value in recorded.items():
        if not isinstance(key, str) or key.startswith("_"):
            continue
        if not plain(value) or (isinstance(value, str) and "${" in value):
            raise UntrustedRecordError(f"{what}.{key} is not a plain value")
        arguments[key] = value
    return {"_target_": target, **arguments}


def check_record_names(record: RunRecord, source: str | Path | None = None) -> None:
    """Refuse a record whose names could lead a reader outside its folders: model, data set and
    run names must be plain names, resolution and seed integers, the digest hexadecimal.
    Raises :class:`UntrustedRecordError` naming the field and ``source``."""
    where = f" in {source}" if source is not None else ""
    try:
        safe_name(record.identity.model, "model", source)
        safe_name(record.identity.data_name, "data set name", source)
        safe_name(record.run_name, "run name", source)
    except UnsafeName as error:
        raise UntrustedRecordError(str(error)) from error
    for field in ("resolution", "seed"):
        value = getattr(record.identity, field)
        if not isinstance(value, int) or isinstance(value, bool):
            raise UntrustedRecordError(f"{field} {value!r}{where} is not an integer.")
    digest = record.identity.digest
    if not isinstance(digest, str) or not digest or any(char not in "0123456789abcdef" for char in digest):
        raise UntrustedRecordError(f"identity digest {digest!r}{where} is not hexadecimal.")


def trusted_model_node(record: RunRecord, trusted: Iterable[str] = (),
                       source: str | Path | None = None) -> dict[str, Any]:
    """The network config of ``record``, rebuilt from the project's ``model/<name>.yaml``."""
    model = record.config.get("model") if isinstance(record.config, Mapping) else None
    model = model if isinstance(model, Mapping) else {}
    recorded_name = model.get("name", record.model)
    if recorded_name != record.model:
        raise UntrustedRecordError(f"config.model.name {recorded_name!r} differs from the record's model "
                                   f"{record.model!r}" + (f" in {source}" if source is not None else ""))
    project = _project_node("model", recorded_name, source)
    node = _checked_arguments(model.get("net") or {}, project["net"], "model.net", trusted)
    if "pretrained" in node:
        node["pretrained"] = False  # the checkpoint's weights replace them: never look for any
    return node


def checkpoint_path(record: RunRecord, checkpoints_root: str | Path) -> Path:
    """The record's best checkpoint, resolved and refused unless it lies inside ``checkpoints_root``."""
    check_record_names(record)
    try:
        # {run_name}/{digest}/best.ckpt below the root: a relative root (the default ./checkpoints)
        # must not be joined twice.
        return contained(checkpoints_root, record.identity.checkpoint_dir(Path()) / BEST)
    except UnsafeName as error:
        raise UntrustedRecordError(str(error)) from error


def load_trained(record: RunRecord, checkpoints_root: str | Path, checkpoint: str | Path | None = None,
                 trusted: Iterable[str] = (), source: str | Path | None = None) -> LitClassifier:
    """The trained model of ``record`` (its best checkpoint unless ``checkpoint`` is given), in
    eval mode on the CPU. Raises :class:`UntrustedRecordError` when the record names foreign code
    or a name or path that leaves its folder, ``FileNotFoundError`` when the checkpoint is not there."""
    check_record_names(record, source)
    node = trusted_model_node(record, trusted, source)
    path = Path(checkpoint) if checkpoint else checkpoint_path(record, checkpoints_root)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    saved = read_checkpoint(path)
    hparams = saved["hyper_parameters"]
    stored = hparams.get("identity") or {}
    if stored and stored.get("digest") != record.identity.digest:
        raise ResoMapError(f"{path} was written by run {stored.get('run_name')} with another "
                           f"configuration than the record of {record.run_name}.")
    # Lightning rebuilds the module from the hyperparameters the run saved (classes, class
    # weights, config, identity); given here is only what a checkpoint does not hold: the network,
    # built from the project's own config, and no optimizer. Weights only, as read above.
    net = instantiate(node, num_classes=hparams["num_classes"])
    module = LitClassifier.load_from_checkpoint(
        path, map_location="cpu", weights_only=True, net=net, optimizer=None,
        channels_last=bool(record.config.get("channels_last", True)))
    return module.eval()


# The data module's arguments a record may set when rebuilding its test split. ``cache_dir`` and
# ``pipeline`` are taken only when the caller names the cache root they must lie in.
DATA_ARGUMENTS = ("root", "name", "batch_size", "eval_batch_size", "rotation", "color_jitter",
                  "horizontal_flip", "vertical_flip", "class_weighted_loss", "on_bad_image", "device_cache")
CACHE_ARGUMENTS = ("pipeline", "cache_dir")


def datamodule_for(record: RunRecord, image_size: int, cache_root: str | Path | None = None,
                   **overrides: Any) -> ImageFolderDataModule:
    """The data module of ``record``'s data set at ``image_size``; it never creates data.

    A record is data: its data set name must be a plain name, and its decoded-image cache is used
    only when ``cache_root`` (the running command's ``paths.cache_dir``) is given and the record's
    ``cache_dir`` lies inside it; otherwise images are decoded without a cache (``classic``).
    """
    recorded = record.config.get("data") if isinstance(record.config, Mapping) else None
    recorded = recorded if isinstance(recorded, Mapping) else {}
    target = f"{ImageFolderDataModule.__module__}.{ImageFolderDataModule.__name__}"
    if recorded.get("_target_") not in (None, target):
        raise UntrustedRecordError(f"data names _target_={recorded.get('_target_')!r}, not {target!r}")
    arguments = {key: recorded[key] for key in DATA_ARGUMENTS if key in recorded}
    try:
        arguments["name"] = safe_name(arguments.get("name", record.identity.data_name), "data set name")
    except UnsafeName as error:
        raise UntrustedRecordError(str(error)) from error
    arguments["root"] = record.data.root or arguments.get("root")
    if not isinstance(arguments["root"], str):
        raise UntrustedRecordError(f"data root {arguments['root']!r} is not a path")
    cache_dir = recorded.get("cache_dir")
    if cache_root is not None and recorded.get("pipeline") == "cached" and isinstance(cache_dir, str):
        try:
            # A relative cache_dir was the run's, from its working folder, as cache_root is ours.
            arguments.update(pipeline="cached",
                             cache_dir=str(contained(cache_root, Path(cache_dir).resolve())))
        except UnsafeName as error:
            log.warning("%s: its image cache %s is outside %s; decoding without it (%s)", record.run_name,
                        cache_dir, cache_root, error)
    return ImageFolderDataModule(**{**arguments, "image_size": image_size, "num_workers": 0, **overrides})
