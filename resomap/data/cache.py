"""Decode once: a split's images, resized to one resolution, kept as a uint8 memory-mapped array.

The classic pipeline decodes and resizes every JPEG in every epoch; at 600x450 that is most of
the cost of a small CNN's epoch. Here each (data set, split, resolution) is decoded once into
``{cache_dir}/{name}-{dataset fingerprint}/{split}-{size}px-{content key}.npy`` (N x 3 x S x S,
uint8) with its labels beside it, and training reads whole batches from that file.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torchvision.transforms import v2
from tqdm.auto import tqdm

from resomap.data.io import load_rgb

try:
    import fcntl
except ImportError:  # Windows: builders still never corrupt the cache, they may only duplicate work
    fcntl = None

log = logging.getLogger(__name__)

Sample = tuple[str, int]


def resize(image_size: int) -> v2.Resize:
    """The resize both pipelines use, so cached pixels equal the classic path's."""
    return v2.Resize((image_size, image_size), antialias=True)


def decode_resized(path: str | os.PathLike, image_size: int) -> np.ndarray:
    """``path`` decoded by :func:`load_rgb`, resized like the classic path, as a 3 x S x S uint8 array."""
    image = resize(image_size)(load_rgb(path))
    return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)


def content_key(samples: Sequence[Sample], image_size: int) -> str:
    """Hash of every file's path, size, modification time and label, and the size: a change
    to any file (even one of the same byte size) gives a new key and so a rebuild."""
    digest = hashlib.sha256(f"{image_size}\n".encode())
    for path, label in samples:
        stat = os.stat(path)
        digest.update(f"{path}:{stat.st_size}:{stat.st_mtime_ns}:{label}\n".encode())
    return digest.hexdigest()[:16]


def cache_paths(cache_dir: str | os.PathLike, name: str, fingerprint: str, split: str,
                image_size: int, key: str) -> tuple[Path, Path]:
    """Image array and label array of one split at one resolution."""
    folder = Path(cache_dir).expanduser() / f"{name}-{fingerprint}"
    stem = f"{split}-{image_size}px-{key}"
    return folder / f"{stem}.npy", folder / f"{stem}.labels.npy"


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive lock so a second builder waits and then reuses the first one's file."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _temporary(final: Path) -> Path:
    """A unique name beside ``final`` to build into (same file system, so ``os.replace`` is atomic)."""
    return final.with_name(f".building-{os.getpid()}-{uuid.uuid4().hex[:8]}-{final.name}")


def _decode_into(path: Path, samples: Sequence[Sample], image_size: int, workers: int | None,
                 description: str) -> None:
    """Fill a new ``.npy`` file at ``path`` with the decoded, resized images, in parallel.

    Threads suffice: PIL releases the GIL while it decodes and resizes.
    """
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8,
                                      shape=(len(samples), 3, image_size, image_size))

    def fill(index: int) -> None:
        array[index] = decode_resized(samples[index][0], image_size)

    with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
        for _ in tqdm(pool.map(fill, range(len(samples))), total=len(samples), unit="img",
                      desc=description, mininterval=1.0):
            pass
    array.flush()


def build(samples: Sequence[Sample], image_size: int, images_path: Path, labels_path: Path,
          workers: int | None = None, description: str = "") -> None:
    """Decode ``samples`` into ``images_path``; the files appear (atomically) only when complete."""
    folder = images_path.parent
    folder.mkdir(parents=True, exist_ok=True)
    tmp_images, tmp_labels = _temporary(images_path), _temporary(labels_path)
    try:
        _decode_into(tmp_images, samples, image_size, workers, description or f"Caching {image_size}px")
        np.save(tmp_labels, np.asarray([label for _, label in samples], dtype=np.int64))
        # Labels first: a reader takes the image file's presence as "complete".
        os.replace(tmp_labels, labels_path)
        os.replace(tmp_images, images_path)
    finally:
        tmp_images.unlink(missing_ok=True)
        tmp_labels.unlink(missing_ok=True)


def load_or_build(samples: Sequence[Sample], image_size: int, cache_dir: str | os.PathLike, name: str,
                  fingerprint: str, split: str, workers: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The split's cached images (memory-mapped, read-only) and labels, built on first use."""
    key = content_key(samples, image_size)
    images_path, labels_path = cache_paths(cache_dir, name, fingerprint, split, image_size, key)
    if not images_path.is_file():
        with _exclusive(images_path.with_suffix(".lock")):
            if not images_path.is_file():
                log.info("Decoding %d %s images at %d px into %s", len(samples), split, image_size,
                         images_path)
                build(samples, image_size, images_path, labels_path, workers,
                      description=f"Caching {name} {split} {image_size}px")
        images_path.with_suffix(".lock").unlink(missing_ok=True)
    images = np.load(images_path, mmap_mode="r")
    labels = np.load(labels_path)
    if images.shape != (len(samples), 3, image_size, image_size) or len(labels) != len(samples):
        raise ValueError(
            f"Cache file {images_path} holds {images.shape} images and {len(labels)} labels, expected "
            f"{len(samples)} images of 3x{image_size}x{image_size}. Delete {images_path.parent} "
            "and run again to rebuild it."
        )
    return images, labels


class CachedSplit(torch.utils.data.Dataset):
    """Whole batches of uint8 images from a cache, on the CPU (memory-mapped) or any device.

    ``__getitems__`` lets the DataLoader fetch a batch with one indexing operation instead of
    one call per image; the loader's ``collate_fn`` must then pass batches through unchanged.
    ``transform``, when given, is applied to each uint8 batch where it is fetched (in the
    DataLoader's workers, for CPU training).
    """

    def __init__(self, images: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor,
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        self.images = images
        self.labels = torch.as_tensor(np.asarray(labels)) if isinstance(labels, np.ndarray) else labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device) -> CachedSplit:
        """The whole split moved to ``device`` (for instance GPU memory, when it fits)."""
        return CachedSplit(self._take(slice(None)).to(device), self.labels.to(device), self.transform)

    def with_transform(self, transform: Callable[[torch.Tensor], torch.Tensor] | None) -> CachedSplit:
        return CachedSplit(self.images, self.labels, transform)

    def _take(self, index: slice | Sequence[int]) -> torch.Tensor:
        if isinstance(self.images, torch.Tensor):
            if not isinstance(index, slice):
                index = torch.as_tensor(index, device=self.images.device)
            return self.images[index]
        if not isinstance(index, slice):
            # Sorted reads are sequential on disk; the order is restored afterwards.
            order = np.argsort(index)
            rows = np.empty((len(index), *self.images.shape[1:]), dtype=np.uint8)
            rows[order] = self.images[np.asarray(index)[order]]
            return torch.from_numpy(rows)
        return torch.from_numpy(np.ascontiguousarray(self.images[index]))

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        labels = self.labels[torch.as_tensor(indices, device=self.labels.device)]
        images = self._take(list(indices))
        return (self.transform(images) if self.transform else images), labels

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = self.__getitems__([index])
        return images[0], labels[0]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.images.shape))


def passthrough(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``collate_fn`` for :class:`CachedSplit`: its ``__getitems__`` already returns a batch."""
    return batch
