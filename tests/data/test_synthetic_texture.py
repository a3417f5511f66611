"""The demo data's built-in resolution effect, measured as resomap/data/synthetic.py's docstring states it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from resomap.data.cache import resize
from resomap.data.synthetic import _draw, _ImageJob

RESOLUTIONS = (224, 256, 320, 384, 512)


def _fine_contrast(tmp_path: Path, label: str, index: int, size: int | None) -> float:
    """Standard deviation of the lesion's fine detail (grey level minus its 9 x 9 px local mean,
    inside the eroded lesion mask) after the training pipeline's resize to ``size`` px."""
    job = _ImageJob(str(tmp_path / f"{label}{index}.jpg"), str(tmp_path / f"{label}{index}.png"), label,
                    (7, 2, index), 600, 450)
    if not Path(job.path).exists():
        _draw(job)
    image, mask = Image.open(job.path).convert("RGB"), Image.open(job.mask_path).convert("L")
    if size is not None:
        image, mask = resize(size)(image), mask.resize((size, size), Image.Resampling.BOX)
    grey = np.asarray(image, np.float32).mean(axis=2)
    inside = ndimage.binary_erosion(np.asarray(mask) > 250, iterations=3)
    return float((grey - ndimage.uniform_filter(grey, 9))[inside].std())


def test_mel_texture_fades_gradually_below_320_px(tmp_path: Path):
    def excess(size: int | None) -> float:
        mel = np.mean([_fine_contrast(tmp_path, "mel", i, size) for i in range(3)])
        nv = np.mean([_fine_contrast(tmp_path, "nv", i, size) for i in range(3)])
        return float(np.sqrt(max(mel**2 - nv**2, 0.0)))  # mel's texture beyond nv's own noise

    source = excess(None)
    kept = {size: excess(size) / source for size in RESOLUTIONS}
    assert list(kept.values()) == sorted(kept.values())  # more resolution, more texture kept
    assert kept[224] < 0.08        # measured 4%: at the level of nv's own fine noise
    assert 0.08 < kept[256] < 0.25  # measured 14%: faint but present
    assert 0.2 < kept[320] < 0.45   # measured 31%
    assert kept[512] > 0.5          # measured 62%
