"""Train-resolution x test-resolution matrix: each trained model tested at the sweep's other sizes.

Touvron et al. (FixRes, 2019) show a train/test resolution discrepancy for models trained with
random-resized crops; ResoMap trains on whole images resized (squashed) to one size, so the
matrix measures how each model transfers to other sizes without that crop-scale effect.

The question it answers is local: does a model do best at its own resolution, or just above or
below it (FixRes)? So by default each run is tested only at the sweep's ``neighbours`` nearest
resolutions on either side of its own (1: the two adjacent sizes; ``None``: every size): on the
demo's five sizes 16 evaluations instead of 40. Cells further away stay empty (NaN in the plot).

Each run's best checkpoint is loaded once (:func:`resomap.run.trained.load_trained`, which
rebuilds the network from the project's own configs: a record is data) and evaluated on the
test split of its data set at every other resolution, in the precision the run trained in.
The test split of one (data set, resolution) is decoded once and shared by every run. Results
are cached in ``results/cross_res/{run}.json`` keyed by the run's identity and record time;
the run name comes from a record, so that path is checked (:func:`resomap.names.contained`).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from resomap.device import resolve_precision, torch_device
from resomap.io import write_json
from resomap.names import UnsafeName, contained, safe_name
from resomap.run.record_schema import RunRecord
from resomap.run.trained import UntrustedRecordError, datamodule_for, load_trained

log = logging.getLogger(__name__)

CACHE_DIR = "cross_res"
METRICS = ("balanced_accuracy", "accuracy", "f1_score", "loss")
Entry = tuple[str, int, int, int, dict[str, float]]


@dataclass
class CrossRes:
    """Metrics of each run at each test resolution, and why some are missing."""

    entries: list[Entry] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def matrix(self, model: str, metric: str = "balanced_accuracy") -> dict[int, dict[int, float]]:
        """``matrix[train_res][test_res]``: ``metric`` averaged over seeds."""
        values: dict[int, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
        for name, train_res, _seed, test_res, metrics in self.entries:
            if name == model and metrics.get(metric) is not None:
                values[train_res][test_res].append(metrics[metric])
        return {train: {test: float(np.mean(v)) for test, v in sorted(row.items())}
                for train, row in sorted(values.items())}

    def models(self) -> list[str]:
        return sorted({name for name, *_ in self.entries})


def cache_path(results_dir: Path, run_name: str) -> Path:
    """``results/cross_res/{run_name}.json``; the name is read from a record, so it must be a plain
    name and the path must stay inside the results folder (UnsafeName otherwise)."""
    return contained(results_dir, CACHE_DIR, f"{safe_name(run_name, 'run name')}.json")


def test_resolutions(own: int, resolutions: Sequence[int], neighbours: int | None = 1) -> list[int]:
    """The resolutions other than ``own`` that a run trained at ``own`` is tested at: the
    ``neighbours`` nearest below and above it in the sorted sweep (``None``: all of them).

    ``own`` need not be one of ``resolutions`` (a run of another sweep): its place among them
    decides what is below and above it.
    """
    others = sorted({int(res) for res in resolutions} - {int(own)})
    if neighbours is None:
        return others
    if neighbours < 0:
        raise ValueError(f"neighbours must be >= 0 or None, got {neighbours}")
    below = [res for res in others if res < own][::-1][:neighbours]
    above = [res for res in others if res > own][:neighbours]
    return sorted(below + above)


def _read_cache(path: Path, record: RunRecord) -> dict[str, dict[str, float]]:
    """Cached evaluations of this exact run (same identity and record time), else nothing."""
    import json

    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    same_run = (cached.get("identity") == record.identity.digest
                and cached.get("result_timestamp") == record.timestamp)
    return dict(cached.get("evaluations", {})) if same_run else {}


def scores(labels: np.ndarray, logits: np.ndarray, num_classes: int,
           weights: Sequence[float] | None) -> dict[str, float]:
    """The run's test metrics from logits: balanced accuracy (mean per-class recall over the
    classes present), accuracy, macro F1 and the (class-weighted) cross-entropy."""
    from sklearn.metrics import balanced_accuracy_score, f1_score

    predictions = logits.argmax(axis=1)
    weight = torch.tensor(weights, dtype=torch.float32) if weights else None
    loss = torch.nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels).long(),
                                             weight=weight)
    return {"balanced_accuracy": float(balanced_accuracy_score(labels, predictions)),
            "accuracy": float(np.mean(predictions == labels)),
            "f1_score": float(f1_score(labels, predictions, labels=list(range(num_classes)), average="macro",
                                       zero_division=0)),
            "loss": float(loss), "num_images": int(len(labels))}


class TestSplits:
    """Normalised test tensors of each (data root, resolution), decoded once for all runs."""

    def __init__(self) -> None:
        self._splits: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def get(self, record: RunRecord, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
        key = (record.data.root, resolution)
        if key not in self._splits:
            # Only the latest resolution is kept: runs are visited resolution by resolution.
            self._splits = {k: v for k, v in self._splits.items() if k[1] == resolution}
            datamodule = datamodule_for(record, resolution, device_cache="false")
            datamodule.setup("test")
            images, labels = [], []
            for batch in datamodule.test_dataloader():
                batch_images, batch_labels = datamodule.on_after_batch_transfer(batch, 0)
                images.append(batch_images.float())
                labels.append(batch_labels)
            self._splits[key] = (torch.cat(images), torch.cat(labels))
        return self._splits[key]


def evaluate_model(model: Any, images: torch.Tensor, labels: torch.Tensor, precision: str,
                   batch_size: int = 64, weights: Sequence[float] | None = None) -> dict[str, float]:
    """Forward the test split through ``model`` in ``precision``; the run's metrics of it."""
    device = torch_device()
    model = model.to(device)
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(resolve_precision(precision))
    outputs = []
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype or torch.float32,
                                                enabled=dtype is not None):
        for start in range(0, len(images), batch_size):
            outputs.append(model(images[start:start + batch_size].to(device)).float().cpu())
    logits = torch.cat(outputs).numpy()
    return scores(labels.numpy(), logits, logits.shape[1], weights)


