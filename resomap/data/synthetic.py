"""A deterministic, dermoscopy-like image set with a built-in resolution effect.

Seven classes named as in the seed's skin-lesion dataset, imbalanced like it, drawn as
600x450 JPEGs. Most classes differ in colour, size and mid-scale texture, which any
resolution resolves. ``mel`` and ``nv`` share colour, shape and size and differ only in
a fine checkerboard of 2 px cells inside the lesion (a 4 px period, +-52 grey levels).
The training pipeline's antialiased resize fades it gradually, not at a threshold:
measured as the lesion's fine-detail contrast beyond nv's own (tests/data/
test_synthetic_texture.py), 224 px keeps about 4% of it (2 grey levels, at the level of
nv's own fine noise), 256 px 14%, 320 px 31%, 384 px 45% and 512 px 62%. A sweep on this
data therefore shows a real, known, graded resolution effect, concentrated in mel vs nv.

Each image's lesion mask is written beside the data (``masks/``) so attribution maps
can be scored against the true evidence.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from resomap.errors import ResoMapError

log = logging.getLogger(__name__)

CLASSES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
# Shares of the training split: the seed's shape (nv dominant, df and vasc rare),
# with a floor so that every class appears in every split of a small set.
CLASS_SHARES = {"akiec": 0.07, "bcc": 0.10, "bkl": 0.13, "df": 0.05, "mel": 0.16, "nv": 0.43,
                "vasc": 0.06}
SPLITS = ("train", "val", "test")
MARKER = "synthetic.json"

# Mean lesion colour (RGB) and radius range (px) per class.
_LESION = {
    "akiec": ((196, 104, 96), (70, 120)),
    "bcc": ((206, 136, 138), (70, 120)),
    "bkl": ((186, 146, 104), (80, 130)),
    "df": ((168, 118, 98), (45, 70)),
    "mel": ((120, 78, 56), (80, 130)),
    "nv": ((120, 78, 56), (80, 130)),
    "vasc": ((150, 34, 66), (60, 110)),
}
FINE_CONTRAST = 52  # +- grey levels of the mel checkerboard; zero mean, so nv matches its mean


@dataclass(frozen=True)
class _ImageJob:
    path: str
    mask_path: str
    label: str
    seed: tuple[int, ...]
    width: int
    height: int


def split_counts(n_images: int) -> dict[str, int]:
    """Images per class for a split of ``n_images``; every class gets at least two."""
    counts = {name: max(2, round(share * n_images)) for name, share in CLASS_SHARES.items()}
    counts["nv"] += n_images - sum(counts.values())
    return counts


def _lesion_mask(rng: np.random.Generator, width: int, height: int, radius: float) -> np.ndarray:
    """Boolean mask of an irregular blob: a circle whose radius wobbles with angle."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    cx = width / 2 + rng.uniform(-0.12, 0.12) * width
    cy = height / 2 + rng.uniform(-0.12, 0.12) * height
    angle = np.arctan2(yy - cy, xx - cx)
    wobble = np.ones_like(angle)
    for harmonic in (2, 3, 5):
        wobble += rng.uniform(0.02, 0.09) * np.cos(harmonic * angle + rng.uniform(0, 2 * np.pi))
    aspect = rng.uniform(0.75, 1.0)
    dist = np.hypot(xx - cx, (yy - cy) / aspect)
    return dist < radius * wobble


