"""Decode once: a split's images, resized to one resolution, kept as a uint8 memory-mapped array.

The classic pipeline decodes and resizes every JPEG in every epoch; at 600x450 that is most of
the cost of a small CNN's epoch. Here each (data set, split, resolution) is decoded once into
``{cache_dir}/{name}-{dataset fingerprint}/{split}-{size}px-{content key}.npy`` (N x 3 x S x S,
uint8) with its labels beside it, and training reads whole batches from that file. One decode
pass can fill several resolutions (``extra_sizes``): each image is decoded once and resized to
every size.

Within one process (Hydra's basic launcher runs a whole sweep in one), a split copied to an
accelerator stays there for the next job at the same resolution (:func:`resident`): the
registry holds one data set at one resolution per device and frees it when a job asks for
another. :class:`resomap.data.device_batches.DeviceBatches` then serves batches from it with
indices drawn on the device.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torchvision.transforms import v2
from tqdm.auto import tqdm

from resomap.data.io import load_rgb
from resomap.io import atomic_path, atomic_write_bytes

try:
    import fcntl
except ImportError:  # Windows: builders still never corrupt the cache, they may only duplicate work
    fcntl = None

log = logging.getLogger(__name__)

Sample = tuple[str, int]
# Bytes per host-to-device copy when a memory-mapped split moves to an accelerator.
CHUNK_BYTES = 256 * 2**20


def resize(image_size: int) -> v2.Resize:
    """The resize both pipelines use, so cached pixels equal the classic path's."""
    return v2.Resize((image_size, image_size), antialias=True)


def decode_resized(path: str | os.PathLike, image_size: int) -> np.ndarray:
    """``path`` decoded by :func:`load_rgb`, resized like the classic path, as a 3 x S x S uint8 array."""
    return decode_resized_many(path, [image_size])[0]


def decode_resized_many(path: str | os.PathLike, sizes: Sequence[int]) -> list[np.ndarray]:
    """``path`` decoded once and resized to each of ``sizes`` (3 x S x S uint8 arrays)."""
    image = load_rgb(path)
    return [np.asarray(resize(size)(image), dtype=np.uint8).transpose(2, 0, 1) for size in sizes]


def _file_lines(samples: Sequence[Sample]) -> list[str]:
    lines = []
    for path, label in samples:
        stat = os.stat(path)
        lines.append(f"{path}:{stat.st_size}:{stat.st_mtime_ns}:{label}\n")
    return lines


def content_key(samples: Sequence[Sample], image_size: int, lines: Sequence[str] | None = None) -> str:
    """Hash of every file's path, size, modification time and label, and the size: a change
    to any file (even one of the same byte size) gives a new key and so a rebuild."""
    digest = hashlib.sha256(f"{image_size}\n".encode())
    for line in lines if lines is not None else _file_lines(samples):
        digest.update(line.encode())
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


def _decode_into(paths: dict[int, Path], samples: Sequence[Sample], workers: int | None,
                 description: str) -> None:
    """Fill a new ``.npy`` file per size (``paths``: size -> file) with the decoded, resized
    images, in parallel; each image is decoded once whatever the number of sizes.

    Threads suffice: PIL releases the GIL while it decodes and resizes.
    """
    sizes = sorted(paths)
    arrays = [np.lib.format.open_memmap(paths[size], mode="w+", dtype=np.uint8,
                                        shape=(len(samples), 3, size, size)) for size in sizes]

    def fill(index: int) -> None:
        for array, pixels in zip(arrays, decode_resized_many(samples[index][0], sizes)):
            array[index] = pixels

    with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
        for _ in tqdm(pool.map(fill, range(len(samples))), total=len(samples), unit="img",
                      desc=description, mininterval=1.0):
            pass
    for array in arrays:
        array.flush()


def build(samples: Sequence[Sample], image_size: int, images_path: Path, labels_path: Path,
          workers: int | None = None, description: str = "") -> None:
    """Decode ``samples`` into ``images_path``; the files appear (atomically) only when complete."""
    build_many(samples, {image_size: (images_path, labels_path)}, workers, description)


def build_many(samples: Sequence[Sample], targets: dict[int, tuple[Path, Path]], workers: int | None = None,
               description: str = "") -> None:
    """Decode ``samples`` once into every ``size -> (images file, labels file)`` of ``targets``;
    each pair appears (atomically) only when complete."""
    sizes = ", ".join(f"{size}" for size in sorted(targets))
    buffer = io.BytesIO()
    np.save(buffer, np.asarray([label for _, label in samples], dtype=np.int64))
    with contextlib.ExitStack() as stack:
        temporary = {size: stack.enter_context(atomic_path(images)) for size, (images, _) in targets.items()}
        _decode_into(temporary, samples, workers, description or f"Caching {sizes} px")
        # Labels first, image files as the block ends: a reader takes the image file's presence
        # as "complete".
        for _, labels_path in targets.values():
            atomic_write_bytes(labels_path, buffer.getvalue())


