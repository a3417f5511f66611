"""Explains a tested model on a fixed sample of test images and adds an ``explain`` section.

The sample depends only on the test file list and ``seed``: every model and resolution
of a sweep explains the same images, so their maps can be compared
(resomap/measure/maps.py). ``python -m resomap.explain`` calls the same code
on a saved checkpoint.
"""

from __future__ import annotations

import io
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch import nn

from resomap.data.datamodule import IMAGENET_MEAN, IMAGENET_STD
from resomap.errors import ConfigError, ResoMapError
from resomap.io import atomic_write_bytes
from resomap.measure import maps as attribution_maps
from resomap.measure.attribution import randomised_copy
from resomap.measure.seeds import check_seeds, measures_seed

log = logging.getLogger(__name__)

Method = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
TARGETS = ("label", "predicted")


def select_sample(samples: Sequence[tuple[str, int]], root: str | Path, num_images: int,
                  seed: int, labels: Sequence[int] | None = None) -> list[tuple[str, int]]:
    """``num_images`` test images as ``(path relative to root, label)``, class-stratified:
    classes take turns, each giving its images in an order shuffled by ``seed`` (not the run's
    seed), so ``num_images`` >= the number of classes covers every class. The turns go from the
    class with most test images down (ties by label): when the images are fewer than the classes,
    those left out are the smallest, whose AUROC the report could not compare across resolutions
    anyway (a few positives give a coarse AUROC). ``labels``: only those classes, in that order."""
    root = Path(root)
    by_class: dict[int, list[str]] = defaultdict(list)
    for path, label in samples:
        by_class[label].append(Path(path).relative_to(root).as_posix())
    rng = np.random.default_rng(seed)
    # Every class's order is drawn, then the unnamed classes dropped: a named class gets the same
    # images in the same order as in the unrestricted sample.
    queues = {label: [str(p) for p in rng.permutation(sorted(paths))]
              for label, paths in sorted(by_class.items())}
    if labels is None:
        order = sorted(queues, key=lambda label: (-len(queues[label]), label))
    else:
        order = [label for label in dict.fromkeys(labels) if label in queues]
    queues = {label: queues[label] for label in order}
    chosen: list[tuple[str, int]] = []
    while len(chosen) < num_images and any(queues.values()):
        for label, queue in queues.items():
            if queue and len(chosen) < num_images:
                chosen.append((queue.pop(0), label))
    return chosen


def _in_batches(method: Method, net: nn.Module, images: torch.Tensor, targets: torch.Tensor,
                batch_size: int) -> torch.Tensor:
    if len(images) == 0:
        return torch.zeros(0, *images.shape[-2:])
    return torch.cat([method(net, images[i:i + batch_size], targets[i:i + batch_size]).cpu()
                      for i in range(0, len(images), batch_size)])