def _smooth_noise(rng: np.random.Generator, width: int, height: int, cells: int) -> np.ndarray:
    """Zero-mean noise with features about ``width / cells`` px wide."""
    small = rng.standard_normal((max(2, cells * height // width), cells)).astype(np.float32)
    image = Image.fromarray(small, mode="F").resize((width, height), Image.BICUBIC)
    return np.asarray(image)


def _draw(job: _ImageJob) -> None:
    rng = np.random.default_rng(job.seed)
    width, height = job.width, job.height
    skin = np.array([224, 182, 152], np.float32) + rng.normal(0, 8, 3)
    image = np.empty((height, width, 3), np.float32)
    image[:] = skin
    image += 10 * _smooth_noise(rng, width, height, 6)[..., None]

    colour, (r_min, r_max) = _LESION[job.label]
    scale = width / 600
    mask = _lesion_mask(rng, width, height, rng.uniform(r_min, r_max) * scale)
    lesion = np.array(colour, np.float32) + rng.normal(0, 7, 3)
    lesion_layer = np.broadcast_to(lesion, image.shape).copy()
    lesion_layer += 6 * _smooth_noise(rng, width, height, 12)[..., None]

    if job.label == "mel":
        # Fine evidence: 2 px cells, zero mean, so an antialiased resize to 224 px nearly erases it.
        yy, xx = np.mgrid[0:height, 0:width]
        checker = ((yy // 2 + xx // 2) % 2) * 2 - 1
        lesion_layer += FINE_CONTRAST * checker[..., None]
    elif job.label == "bcc":
        blobs = _smooth_noise(rng, width, height, 30) > 1.3
        lesion_layer[blobs] = (90, 100, 130)
    elif job.label == "akiec":
        lesion_layer += 22 * _smooth_noise(rng, width, height, 60)[..., None]
    elif job.label == "df":
        centre = _lesion_mask(rng, width, height, 0.35 * r_min * scale) & mask
        lesion_layer[centre] = (236, 226, 214)

    image = np.where(mask[..., None], lesion_layer, image)
    image += rng.normal(0, 3, image.shape).astype(np.float32)
    pixels = np.clip(image, 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(job.path, quality=95)
    Image.fromarray(mask.astype(np.uint8) * 255).save(job.mask_path, optimize=True)


class DataSetExistsError(ResoMapError, FileExistsError):
    """The folder holds another data set than the synthetic one asked for."""


def generate(root: str | os.PathLike, n_train: int = 420, n_val: int = 140, n_test: int = 175,
             width: int = 600, height: int = 450, seed: int = 0, workers: int | None = None) -> Path:
    """Write the data set under ``root`` unless an identical one is already there.

    The set is built in a temporary sibling folder and renamed into place, so an
    interrupted or concurrent generation never leaves a half-written data set.
    """
    root = Path(root)
    spec = {"n_train": n_train, "n_val": n_val, "n_test": n_test, "width": width,
            "height": height, "seed": seed, "classes": list(CLASSES), "version": 1}
    marker = root / MARKER
    if marker.is_file() and json.loads(marker.read_text()) == spec:
        return root
    if root.exists() and any(root.iterdir()):
        raise DataSetExistsError(
            f"{root} holds a different data set than the synthetic one requested ({spec}); "
            "remove the folder or point data.root somewhere else."
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    jobs = []
    for split_index, (split, n_images) in enumerate(zip(SPLITS, (n_train, n_val, n_test))):
        for class_index, (label, count) in enumerate(split_counts(n_images).items()):
            image_dir = staging / split / label
            mask_dir = staging / "masks" / split / label
            image_dir.mkdir(parents=True)
            mask_dir.mkdir(parents=True)
            for i in range(count):
                jobs.append(_ImageJob(str(image_dir / f"{label}_{i:05d}.jpg"),
                                      str(mask_dir / f"{label}_{i:05d}.png"), label,
                                      (seed, split_index, class_index, i), width, height))
    log.info("Generating %d synthetic images into %s", len(jobs), root)
    workers = workers or min(len(jobs), os.cpu_count() or 1)
    started = time.perf_counter()
    quarters = {len(jobs) * quarter // 4: quarter for quarter in (1, 2, 3)}
    with ProcessPoolExecutor(workers) if workers > 1 else contextlib.nullcontext() as pool:
        drawn = pool.map(_draw, jobs, chunksize=16) if pool is not None else map(_draw, jobs)
        for done, _ in enumerate(drawn, 1):
            if done in quarters:  # a line per quarter: generation takes a minute at the demo's size
                log.info("Generated %d/%d images (%d %%) in %.0f s", done, len(jobs), 25 * quarters[done],
                         time.perf_counter() - started)
    (staging / MARKER).write_text(json.dumps(spec, indent=2))
    try:
        if root.exists():
            root.rmdir()
        staging.rename(root)
    except OSError:
        # Another process finished first; keep its copy if it is the same data set.
        shutil.rmtree(staging, ignore_errors=True)
        if not (marker.is_file() and json.loads(marker.read_text()) == spec):
            raise
    return root
