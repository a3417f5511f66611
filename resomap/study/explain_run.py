"""Explanations of a saved checkpoint, written where the explain callback writes them."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from resomap.io import write_json
from resomap.models.classifier import LitClassifier
from resomap.run import record as results
from resomap.study.agreement import write_agreement

log = logging.getLogger(__name__)


def checkpoint_path(cfg: DictConfig) -> Path:
    """``cfg.ckpt``, or the run's ``best.ckpt``; a clear error when it does not exist."""
    path = Path(cfg.ckpt) if cfg.get("ckpt") else Path(cfg.run_checkpoint_dir) / "best.ckpt"
    if not path.is_file():
        raise FileNotFoundError(
            f"No checkpoint at {path} to explain for model={cfg.model.name} res={cfg.res}. Train "
            f"it first (python -m resomap.train model={cfg.model.name} res={cfg.res}) or pass "
            "ckpt=PATH to a checkpoint of this model and resolution."
        )
    return path


def load_classifier(cfg: DictConfig, path: Path) -> LitClassifier:
    """The trained LitClassifier of ``path``, its network built from ``cfg.model``."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    hparams = checkpoint["hyper_parameters"]
    saved = hparams.get("run_config") or {}
    if saved and (saved["model"]["name"], int(saved["res"])) != (cfg.model.name, int(cfg.res)):
        raise ValueError(
            f"{path} was written by a run of model={saved['model']['name']} res={saved['res']}, "
            f"but this command explains model={cfg.model.name} res={cfg.res}. Pass the "
            "checkpoint's model= and res=, or ckpt= a checkpoint of this model and resolution."
        )
    net = instantiate(cfg.model.net, num_classes=hparams["num_classes"])
    module = LitClassifier(net=net, optimizer=None, channels_last=cfg.channels_last, **hparams)
    module.load_state_dict(checkpoint["state_dict"])
    return module.eval()


def explain_checkpoint(cfg: DictConfig) -> dict[str, Any]:
    """Explain one run's checkpoint; update its result JSON and the cross-resolution agreement."""
    explainer_cfg = (cfg.get("callbacks") or {}).get("explain")
    if not explainer_cfg:
        raise ValueError("callbacks.explain is not configured (explain=none?): run with "
                         "explain=default or another conf/explain/ file.")
    path = checkpoint_path(cfg)
    module = load_classifier(cfg, path)
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("test")
    if list(module.hparams.class_names) != datamodule.classes:
        raise ValueError(
            f"{path} was trained on classes {list(module.hparams.class_names)}, but data.root "
            f"{datamodule.root} has {datamodule.classes}: explain it on the data it was trained on."
        )
    use_cuda = torch.cuda.is_available() and cfg.trainer.get("accelerator") in ("auto", "gpu", "cuda")
    module.to(torch.device("cuda" if use_cuda else "cpu"))
    explainer = instantiate(explainer_cfg)
    section = {"explain": explainer.explain(module.net, datamodule, channels_last=module.channels_last)}

    result_file = results.result_path(cfg.paths.results_dir, cfg.run_name)
    if result_file.is_file():
        payload = results.read_result(result_file)
        payload.update(section)
        write_json(result_file, payload)
        log.info("Explained %s (%s); section written to %s", cfg.run_name, path, result_file)
    else:
        log.warning("No result file %s: explanations of %s are in %s only", result_file, cfg.run_name,
                    section["explain"]["dir"])
    write_agreement(cfg.paths.results_dir)
    return section