def load_or_build(samples: Sequence[Sample], image_size: int, cache_dir: str | os.PathLike, name: str,
                  fingerprint: str, split: str, workers: int | None = None,
                  extra_sizes: Sequence[int] = ()) -> tuple[np.ndarray, np.ndarray]:
    """The split's cached images (memory-mapped, read-only) and labels, built on first use.

    When it has to be built, every size of ``extra_sizes`` without a cache file is built in
    the same decode pass (for the other resolutions of a sweep).
    """
    lines = _file_lines(samples)
    key = content_key(samples, image_size, lines)
    images_path, labels_path = cache_paths(cache_dir, name, fingerprint, split, image_size, key)
    if not images_path.is_file():
        with _exclusive(images_path.with_suffix(".lock")):
            if not images_path.is_file():
                targets = {image_size: (images_path, labels_path)}
                for size in sorted({int(size) for size in extra_sizes} - {image_size}):
                    other = cache_paths(cache_dir, name, fingerprint, split, size,
                                        content_key(samples, size, lines))
                    if not other[0].is_file():
                        targets[size] = other
                log.info("Decoding %d %s images at %s px into %s", len(samples), split,
                         ", ".join(map(str, sorted(targets))), images_path.parent)
                build_many(samples, targets, workers,
                           description=f"Caching {name} {split} {', '.join(map(str, sorted(targets)))}px")
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
    DataLoader's workers, for CPU training). ``source`` names the cache file the images came
    from (the identity :func:`resident` keys on).
    """

    def __init__(self, images: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor,
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 source: str | None = None) -> None:
        self.images = images
        self.labels = torch.as_tensor(np.asarray(labels)) if isinstance(labels, np.ndarray) else labels
        self.transform = transform
        self.source = source

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    @property
    def device(self) -> torch.device:
        return self.images.device if isinstance(self.images, torch.Tensor) else torch.device("cpu")

    def to(self, device: torch.device) -> CachedSplit:
        """The whole split copied to ``device`` (accelerator memory, or process memory for "cpu").

        From a memory map to an accelerator the copy goes in chunks straight from the mapped
        file, so the host never holds a second copy of the split (23.6 GB for the seed's
        training split at 512 px).
        """
        device = torch.device(device)
        if isinstance(self.images, torch.Tensor) or device.type == "cpu":
            images = self._take(slice(None)).to(device)
        else:
            images = copy_in_chunks(self.images, device)
        return CachedSplit(images, self.labels.to(device), self.transform, self.source)

    def with_transform(self, transform: Callable[[torch.Tensor], torch.Tensor] | None) -> CachedSplit:
        return CachedSplit(self.images, self.labels, transform, self.source)

    def _take(self, index: slice | Sequence[int] | torch.Tensor) -> torch.Tensor:
        if isinstance(self.images, torch.Tensor):
            if not isinstance(index, (slice, torch.Tensor)):
                index = torch.as_tensor(index, device=self.images.device)
            return self.images[index]
        if isinstance(index, torch.Tensor):
            index = index.tolist()
        if not isinstance(index, slice):
            # Sorted reads are sequential on disk; the order is restored afterwards.
            order = np.argsort(index)
            rows = np.empty((len(index), *self.images.shape[1:]), dtype=np.uint8)
            rows[order] = self.images[np.asarray(index)[order]]
            return torch.from_numpy(rows)
        # A copy: a slice of the memory map would still be the (read-only) file.
        return torch.from_numpy(np.array(self.images[index]))

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        labels = self.labels[torch.as_tensor(indices, device=self.labels.device)]
        images = self._take(list(indices))
        return (self.transform(images) if self.transform else images), labels

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = self.__getitems__([index])
        return images[0], labels[0]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.images.shape)) + len(self.labels) * 8


def copy_in_chunks(array: np.ndarray, device: torch.device | str) -> torch.Tensor:
    """``array`` (e.g. a memory map) as a tensor on ``device``, copied CHUNK_BYTES at a time."""
    images = torch.empty(array.shape, dtype=torch.from_numpy(array[:0]).dtype, device=device)
    step = max(1, CHUNK_BYTES // max(1, int(np.prod(array.shape[1:])) * array.itemsize))
    for start in range(0, len(images), step):
        images[start:start + step].copy_(torch.from_numpy(np.array(array[start:start + step])))
    return images


def passthrough(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``collate_fn`` for :class:`CachedSplit`: its ``__getitems__`` already returns a batch."""
    return batch


# source file, device -> the split on that device; one data set at one resolution per device.
_RESIDENT: dict[tuple[str, str], CachedSplit] = {}


def _group(split: CachedSplit) -> tuple[str, int]:
    """Splits that may be resident together: the same cache folder (data set) and resolution."""
    return str(Path(split.source or "").parent), split.image_size


def resident(split: CachedSplit, device: torch.device, fits: Callable[[int], bool] | None = None
             ) -> CachedSplit | None:
    """``split`` in ``device``'s memory, reused from an earlier job of this process when it is
    already there. Asking for another data set or resolution first frees what the registry
    holds on that device; ``fits(nbytes)`` (checked after that) may refuse the copy (None)."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())  # one key per GPU
    if split.source is None:
        return split.to(device) if fits is None or fits(split.nbytes) else None
    key = (split.source, str(device))
    if key in _RESIDENT:
        return _RESIDENT[key]
    stale = [k for k, held in _RESIDENT.items() if k[1] == str(device) and _group(held) != _group(split)]
    for k in stale:
        del _RESIDENT[k]
    if stale and device.type == "cuda":
        torch.cuda.empty_cache()
    if fits is not None and not fits(split.nbytes):
        return None
    _RESIDENT[key] = split.to(device)
    return _RESIDENT[key]


def resident_bytes(device: torch.device | str | None = None) -> int:
    """Bytes of cached data this process holds in ``device``'s memory (all devices: None)."""
    if device is not None:
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
    return sum(split.nbytes for (_, where), split in _RESIDENT.items()
               if device is None or where == str(device))


def release(device: torch.device | str | None = None) -> None:
    """Free the resident splits of ``device`` (all devices: None), e.g. before an OOM retry."""
    for key in [key for key in _RESIDENT if device is None or key[1] == str(torch.device(device))]:
        del _RESIDENT[key]
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
