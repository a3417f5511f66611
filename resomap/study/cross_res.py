"""Train-resolution x test-resolution matrix (FixRes, Touvron et al. 2019).

Every run's best checkpoint is tested at each other resolution of the sweep, through the
same LitClassifier and Lightning ``Trainer.test`` as the run itself (same metrics, same
precision). Each run's evaluations are cached in ``results/cross_res/{run}.json``, keyed by
the run's config fingerprint and timestamp, so rebuilding a report does not recompute them.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from resomap.io import write_json

log = logging.getLogger(__name__)

CACHE_DIR = "cross_res"
METRICS = ("balanced_accuracy", "accuracy", "f1_score", "loss")


@dataclass
class CrossRes:
    """Balanced accuracy of each run at each test resolution, and why some are missing."""

    entries: list[tuple[str, int, int, int, dict[str, float]]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def matrix(self, model: str) -> dict[int, dict[int, float]]:
        """``matrix[train_res][test_res]``: balanced accuracy averaged over seeds."""
        values: dict[int, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
        for name, train_res, _seed, test_res, metrics in self.entries:
            if name == model and metrics.get("balanced_accuracy") is not None:
                values[train_res][test_res].append(metrics["balanced_accuracy"])
        return {train: {test: float(np.mean(v)) for test, v in sorted(row.items())}
                for train, row in sorted(values.items())}

    def models(self) -> list[str]:
        return sorted({name for name, *_ in self.entries})


def cache_path(results_dir: Path, run_name: str) -> Path:
    return results_dir / CACHE_DIR / f"{run_name}.json"


def _read_cache(path: Path, run: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Cached evaluations of this exact run (same fingerprint and timestamp), else nothing."""
    try:
        cached = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    same_run = (cached.get("config_fingerprint") == run.get("config_fingerprint")
                and cached.get("result_timestamp") == run.get("timestamp"))
    return dict(cached.get("evaluations", {})) if same_run else {}


@contextlib.contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Hide Lightning's per-Trainer banner lines (one set per evaluation) from the report log."""
    logger = logging.getLogger("lightning.pytorch")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def evaluate_checkpoint(run: dict[str, Any], test_res: int) -> dict[str, float]:
    """Test the run's best checkpoint on its data set's test split resized to ``test_res``."""
    import lightning.pytorch as pl
    import torch
    from hydra.utils import instantiate

    from resomap.device import resolve_precision
    from resomap.models.classifier import LitClassifier

    config = run["config"]
    checkpoint = torch.load(Path(config["run_checkpoint_dir"]) / "best.ckpt", map_location="cpu",
                            weights_only=True)
    hparams = checkpoint["hyper_parameters"]
    # The checkpoint's weights replace any pretrained ones: never look for those.
    fresh = {"pretrained": False} if "pretrained" in config["model"]["net"] else {}
    net = instantiate(config["model"]["net"], num_classes=hparams["num_classes"], **fresh)
    net.load_state_dict({key.removeprefix("net."): value for key, value in checkpoint["state_dict"].items()
                         if key.startswith("net.")})
    module = LitClassifier(net=net, num_classes=hparams["num_classes"], class_names=hparams["class_names"],
                           optimizer=None, class_weights=hparams.get("class_weights"),
                           channels_last=bool(config.get("channels_last", True)), run_config=config)
    # generator=None: evaluating must never create data, only read the run's test split.
    datamodule = instantiate(config["data"], image_size=test_res, generator=None)
    with _quiet_lightning():
        trainer = pl.Trainer(accelerator="auto", devices=1, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False,
                             precision=resolve_precision(run.get("precision", "32-true"), "auto"))
        trainer.test(module, datamodule=datamodule, verbose=False)
    measured = {key: float(value) for key, value in trainer.callback_metrics.items() if value.numel() == 1}
    found = {metric: measured.get(f"test_{metric}") for metric in METRICS}
    found["num_images"] = len(datamodule.datasets["test"])
    del trainer, module, net
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return found


def _why_not(run: dict[str, Any], test_res: int) -> str | None:
    config = run.get("config") or {}
    if not config.get("run_checkpoint_dir") or not config.get("data"):
        return "its result has no config"
    if not (Path(config["run_checkpoint_dir"]) / "best.ckpt").is_file():
        return f"checkpoint {config['run_checkpoint_dir']}/best.ckpt not found"
    if not Path(str(config["data"].get("root"))).is_dir():
        return f"data root {config['data'].get('root')} not found"
    if test_res < int(config.get("model", {}).get("min_size", 1)):
        return "below the model's minimum input size"
    return None


def build(runs: list[dict[str, Any]], results_dir: Path, resolutions: list[int],
          evaluate: bool = True) -> CrossRes:
    """Every run at every resolution of the sweep; cached results are reused, missing ones
    computed when ``evaluate`` is true (the run's own resolution comes from its result)."""
    found = CrossRes()
    for run in runs:
        name, train_res, seed = run["model"], int(run["resolution"]), int(run.get("seed", 0))
        own = {metric: run["test_metrics"].get(metric) for metric in METRICS}
        found.entries.append((name, train_res, seed, train_res, own))
        run_name = run.get("run_name") or f"{name}_{train_res}" + (f"_seed{seed}" if seed else "")
        path = cache_path(results_dir, run_name)
        cached = _read_cache(path, run)
        changed = False
        skipped: dict[str, list[int]] = defaultdict(list)
        for test_res in resolutions:
            if test_res == train_res:
                continue
            if str(test_res) not in cached:
                if not evaluate:
                    continue
                reason = _why_not(run, test_res)
                if reason:
                    skipped[reason].append(test_res)
                    continue
                log.info("Testing %s at %d px", run_name, test_res)
                cached[str(test_res)] = evaluate_checkpoint(run, test_res)
                changed = True
            found.entries.append((name, train_res, seed, test_res, cached[str(test_res)]))
        found.notes += [f"{run_name} not tested at {', '.join(map(str, where))} px: {reason}."
                        for reason, where in skipped.items()]
        if changed:
            write_json(path, {"run_name": run_name,
                                      "config_fingerprint": run.get("config_fingerprint"),
                                      "result_timestamp": run.get("timestamp"), "evaluations": cached})
    return found

