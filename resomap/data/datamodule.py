"""A LightningDataModule over ``root/{train,val,test}/{class}/*`` at one resolution."""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader
from torchvision import datasets
from torchvision.transforms import v2

from resomap.data import cache, device_batches, loader_workers
from resomap.data.batch_augment import BatchAugment, normalize
from resomap.data.io import (
    IMAGE_EXTENSIONS,
    image_files,
    is_image_file,
    is_visible,
    load_rgb,
    visible_folders,
)
from resomap.data.validate import validate_images
from resomap.errors import ConfigError, ResoMapError

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SPLITS = ("train", "val", "test")
PIPELINES = ("classic", "cached")
DEVICE_CACHE = ("auto", "true", "false")
# Share of free accelerator memory a cached data set may take under device_cache=auto.
DEVICE_CACHE_SHARE = 0.5
# Images found unreadable (or none) per (root, fingerprint, on_bad_image), for the jobs of a
# sweep and the train x test matrix that set up the same data again in this process.
_VALIDATED: dict[tuple[str, str, str], list[str]] = {}


class DatasetLayoutError(ResoMapError, ValueError):
    """The data folder does not have the layout ResoMap reads."""


def list_classes(root: Path) -> list[str]:
    """Class names from ``root/train``, checked identical in every split."""
    expected = f"expected {root}/{{train,val,test}}/<class>/<images>"
    if not root.is_dir():
        raise DatasetLayoutError(f"Data root {root} does not exist; {expected}.")
    per_split = {}
    for split in SPLITS:
        split_dir = root / split
        if not split_dir.is_dir():
            raise DatasetLayoutError(f"Split folder {split_dir} is missing; {expected}.")
        per_split[split] = [path.name for path in visible_folders(split_dir)]
        if not per_split[split]:
            raise DatasetLayoutError(f"Split folder {split_dir} has no class folders; {expected}.")
    classes = per_split["train"]
    for split in SPLITS[1:]:
        if per_split[split] != classes:
            only_here = sorted(set(per_split[split]) - set(classes))
            missing = sorted(set(classes) - set(per_split[split]))
            raise DatasetLayoutError(
                f"Class folders of {root / split} differ from {root / 'train'}: "
                f"only in {split}: {only_here or 'none'}; missing from {split}: {missing or 'none'}. "
                "Every split must have the same class folders."
            )
    for split in SPLITS:
        for name in classes:
            folder = root / split / name
            if not image_files(folder):
                raise DatasetLayoutError(f"Class folder {folder} has no images "
                                         f"({' '.join(IMAGE_EXTENSIONS)}); {expected}.")
    return classes


# Content hashes of images by data root, for the jobs of a sweep in one process.
_CONTENT_HASHES: dict[str, dict[str, list]] = {}


def dataset_fingerprint(root: Path, cache_file: Path | None = None) -> str:
    """A short hash of every image's relative path and bytes: changes when any image does, even
    an edit that keeps its size. Symlinked split, class or image paths are followed; hidden and
    OS files (``._*``, ``.DS_Store``, ``__MACOSX``) are left out as everywhere else.

    Each image's content hash is kept under its (size, mtime_ns, inode) in ``cache_file`` (JSON)
    and in this process, so an unchanged set costs one ``stat`` per image and no file read.
    """
    import json

    from resomap.io import write_json

    try:
        known = json.loads(cache_file.read_text()) if cache_file is not None and cache_file.is_file() else {}
    except (OSError, ValueError):
        known = {}
    known = {**_CONTENT_HASHES.get(str(root), {}), **(known if isinstance(known, dict) else {})}
    found: dict[str, list] = {}
    for split in SPLITS:
        for path in image_files(root / split):  # the one listing: hidden folders out, links followed
            info = path.stat()  # follows symlinks: the image's own bytes
            stamp = [info.st_size, info.st_mtime_ns, info.st_ino]
            relative = path.relative_to(root).as_posix()
            cached = known.get(relative)
            if isinstance(cached, list) and len(cached) == 4 and cached[:3] == stamp:
                found[relative] = cached
                continue
            digest = hashlib.sha256()
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            found[relative] = [*stamp, digest.hexdigest()]
    _CONTENT_HASHES[str(root)] = found
    if cache_file is not None and found != known:
        try:
            write_json(cache_file, found)
        except OSError as error:  # a read-only cache costs time, never the fingerprint
            log.warning("Could not keep the data fingerprint cache %s: %s", cache_file, error)
    total = hashlib.sha256()
    for relative in sorted(found):
        total.update(f"{relative}:{found[relative][3]}\n".encode())
    return total.hexdigest()[:16]