def _with_completeness(method: Method, net: nn.Module, images: torch.Tensor, targets: torch.Tensor,
                       batch_size: int) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Maps, and for a method that checks completeness (Integrated Gradients) each image's
    convergence delta and target output change; None for the others."""
    attribute = getattr(method, "attribute_with_completeness", None)
    if attribute is None or len(images) == 0:
        return _in_batches(method, net, images, targets, batch_size), None, None
    parts = [attribute(net, images[i:i + batch_size], targets[i:i + batch_size])
             for i in range(0, len(images), batch_size)]
    return tuple(torch.cat([part[k].cpu() for part in parts]) for k in range(3))


def completeness(deltas: torch.Tensor, changes: torch.Tensor) -> tuple[float, list[float]]:
    """Completeness error relative to the output change: over the sample, sum |delta| / sum
    |change| (not a mean of ratios, which one image with a tiny change would dominate), and
    per image |delta| / |change|."""
    tiny = torch.finfo(torch.float32).tiny
    overall = float(deltas.abs().sum() / changes.abs().sum().clamp_min(tiny))
    return overall, (deltas.abs() / changes.abs().clamp_min(tiny)).tolist()


def _display(images: torch.Tensor) -> np.ndarray:
    """Normalised ``(N, 3, H, W)`` tensors back to ``(N, H, W, 3)`` pixels in [0, 1]."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images.cpu() * std + mean).clamp(0, 1).permute(0, 2, 3, 1).numpy()


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def _normalised(maps: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Maps scaled to a maximum of 1 (float16 keeps them small and precise) and the scales."""
    peak = maps.flatten(1).amax(dim=1).clamp_min(torch.finfo(torch.float32).tiny)
    return (maps / peak.view(-1, 1, 1)).numpy().astype(np.float16), peak.numpy()


class Explain(pl.Callback):
    """Grad-CAM, Integrated Gradients and saliency maps of the tested model.

    Runs after testing on ``num_images`` test images chosen by ``seed`` (of the ``classes``
    named, or all); writes ``maps.npz`` (maps at the run's resolution for the label and the
    predicted class, the image list) and one overlay JPEG per image into ``output_dir``
    (default ``results_dir/explanations/{run_name}``). ``sanity_methods`` are repeated on a
    re-initialised copy of the model (Adebayo et al. 2018): a low trained-versus-random rank
    correlation means the method explains the model, not the image alone.

    Explanations compare resolutions, not seeds: with ``seeds: [0]`` a run whose ``run_seed``
    is not listed (a seed a study adds) explains nothing and has no ``explain`` section.
    """

    def __init__(self, results_dir: str, run_name: str, methods: dict[str, Method],
                 num_images: int = 8, seed: int = 0, batch_size: int = 8,
                 sanity_methods: Sequence[str] = (), overlays: bool = True,
                 output_dir: str | None = None, classes: Sequence[str] | None = None,
                 run_seed: int = 0, seeds: Sequence[int] | None = None) -> None:
        unknown = sorted(set(sanity_methods) - set(methods))
        if unknown:
            raise ConfigError(f"callbacks.explain.sanity_methods names {unknown}, which are not in "
                             f"callbacks.explain.methods ({', '.join(methods)}).")
        self.results_dir = results_dir
        self.output_dir = output_dir
        # A single name from the command line (classes=mel) is one class, not its letters.
        self.classes = [classes] if isinstance(classes, str) else None if classes is None else list(classes)
        self.run_seed = int(run_seed)
        self.seeds = check_seeds(seeds, "callbacks.explain.seeds")
        self.run_name = run_name
        self.methods = dict(methods)
        self.num_images = num_images
        self.seed = seed
        self.batch_size = batch_size
        self.sanity_methods = list(sanity_methods)
        self.overlays = overlays
        self.section: dict[str, Any] | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Check ``classes`` against the data before training, not after it."""
        classes = getattr(getattr(trainer, "datamodule", None), "classes", None)
        if classes:
            self._labels(list(classes))

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.section = None

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.record_section(trainer, pl_module)

    def record_section(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        """``{"explain": {...}}`` for the run's record, computed once per test."""
        if self.section is None:
            datamodule = getattr(trainer, "datamodule", None)
            if not trainer.is_global_zero or datamodule is None or "test" not in datamodule.datasets:
                return {}
            if not measures_seed(self.run_seed, self.seeds):
                log.info("%s: no explanations for seed %d (callbacks.explain.seeds=%s)", self.run_name,
                         self.run_seed, self.seeds)
                self.section = {}
                return self.section
            self.section = {"explain": self.explain(pl_module.net, datamodule,
                                                    channels_last=pl_module.channels_last)}
        return self.section

    @torch.inference_mode(False)
    def explain(self, net: nn.Module, datamodule: Any, channels_last: bool = False) -> dict[str, Any]:
        """Explain ``net`` on the sample of ``datamodule``'s test split; write maps and overlays.

        Runs in float32 with gradients, whatever the trainer's context (inference mode,
        autocast) is; every tensor is created here, outside inference mode.
        """
        started = time.perf_counter()
        dataset = datamodule.datasets["test"]
        root = Path(datamodule.root)
        classes = list(datamodule.classes)
        sample = self._sample(dataset, root, classes)
        images = torch.stack([dataset.transform(dataset.loader(root / path)) for path, _ in sample])
        labels = torch.tensor([label for _, label in sample])
        size = images.shape[-1]
        out_dir = (Path(self.output_dir) if self.output_dir
                   else attribution_maps.explanation_dir(self.results_dir, self.run_name))
        log.info("Explaining %d test images of %s into %s", len(sample), self.run_name, out_dir)
        predicted, maps, summaries = self._predict_and_attribute(net, images, labels, channels_last)
        masks = [attribution_maps.load_mask(root, path, size) for path, _ in sample]
        arrays: dict[str, np.ndarray] = {
            "images": np.array([path for path, _ in sample]), "labels": labels.numpy(),
            "predicted": predicted.numpy(), "classes": np.array(classes)}
        arrays.update(self._maps_and_lesion_mass(maps, summaries, masks))
        atomic_write_bytes(out_dir / attribution_maps.MAPS_FILE, _npz_bytes(arrays))
        overlays = self._write_overlays(out_dir, images, sample, predicted, classes, maps)
        return {
            "dir": self._relative_dir(out_dir),
            "maps_file": attribution_maps.MAPS_FILE,
            "overlays": overlays,
            "data_root": str(root),
            "image_size": size,
            "seed": self.seed,
            # The classes named by callbacks.explain.classes (None: every class in turns); the
            # report shows these, else the explained classes whose AUROC changes most.
            "classes": self.classes,
            "targets": list(TARGETS),
            "images": [{"image": path, "label": classes[label], "predicted": classes[int(guess)]}
                       for (path, label), guess in zip(sample, predicted)],
            "lesion_area_fraction": attribution_maps.nanmean(
                [float(mask.mean()) for mask in masks if mask is not None]),
            "methods": summaries,
            "seconds": time.perf_counter() - started,
        }

    def _sample(self, dataset: Any, root: Path, classes: list[str]) -> list[tuple[str, int]]:
        """The explained images (:func:`select_sample`); logs the classes they leave out."""
        sample = select_sample(dataset.samples, root, self.num_images, self.seed, self._labels(classes))
        missing = sorted(set(classes) - {classes[label] for _, label in sample})
        if missing and self.classes is None:
            log.info("%s: %d explained images leave out the classes %s (callbacks.explain.num_images=%d "
                     "for %d classes; callbacks.explain.classes names the ones to explain)", self.run_name,
                     len(sample), ", ".join(missing), self.num_images, len(classes))
        return sample

    def _predict_and_attribute(self, net: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                               channels_last: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor],
                                                             dict[str, Any]]:
        """Predicted classes, maps and per-method summaries, in float32 with gradients on the
        network's device; the network's training mode is restored afterwards."""
        device = next(net.parameters()).device
        was_training = net.training
        with torch.enable_grad(), torch.autocast(device.type, enabled=False):
            net.eval()
            inputs = images.to(device)
            if channels_last:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            inputs.requires_grad_(True)
            with torch.no_grad():
                predicted = torch.cat([net(inputs[i:i + self.batch_size]).argmax(1).cpu()
                                       for i in range(0, len(inputs), self.batch_size)])
            maps, summaries = self._attribute_all(net, inputs, labels, predicted)
            net.train(was_training)
        return predicted, maps, summaries

    def _maps_and_lesion_mass(self, maps: dict[str, torch.Tensor], summaries: dict[str, Any],
                              masks: list[np.ndarray | None]) -> dict[str, np.ndarray]:
        """The normalised maps and their scales for maps.npz; adds each method's attribution mass
        inside the lesion masks (trained and, for sanity methods, randomised) to ``summaries``."""
        arrays: dict[str, np.ndarray] = {}
        for name in self.methods:
            for target in TARGETS:
                key = attribution_maps.map_key(name, target)
                arrays[key], arrays[f"{key}__max"] = _normalised(maps[key])
            label_maps = maps[attribution_maps.map_key(name, "label")].numpy()
            fractions = [attribution_maps.mass_fraction(m, mask) if mask is not None else None
                         for m, mask in zip(label_maps, masks)]
            summaries[name]["lesion_mass_fraction"] = attribution_maps.nanmean(fractions)
            summaries[name]["per_image"]["lesion_mass_fraction"] = fractions
            if f"random__{name}" in maps:
                random_maps = maps[f"random__{name}"].numpy()
                summaries[name]["random_lesion_mass_fraction"] = attribution_maps.nanmean(
                    [attribution_maps.mass_fraction(m, mask) if mask is not None else None
                     for m, mask in zip(random_maps, masks)])
        return arrays

    def _relative_dir(self, out_dir: Path) -> str:
        """``out_dir`` relative to ``results_dir`` when inside it, else as given."""
        results = Path(self.results_dir).resolve()
        resolved = out_dir.resolve()
        return resolved.relative_to(results).as_posix() if resolved.is_relative_to(results) else str(out_dir)

    def _labels(self, classes: list[str]) -> list[int] | None:
        """Indices of ``self.classes`` in the data set's classes (None: every class)."""
        if self.classes is None:
            return None
        missing = [name for name in self.classes if name not in classes]
        if missing:
            raise ResoMapError(f"callbacks.explain.classes names {missing}, which are not classes of this "
                               f"data set ({', '.join(classes)}); name some of those, or null for all.")
        return [classes.index(name) for name in self.classes]

    def _attribute_all(self, net: nn.Module, inputs: torch.Tensor, labels: torch.Tensor,
                       predicted: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Maps of every method for both targets (the predicted-class pass only where it differs
        from the label), and of the sanity methods for a randomised model."""
        maps: dict[str, torch.Tensor] = {}
        summaries: dict[str, Any] = {}
        device_labels = labels.to(inputs.device)
        differs = (predicted != labels).nonzero().flatten()
        random_net = randomised_copy(net, self.seed) if self.sanity_methods else None
        size = inputs.shape[-1]
        for name, method in self.methods.items():
            started = time.perf_counter()
            label_maps, deltas, changes = _with_completeness(method, net, inputs, device_labels,
                                                             self.batch_size)
            predicted_maps = label_maps.clone()
            predicted_maps[differs] = _in_batches(method, net, inputs[differs],
                                                  predicted[differs].to(inputs.device), self.batch_size)
            maps[attribution_maps.map_key(name, "label")] = label_maps
            maps[attribution_maps.map_key(name, "predicted")] = predicted_maps
            summary: dict[str, Any] = {**method.settings(net, size), "per_image": {}}
            if name in self.sanity_methods:
                random_maps = _in_batches(method, random_net, inputs, device_labels, self.batch_size)
                maps[f"random__{name}"] = random_maps
                correlations = [attribution_maps.rank_correlation(a.numpy(), b.numpy())
                                for a, b in zip(label_maps, random_maps)]
                # The signed mean can sit near 0 while single images correlate strongly either way.
                summary["sanity_spearman"] = attribution_maps.nanmean(correlations)
                summary["sanity_abs_spearman"] = attribution_maps.nanmean([abs(c) for c in correlations])
                summary["per_image"]["sanity_spearman"] = correlations
            if deltas is not None:
                self._check_completeness(name, method, summary, deltas, changes)
            finite = all(bool(torch.isfinite(m).all()) for m in (label_maps, predicted_maps))
            summary["finite"] = finite
            summary["seconds"] = time.perf_counter() - started
            summaries[name] = summary
        return maps, summaries

    def _check_completeness(self, name: str, method: Method, summary: dict[str, Any], deltas: torch.Tensor,
                            changes: torch.Tensor) -> None:
        error, per_image = completeness(deltas, changes)
        tolerance = float(getattr(method, "tolerance", 0.05))
        summary.update(completeness_error=error, completeness_abs_mean=float(deltas.abs().mean()),
                       completeness_large=error > tolerance)
        summary["per_image"]["completeness_error"] = per_image
        if error > tolerance:
            log.warning("%s: %s attributions miss completeness by %.1f%% of the output change (tolerance "
                        "%.0f%%): raise callbacks.explain.methods.%s.n_steps (now %s) for faithful maps.",
                        self.run_name, name, 100 * error, 100 * tolerance, name,
                        getattr(method, "n_steps", "?"))

    def _write_overlays(self, out_dir: Path, images: torch.Tensor, sample: list[tuple[str, int]],
                        predicted: torch.Tensor, classes: list[str],
                        maps: dict[str, torch.Tensor]) -> list[str]:
        if not self.overlays:
            return []
        pictures = _display(images)
        written = []
        for i, ((path, label), guess) in enumerate(zip(sample, predicted.tolist())):
            panels = [(f"{name} ({classes[label]})", maps[attribution_maps.map_key(name, "label")][i].numpy())
                      for name in self.methods]
            if guess != label:
                panels += [(f"{name} ({classes[guess]})",
                            maps[attribution_maps.map_key(name, "predicted")][i].numpy())
                           for name in self.methods]
            title = f"{path}  label {classes[label]}, predicted {classes[guess]}"
            relative = f"overlays/{i:03d}_{Path(path).stem}.jpg"
            atomic_write_bytes(out_dir / relative,
                                       attribution_maps.overlay_jpeg(pictures[i], panels, title))
            written.append(relative)
        return written

