"""Attribution map files of one run and the scores computed on them.

The explain callback writes each run's maps under ``results/explanations/{run_name}/``; the
study reads them back to compare resolutions. Both use the names and scores defined here.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from PIL import Image  # noqa: E402
from scipy import stats  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from resomap.data.io import open_image  # noqa: E402
from resomap.io import figure_jpeg  # noqa: E402

log = logging.getLogger(__name__)

EXPLANATIONS = "explanations"
MAPS_FILE = "maps.npz"
TOP_FRACTION = 0.10


def explanation_dir(results_dir: str | Path, run_name: str) -> Path:
    return Path(results_dir) / EXPLANATIONS / run_name


def map_key(method: str, target: str) -> str:
    return f"{method}__{target}"


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman correlation of two maps' pixels; NaN when either map is constant."""
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan
    return float(stats.spearmanr(a, b).statistic)


def top_region(a: np.ndarray, fraction: float = TOP_FRACTION) -> np.ndarray:
    """Boolean mask of the ``fraction`` highest-valued pixels (ties broken by position)."""
    flat = np.ravel(a)
    count = max(1, math.ceil(fraction * flat.size))
    mask = np.zeros(flat.size, dtype=bool)
    mask[np.argpartition(-flat, count - 1)[:count]] = True
    return mask.reshape(np.shape(a))


def top_iou(a: np.ndarray, b: np.ndarray, fraction: float = TOP_FRACTION) -> float:
    """Intersection over union of the two maps' top-``fraction`` regions."""
    first, second = top_region(a, fraction), top_region(b, fraction)
    return float((first & second).sum() / (first | second).sum())


def mass_fraction(attribution: np.ndarray, mask: np.ndarray) -> float:
    """Share of the map's total attribution inside ``mask`` (values in [0, 1] per pixel)."""
    total = float(np.sum(attribution, dtype=np.float64))
    if total <= 0:
        return math.nan
    return float(np.sum(attribution * mask, dtype=np.float64) / total)


def resample(maps: np.ndarray, size: int) -> np.ndarray:
    """``(N, H, W)`` maps to ``(N, size, size)``, antialiased so downsampling averages."""
    tensor = torch.from_numpy(np.asarray(maps, dtype=np.float32))[:, None]
    if tensor.shape[-2:] == (size, size):
        return tensor[:, 0].numpy()
    return F.interpolate(tensor, size=(size, size), mode="bilinear", antialias=True,
                         align_corners=False)[:, 0].clamp_min(0).numpy()


def mask_path(data_root: str | Path, image: str) -> Path:
    """Where the synthetic data set keeps the lesion mask of ``image`` (``split/class/name``)."""
    relative = Path(image)
    return Path(data_root) / "masks" / relative.parent / f"{relative.stem}.png"


def load_mask(data_root: str | Path, image: str, size: int) -> np.ndarray | None:
    """The lesion mask of ``image`` squashed to ``size`` x ``size`` like the image (soft
    values: the covered share of each pixel), or None when the data set has no masks."""
    path = mask_path(data_root, image)
    if not path.is_file():
        return None
    with open_image(path) as mask:
        resized = mask.convert("L").resize((size, size), Image.Resampling.BOX)
    return np.asarray(resized, dtype=np.float32) / 255.0


def nanmean(values: Sequence[float]) -> float | None:
    finite = [value for value in values if value is not None and math.isfinite(value)]
    return float(np.mean(finite)) if finite else None


def overlay_jpeg(image: np.ndarray, panels: list[tuple[str, np.ndarray]], title: str) -> bytes:
    """A JPEG of ``image`` (H, W, 3 in [0, 1]) beside each attribution map laid over it (a
    photograph under a colour map: JPEG holds it at a fraction of a PNG's size)."""
    figure = Figure(figsize=(2.2 * (len(panels) + 1), 2.5), layout="constrained")
    axes = figure.subplots(1, len(panels) + 1)
    axes[0].imshow(image)
    axes[0].set_title("image", fontsize=8)
    for axis, (label, attribution) in zip(axes[1:], panels):
        axis.imshow(image)
        top = float(np.percentile(attribution, 99.5)) or 1.0
        axis.imshow(attribution, cmap="jet", alpha=0.45, vmin=0, vmax=top)
        axis.set_title(label, fontsize=8)
    for axis in axes:
        axis.set_axis_off()
    figure.suptitle(title, fontsize=9)
    return figure_jpeg(figure, dpi=80, quality=85)