def _why_not(record: RunRecord, test_res: int, checkpoints_root: Path) -> str | None:
    if not (record.identity.checkpoint_dir(checkpoints_root) / "best.ckpt").is_file():
        return f"checkpoint {record.identity.checkpoint_dir(checkpoints_root) / 'best.ckpt'} not found"
    if not record.data.root or not Path(record.data.root).is_dir():
        return f"data root {record.data.root} not found"
    min_size = int((record.config.get("model") or {}).get("min_size", 1))
    if test_res < min_size:
        return "below the model's minimum input size"
    return None


Cells = dict[str, dict[str, dict[str, float]]]  # run name -> test resolution -> metric -> value


def _plan(records: Sequence[RunRecord], results_dir: Path, resolutions: Sequence[int], evaluate_missing: bool,
          checkpoints_root: Path, neighbours: int | None,
          found: CrossRes) -> tuple[Cells, list[tuple[RunRecord, int]]]:
    """Each run's own cell and cached cells, and the (run, test resolution) pairs still to evaluate;
    a pair that cannot be evaluated is noted in ``found`` with why."""
    todo: list[tuple[RunRecord, int]] = []
    cache: Cells = {}
    for record in records:
        own = {metric: getattr(record.test_metrics, metric) for metric in METRICS}
        found.entries.append((record.model, record.resolution, record.seed, record.resolution, own))
        try:
            cache[record.run_name] = _read_cache(cache_path(results_dir, record.run_name), record)
        except UnsafeName as error:
            found.notes.append(f"{record.run_name!r} not tested at other resolutions: {error}")
            cache[record.run_name] = {}
            continue
        skipped: dict[str, list[int]] = defaultdict(list)
        for test_res in test_resolutions(record.resolution, resolutions, neighbours):
            if str(test_res) in cache[record.run_name] or not evaluate_missing:
                continue
            reason = _why_not(record, test_res, checkpoints_root)
            if reason:
                skipped[reason].append(test_res)
                continue
            todo.append((record, test_res))
        found.notes += [f"{record.run_name} not tested at {', '.join(map(str, where))} px: {reason}."
                        for reason, where in skipped.items()]
    return cache, todo


def _evaluate(todo: Sequence[tuple[RunRecord, int]], cache: Cells, checkpoints_root: Path,
              found: CrossRes) -> set[str]:
    """Evaluate the missing cells into ``cache``, resolution by resolution so each test split is
    decoded once and held alone; the names of the runs that gained a cell."""
    splits, models, changed = TestSplits(), {}, set()
    for record, test_res in tqdm(sorted(todo, key=lambda item: (item[1], item[0].run_name)),
                                 desc="train x test resolution", disable=not todo, leave=False):
        try:
            if record.run_name not in models:
                models[record.run_name] = load_trained(record, checkpoints_root)
            model = models[record.run_name]
            images, labels = splits.get(record, test_res)
            cache[record.run_name][str(test_res)] = evaluate_model(
                model, images, labels, record.precision, weights=model.hparams.get("class_weights"))
            changed.add(record.run_name)
        except (UntrustedRecordError, FileNotFoundError) as error:
            found.notes.append(f"{record.run_name} not tested at {test_res} px: {error}.")
    return changed


def build(runs: Sequence[RunRecord | dict], results_dir: str | Path, resolutions: Sequence[int],
          evaluate_missing: bool = True, checkpoints_root: str | Path | None = None,
          neighbours: int | None = 1) -> CrossRes:
    """Every run at its ``neighbours`` nearest resolutions of the sweep on either side
    (:func:`test_resolutions`; ``None``: all); cached results are reused (any cached cell of the
    sweep is shown), missing ones computed when ``evaluate_missing`` is true (the run's own
    resolution comes from its record).

    ``checkpoints_root`` defaults to ``checkpoints/`` beside the results folder.
    """
    results_dir = Path(results_dir)
    checkpoints_root = Path(checkpoints_root) if checkpoints_root else results_dir.parent / "checkpoints"
    records = [run if isinstance(run, RunRecord) else RunRecord.from_dict(run) for run in runs]
    found = CrossRes()
    cache, todo = _plan(records, results_dir, resolutions, evaluate_missing, checkpoints_root, neighbours,
                        found)
    changed = _evaluate(todo, cache, checkpoints_root, found)
    for record in records:
        for test_res, metrics in sorted(cache[record.run_name].items(), key=lambda item: int(item[0])):
            if int(test_res) in resolutions:
                found.entries.append((record.model, record.resolution, record.seed, int(test_res), metrics))
        if record.run_name in changed:
            write_json(cache_path(results_dir, record.run_name),
                       {"run_name": record.run_name, "identity": record.identity.digest,
                        "result_timestamp": record.timestamp, "evaluations": cache[record.run_name]})
    return found