def train_transform(image_size: int, rotation: float, color_jitter: Sequence[float],
                    horizontal_flip: float, vertical_flip: float) -> v2.Compose:
    """Per-image augmentation; the same strength at every resolution, only the size changes."""
    return v2.Compose([
        cache.resize(image_size),
        v2.RandomHorizontalFlip(horizontal_flip),
        v2.RandomVerticalFlip(vertical_flip),
        v2.RandomRotation(rotation),
        v2.ColorJitter(*color_jitter),
        v2.PILToTensor(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def eval_transform(image_size: int) -> v2.Compose:
    return v2.Compose([
        cache.resize(image_size),
        v2.PILToTensor(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


class VisibleImageFolder(datasets.ImageFolder):
    """torchvision's ImageFolder that never takes a hidden or OS folder (``.ipynb_checkpoints``,
    ``__MACOSX``) as a class, nor an image inside one (``bcc/.thumbnails/x.png``) as a sample:
    the filter of :mod:`resomap.data.io`, the same as validation and the fingerprint apply."""

    def find_classes(self, directory: str | Path) -> tuple[list[str], dict[str, int]]:
        classes = [path.name for path in visible_folders(directory)]
        if not classes:
            raise FileNotFoundError(f"Couldn't find any class folder in {directory}.")
        return classes, {name: index for index, name in enumerate(classes)}


def _visible_image(split_dir: Path, skipped: set[str]) -> Callable[[str], bool]:
    def accept(path: str) -> bool:
        return is_image_file(path) and is_visible(path, split_dir) and path not in skipped

    return accept


class ImageFolderDataModule(pl.LightningDataModule):
    """Train/val/test ImageFolders resized to ``image_size`` x ``image_size``.

    ``generator``, when given, is called with the root to create the data on first use
    (the embedded synthetic set); a user's own folder is read as it is.

    ``pipeline="classic"`` decodes, resizes and augments every image in DataLoader workers
    in every epoch. ``pipeline="cached"`` decodes each split once into a uint8 cache under
    ``cache_dir`` (resomap.data.cache; ``cache_sizes``: other resolutions to fill in the same
    decode pass), loads whole uint8 batches, and augments (resomap.data.batch_augment) and
    normalises them:

    - on an accelerator, on the device in ``on_after_batch_transfer``; ``device_cache`` keeps
      the whole split in its memory (auto: when it fits), shared with later jobs of the same
      process at the same resolution, and batches are indexed there (``device_batches.DeviceBatches``);
    - on the CPU, training batches are augmented and normalised in the DataLoader's workers,
      written straight into shared memory; evaluation batches need no worker and are
      normalised in ``on_after_batch_transfer``. ``device_cache=true`` on the CPU holds the
      splits in process memory and does everything in the training process (what
      ``python -m resomap.bench`` compares with a bare PyTorch loop).

    ``timing`` records the seconds ``setup`` took and how much of it built caches.
    """

    def __init__(self, root: str, image_size: int, batch_size: int = 32,
                 eval_batch_size: int | None = None, num_workers: int = 2,
                 rotation: float = 15.0, color_jitter: Sequence[float] = (0.2, 0.2, 0.2, 0.02),
                 horizontal_flip: float = 0.5, vertical_flip: float = 0.5,
                 class_weighted_loss: bool = False, pin_memory: bool | None = None,
                 generator: Callable[..., Path] | None = None, name: str = "imagefolder",
                 on_bad_image: str = "error", validation_cache: str | None = None,
                 pipeline: str = "classic", cache_dir: str | None = None,
                 device_cache: str | bool = "auto", cache_workers: int | None = None,
                 cache_sizes: Sequence[int] | None = None) -> None:
        super().__init__()
        device_cache = str(device_cache).lower()
        if pipeline not in PIPELINES or device_cache not in DEVICE_CACHE:
            raise ConfigError(
                f"data.pipeline={pipeline!r}, data.device_cache={device_cache!r}: pipeline must be one "
                f"of {PIPELINES} and device_cache one of {DEVICE_CACHE}.")
        if pipeline == "cached" and not cache_dir:
            raise ConfigError("data.pipeline=cached needs data.cache_dir, the folder that holds the "
                             "decoded images (the configs set it to ${paths.cache_dir}).")
        self.root = Path(root).expanduser().resolve()
        self.image_size = image_size
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.augmentation = dict(rotation=rotation, color_jitter=tuple(color_jitter),
                                 horizontal_flip=horizontal_flip, vertical_flip=vertical_flip)
        self.class_weighted_loss = class_weighted_loss
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.generator = generator
        self.name = name
        self.on_bad_image = on_bad_image
        self.validation_cache = validation_cache
        self.fingerprint = ""
        self.skipped_images: list[str] = []
        self.classes: list[str] = []
        self.datasets: dict[str, datasets.ImageFolder] = {}
        self.pipeline = pipeline
        self.cache_dir = cache_dir
        self.device_cache = device_cache
        self.cache_workers = cache_workers
        self.cache_sizes = [int(size) for size in cache_sizes or ()]
        self.cached: dict[str, cache.CachedSplit] = {}
        self.target_device = torch.device("cpu")
        self.batch_augment = BatchAugment(**self.augmentation)
        self.timing: dict[str, float] = {}

    def prepare_data(self) -> None:
        if self.generator is not None:
            self.generator(root=self.root)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        started = time.perf_counter()
        self.classes = list_classes(self.root)
        self.fingerprint = dataset_fingerprint(self.root)
        checked = (str(self.root), self.fingerprint, self.on_bad_image)
        if checked not in _VALIDATED:
            _VALIDATED[checked] = validate_images(self.root, SPLITS, self.classes, self.fingerprint,
                                                  self.on_bad_image, self.validation_cache)
        self.skipped_images = list(_VALIDATED[checked])
        building = 0.0
        skipped = {str(self.root / name) for name in self.skipped_images}
        transforms = {"train": train_transform(self.image_size, **self.augmentation),
                      "val": eval_transform(self.image_size), "test": eval_transform(self.image_size)}
        for split in SPLITS:
            dataset = VisibleImageFolder(str(self.root / split), transform=transforms[split],
                                         loader=load_rgb, allow_empty=False,
                                         is_valid_file=_visible_image(self.root / split, skipped))
            self.datasets[split] = dataset
            if self.pipeline == "cached":
                start = time.perf_counter()
                images, labels = cache.load_or_build(dataset.samples, self.image_size, self.cache_dir,
                                                     self.name, self.fingerprint, split,
                                                     self.cache_workers, self.cache_sizes)
                building += time.perf_counter() - start
                self.cached[split] = cache.CachedSplit(images, labels, source=str(images.filename))
        self.timing = {"setup_sec": time.perf_counter() - started, "cache_load_or_build_sec": building}

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def class_counts(self, split: str = "train") -> list[int]:
        counts = torch.bincount(torch.tensor(self.datasets[split].targets),
                                minlength=self.num_classes)
        return counts.tolist()

    def class_weights(self) -> torch.Tensor | None:
        """Inverse-frequency weights of the training split (mean 1), or None when disabled."""
        if not self.class_weighted_loss:
            return None
        counts = torch.tensor(self.class_counts("train"), dtype=torch.float32)
        return counts.sum() / (len(counts) * counts.clamp(min=1))

    def _training_device(self) -> torch.device:
        """The trainer's device; ``target_device`` when no trainer is attached (benchmarks)."""
        return self.trainer.strategy.root_device if self.trainer is not None else self.target_device

    def _device_cached(self, split: str) -> cache.CachedSplit | None:
        """The split in the training device's memory when device_cache allows and it fits, else None.

        On an accelerator, ``auto`` keeps it there when it takes at most DEVICE_CACHE_SHARE of
        the free memory; on the CPU only ``true`` holds it in process memory.
        """
        device = self._training_device()
        if self.device_cache == "false" or (device.type == "cpu" and self.device_cache != "true"):
            return None
        if device.type != "cuda":
            return cache.resident(self.cached[split], device)

        def fits(nbytes: int) -> bool:
            free, _ = torch.cuda.mem_get_info(device)
            if self.device_cache == "auto" and nbytes > DEVICE_CACHE_SHARE * free:
                log.info("Cached %s split (%.1f GB) does not fit in %s; streaming it from host memory",
                         split, nbytes / 1e9, device)
                return False
            return True

        return cache.resident(self.cached[split], device, fits)

    def device_cache_bytes(self) -> int:
        """Bytes of cached data this process holds in the training device's memory (0 if none):
        what a memory figure of the model must leave out."""
        return cache.resident_bytes(self._training_device())

    def _cached_loader(self, split: str, shuffle: bool) -> DataLoader | device_batches.DeviceBatches:
        """Batches of uint8 images straight from the cache (no per-image Python work).

        A split resident on the training device is served by ``device_batches.DeviceBatches``. Otherwise
        a DataLoader reads the memory-mapped file: for an accelerator the batches stay uint8 (a
        quarter of the bytes to copy, from pinned memory) and are augmented on it in
        ``on_after_batch_transfer``; training on the CPU, the workers augment and normalise
        training batches, overlapped with the training step as in the classic pipeline.
        """
        batch_size = self.batch_size if split == "train" else self.eval_batch_size
        on_device = self._device_cached(split)
        if on_device is not None:
            trainer = self.trainer
            seed = int(torch.randint(0, 2**31 - 1, ()))  # seed_everything makes it equal on every rank
            return device_batches.DeviceBatches(on_device, batch_size, shuffle, seed,
                                       rank=trainer.global_rank if trainer is not None else 0,
                                       world_size=trainer.world_size if trainer is not None else 1)
        cpu = self._training_device().type == "cpu"
        # Evaluation batches on the CPU need only normalising, cheaper than a worker's hand-over.
        workers = 0 if cpu and split != "train" else self.num_workers
        dataset = self.cached[split]
        if cpu and split == "train" and workers > 0:
            dataset = dataset.with_transform(self.batch_augment.into_shared_memory)
        rank = self.trainer.global_rank if self.trainer is not None else 0
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=workers,
            collate_fn=cache.passthrough,
            # Pinned host batches let Lightning's non_blocking copy overlap with compute.
            pin_memory=self.pin_memory and not cpu,
            persistent_workers=workers > 0,
            worker_init_fn=partial(loader_workers.worker_init, rank) if workers > 0 else None,
            multiprocessing_context=multiprocessing.get_context("fork") if workers > 0 else None,
        )

    def prepare_batch(self, batch: tuple[torch.Tensor, torch.Tensor],
                      training: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """A cached uint8 batch made ready for the model on its device: augmented (training)
        and normalised. Float batches (the classic pipeline's, or augmented by the CPU
        loader's workers) pass unchanged."""
        images, labels = batch
        if images.dtype != torch.uint8:
            return batch
        return (self.batch_augment(images) if training else normalize(images)), labels

    def on_after_batch_transfer(self, batch: tuple[torch.Tensor, torch.Tensor],
                                dataloader_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Cached batches arrive as uint8 on the device: augment (training only) and normalise there."""
        training = self.trainer is not None and self.trainer.training
        return self.prepare_batch(batch, training)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if self.pipeline == "cached":
            return self._cached_loader(split, shuffle)
        workers = self.num_workers
        return DataLoader(
            self.datasets[split],
            batch_size=self.batch_size if split == "train" else self.eval_batch_size,
            shuffle=shuffle,
            num_workers=workers,
            pin_memory=self.pin_memory,
            persistent_workers=workers > 0,
            # Fork keeps workers working inside joblib's loky processes too.
            multiprocessing_context=multiprocessing.get_context("fork") if workers > 0 else None,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
