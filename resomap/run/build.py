"""Build what a run trains with, and load what a run trained: the one place of each.

``build_*`` turn a composed config into the data module, the LightningModule and the Trainer.
:func:`load_trained` turns a run record back into its trained model for every later reader
(report, cross-resolution matrix, explain, bench). A record is data: the network is rebuilt
from the project's own ``conf/model/<name>.yaml`` (a name Hydra lists, never a path), never from a
``_target_`` found in a file, and every path built from a record is checked to stay in its root.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from resomap.data.datamodule import ImageFolderDataModule, dataset_fingerprint
from resomap.device import resolve_precision
from resomap.errors import ResoMapError
from resomap.models.classifier import LitClassifier
from resomap.names import UnsafeName, contained, safe_name
from resomap.redact import redact_config
from resomap.run.checkpoint import BEST, AtomicCheckpointIO, FitState, read_checkpoint
from resomap.run.export import ResultExport
from resomap.run.identity import RunIdentity
from resomap.run.record_schema import EXPLANATIONS, DataInfo, RunRecord

log = logging.getLogger(__name__)


class UntrustedRecordError(UnsafeName):
    """A run record names code that is not one of the project's own models or data modules, or a
    name or path that would lead outside its folders."""


def data_fingerprint(cfg: DictConfig) -> str:
    """Generate the data set if its config says how (a no-op once it exists), then fingerprint
    its content: bytes are read only for images whose size, mtime or inode changed since the
    last run (cached in ``paths.cache_dir/fingerprints/``); no image is decoded."""
    import hashlib

    root = Path(cfg.data.root).expanduser().resolve()
    if cfg.data.get("generator"):
        instantiate(cfg.data.generator)(root=root)
    if not root.is_dir():
        return ""  # the data module's set-up names the missing folder with the expected layout
    key = hashlib.sha256(str(root).encode()).hexdigest()[:16]
    return dataset_fingerprint(root, Path(cfg.paths.cache_dir) / "fingerprints" / f"{key}.json")


def identify(cfg: DictConfig) -> RunIdentity:
    """The run's identity from its composed config and its data."""
    return RunIdentity.from_config(cfg, data_fingerprint(cfg))


def run_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain containers with secrets redacted: what records and
    checkpoints keep."""
    return redact_config(OmegaConf.to_container(cfg, resolve=True))


def build_datamodule(cfg: DictConfig) -> ImageFolderDataModule:
    return instantiate(cfg.data, validation_cache=str(Path(cfg.paths.cache_dir) / "validation"))


def build_module(cfg: DictConfig, datamodule: ImageFolderDataModule,
                 identity: RunIdentity | None = None) -> LitClassifier:
    """The LightningModule of ``cfg.model`` for ``datamodule``'s classes (set up first); without
    an identity (benchmarks) its checkpoints resume nothing."""
    weights = datamodule.class_weights()
    return LitClassifier(
        net=instantiate(cfg.model.net, num_classes=datamodule.num_classes),
        num_classes=datamodule.num_classes,
        class_names=datamodule.classes,
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
        class_weights=weights.tolist() if weights is not None else None,
        channels_last=cfg.channels_last,
        run_config=run_config(cfg) if identity else None,
        compile=bool(cfg.model.get("compile", False)),
        identity=identity.to_dict() if identity else None,
    )


def _accepts(target: str, argument: str) -> bool:
    """Whether the callable ``target`` (a dotted path from the project's config) takes ``argument``."""
    import inspect

    from hydra.utils import get_object

    try:
        return argument in inspect.signature(get_object(target)).parameters
    except (ImportError, ValueError, TypeError, AttributeError):
        return False


def build_callbacks(cfg: DictConfig, checkpoint_dir: Path, exporter: ResultExport,
                    output_dir: Path | None = None) -> list[pl.Callback]:
    """``cfg.callbacks`` with every ModelCheckpoint writing into the run's own checkpoint folder
    and every callback that writes files (explanations) into the run's own results folder
    ``output_dir``; then :class:`FitState` (an early stop survives a resume) and the exporter,
    last, since it reads what the others measured."""
    callbacks = []
    for node in (cfg.get("callbacks") or {}).values():
        target = str(node.get("_target_", ""))
        extra = {"dirpath": str(checkpoint_dir)} if target.endswith("ModelCheckpoint") else {}
        if output_dir is not None and _accepts(target, "output_dir"):
            extra["output_dir"] = str(Path(output_dir) / EXPLANATIONS)
        callbacks.append(instantiate(node, **extra))
    return [*callbacks, FitState(), exporter]


def build_exporter(identity: RunIdentity, datamodule: ImageFolderDataModule) -> ResultExport:
    counts = {split: datamodule.class_counts(split) for split in ("train", "val", "test")}
    data = DataInfo(name=datamodule.name, root=str(datamodule.root), fingerprint=identity.data_fingerprint,
                    class_counts=counts)
    return ResultExport(identity=identity, data=data)


def build_trainer(cfg: DictConfig, callbacks: list[pl.Callback], loggers: list[Any],
                  **overrides: Any) -> pl.Trainer:
    """``cfg.trainer`` with the run's precision (``resolve_precision``), checkpoints written atomically."""
    precision = resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator)
    plugins = [*overrides.pop("plugins", []), AtomicCheckpointIO()]
    return instantiate(cfg.trainer, precision=precision, callbacks=callbacks, logger=loggers or False,
                       plugins=plugins, **overrides)


# ---- trained models, for readers of records -------------------------------------------------

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
    net = instantiate(node, num_classes=hparams["num_classes"])
    module = LitClassifier(net=net, num_classes=hparams["num_classes"], class_names=hparams["class_names"],
                           optimizer=None, class_weights=hparams.get("class_weights"),
                           channels_last=bool(record.config.get("channels_last", True)),
                           run_config=hparams.get("run_config"), identity=stored)
    module.load_state_dict(saved["state_dict"])
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
