"""A LightningDataModule over ``root/{train,val,test}/{class}/*`` at one resolution."""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
from collections.abc import Callable, Sequence
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader
from torchvision import datasets
from torchvision.transforms import v2

from resomap.data.io import IMAGE_EXTENSIONS, load_rgb

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SPLITS = ("train", "val", "test")


class DatasetLayoutError(ValueError):
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
        per_split[split] = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
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
    return classes


def dataset_fingerprint(root: Path) -> str:
    """A short hash of every image's relative path and size: changes when the data does."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS):
        relative = path.relative_to(root)
        if relative.parts[0] in SPLITS:
            digest.update(f"{relative}:{path.stat().st_size}\n".encode())
    return digest.hexdigest()[:16]


def train_transform(image_size: int, rotation: float, color_jitter: Sequence[float],
                    horizontal_flip: float, vertical_flip: float) -> v2.Compose:
    """Per-image augmentation; the same strength at every resolution, only the size changes."""
    return v2.Compose([
        v2.Resize((image_size, image_size), antialias=True),
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
        v2.Resize((image_size, image_size), antialias=True),
        v2.PILToTensor(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


class ImageFolderDataModule(pl.LightningDataModule):
    """Train/val/test ImageFolders resized to ``image_size`` x ``image_size``.

    ``generator``, when given, is called with the root to create the data on first use
    (the embedded synthetic set); a user's own folder is read as it is.
    """

    def __init__(self, root: str, image_size: int, batch_size: int = 32,
                 eval_batch_size: int | None = None, num_workers: int = 2,
                 rotation: float = 15.0, color_jitter: Sequence[float] = (0.2, 0.2, 0.2, 0.02),
                 horizontal_flip: float = 0.5, vertical_flip: float = 0.5,
                 class_weighted_loss: bool = False, pin_memory: bool | None = None,
                 generator: Callable[..., Path] | None = None, name: str = "imagefolder") -> None:
        super().__init__()
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
        self.classes: list[str] = []
        self.datasets: dict[str, datasets.ImageFolder] = {}

    def prepare_data(self) -> None:
        if self.generator is not None:
            self.generator(root=self.root)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        self.classes = list_classes(self.root)
        transforms = {"train": train_transform(self.image_size, **self.augmentation),
                      "val": eval_transform(self.image_size), "test": eval_transform(self.image_size)}
        for split in SPLITS:
            dataset = datasets.ImageFolder(str(self.root / split), transform=transforms[split],
                                           loader=load_rgb, allow_empty=False)
            self.datasets[split] = dataset

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

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
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
