"""How far a decision's evidence reaches: power figures of an undecided comparison, and the
most one test image can move the metric.

Apart from :mod:`resomap.study.decide` because the report words these figures
(:data:`POWER_ASSUMPTIONS`, :func:`image_effect`) without deciding anything.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats as scipy_stats

from resomap.study.bootstrap import PairedDifference

POWER = 0.8
POWER_ASSUMPTIONS = (
    "Power figures: normal approximation, the difference staying at its estimate, its variance "
    "the seed-to-seed variance of the per-seed differences over the seeds plus the test-image "
    "variance scaled by (test images now / test images), a one-sided test at alpha / (looks x "
    "comparisons) (Holm's strictest step) with 80 % power.")


def power(difference: PairedDifference, margin: float, level: float,
          target: float = POWER) -> tuple[int | None, int | None]:
    """(seeds per resolution, test images) at which a one-sided test at ``level`` of the
    side the estimate points to (non-inferior above ``-margin``, inferior below) has ``target``
    power; see :data:`POWER_ASSUMPTIONS`. None where the figure is unknown (one seed: no
    seed variance) or out of reach by that route alone (e.g. the image variance alone already
    exceeds what the effect allows, so no number of seeds is enough)."""
    distance = abs(difference.difference + margin)
    image_variance = difference.image_variance
    if distance == 0 or not math.isfinite(image_variance) or difference.n_seeds < 2:
        return None, None
    z = scipy_stats.norm.ppf(1 - level) + scipy_stats.norm.ppf(target)
    allowed = (distance / z) ** 2  # the variance of the estimate at which the power is reached
    per_seed = float(np.var(difference.seed_differences, ddof=1))
    seed_variance = per_seed / difference.n_seeds
    seeds = images = None
    if allowed > image_variance:
        seeds = max(2, math.ceil(per_seed / (allowed - image_variance)))
    if allowed > seed_variance:
        images = math.ceil(difference.n_images * image_variance / (allowed - seed_variance))
        images = max(images, 1)
    return seeds, images


def image_effect(labels: np.ndarray) -> tuple[float, int, int]:
    """(effect, class, its test images): the most one test image can move balanced accuracy,
    ``1 / (classes x images of the smallest class)`` (one image of that class changes its recall
    by ``1 / images``, and balanced accuracy averages the classes' recalls). Macro AUROC moves by
    at most as much when that image passes every other class's image in the ranking."""
    values, counts = np.unique(np.asarray(labels), return_counts=True)
    smallest = int(np.argmin(counts))
    return 1.0 / (values.size * int(counts[smallest])), int(values[smallest]), int(counts[smallest])
