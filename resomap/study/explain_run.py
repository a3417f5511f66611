"""Explanations of a finished run, without retraining: ``resomap explain model=... res=...``.

The run is found by its record (``results/test_results/{run_name}.json``), its model loaded by
:func:`resomap.run.trained.load_trained` (which checks every name and path the record gives) and
its test split rebuilt from the record's data set.
The explain section is written beside the record (``explain.json`` in its run folder: a record is
written once, by its run), added with the maps to the run's MLflow run in each configured store,
and the cross-resolution agreement refreshed.
"""

from __future__ import annotations

import logging
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig

from resomap.device import torch_device
from resomap.errors import ResoMapError
from resomap.run import record as records
from resomap.run.record_schema import EXPLANATIONS
from resomap.run.record_write import write_explanations
from resomap.run.trained import UntrustedRecordError, datamodule_for, load_trained
from resomap.study.agreement import write_agreement
from resomap.tracking.mirror import RECORD_ARTIFACTS, tracked_run
from resomap.tracking.settings import TrackingSettings, store_nodes

log = logging.getLogger(__name__)


def explain_checkpoint(cfg: DictConfig) -> dict[str, Any]:
    """Explain the run ``cfg`` names (its best checkpoint, or ``cfg.ckpt``); returns the section."""
    explainer_cfg = (cfg.get("callbacks") or {}).get("explain")
    if not explainer_cfg:
        raise ResoMapError("callbacks.explain is not configured (explain=none?): run with "
                           "explain=default or another conf/explain/ file.")
    path = records.view_path(cfg.paths.results_dir, cfg.run_name)
    if not path.is_file():
        raise ResoMapError(
            f"No record of run {cfg.run_name} at {path} to explain. Train it first (resomap train "
            f"model={cfg.model.name} res={cfg.res}), or pass paths.results_dir= the results folder "
            "that holds it.")
    try:
        record = records.read_record(path)
        if record.run_name != cfg.run_name:
            raise UntrustedRecordError(f"{path} holds the record of run {record.run_name!r}, "
                                       f"not {cfg.run_name}")
        module = load_trained(record, cfg.paths.checkpoint_dir, checkpoint=cfg.get("ckpt"), source=path)
    except (records.InvalidRecord, UntrustedRecordError, FileNotFoundError) as error:
        raise ResoMapError(f"Cannot explain {cfg.run_name}: {error}. Pass ckpt=PATH to a checkpoint "
                           "of this run, or retrain it.") from error
    datamodule = datamodule_for(record, record.resolution, cache_root=cfg.paths.cache_dir)
    datamodule.setup("test")
    if list(module.hparams.class_names) != datamodule.classes:
        raise ResoMapError(
            f"Run {record.run_name} was trained on classes {list(module.hparams.class_names)}, but its "
            f"data root {datamodule.root} now has {datamodule.classes}: explain it on the data it was "
            "trained on.")
    module.to(torch_device(cfg.trainer.get("accelerator", "auto")))
    # From the project's configs, never from the record; the maps go to the run's own folder.
    maps_dir = records.run_dir(cfg.paths.results_dir, record) / EXPLANATIONS
    explainer = instantiate(explainer_cfg, output_dir=str(maps_dir))
    section = explainer.explain(module.net, datamodule, channels_last=module.channels_last)
    written = write_explanations(cfg.paths.results_dir, record, section)
    log.info("Explained %s; section written to %s, beside its record", record.run_name, written)
    settings = TrackingSettings.of(store_nodes(cfg.get("logger")), cfg.paths.checkpoint_dir,
                                   cfg.paths.results_dir, record.identity, record.config)
    # The run's own MLflow run gets them (made to hold the finished run first, if it does not).
    with tracked_run(settings, record.identity, record=record) as tracked:
        tracked.add(written, RECORD_ARTIFACTS)
        tracked.add(maps_dir, EXPLANATIONS)
    write_agreement(cfg.paths.results_dir)
    return {"explain": section}
