"""The report's figures as PNG files (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from resomap.io import atomic_write_bytes  # noqa: E402

# (resolution, value, ci_low, ci_high); the interval may be NaN.
Point = tuple[int, float, float, float]


def save(figure: Figure, path: Path) -> Path:
    """Write the figure atomically and release it."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def lines_by_model(series: dict[str, Sequence[Point]], ylabel: str, title: str, path: Path,
                   log_scale: bool = False) -> Path:
    """One line per model against resolution, with the CI as error bars where known."""
    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    for model, points in sorted(series.items()):
        points = sorted(points)
        res = [p[0] for p in points]
        values = np.array([p[1] for p in points])
        low = np.array([p[2] for p in points])
        high = np.array([p[3] for p in points])
        errors = np.vstack([np.nan_to_num(values - low), np.nan_to_num(high - values)])
        axes.errorbar(res, values, yerr=errors, marker="o", capsize=3, label=model)
    resolutions = sorted({p[0] for points in series.values() for p in points})
    axes.set_xticks(resolutions, [str(r) for r in resolutions])
    if log_scale:
        axes.set_xscale("log")
        axes.set_yscale("log")
        axes.set_xticks(resolutions, [str(r) for r in resolutions])
        axes.minorticks_off()
    axes.set_xlabel("input resolution (px)")
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    return save(figure, path)


def pareto_scatter(points: Sequence[tuple[str, int, float, float]], frontier: Sequence[int],
                   xlabel: str, path: Path) -> Path:
    """Balanced accuracy against a cost for every (model, resolution); the frontier joined."""
    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    for model in sorted({p[0] for p in points}):
        mine = [p for p in points if p[0] == model]
        axes.scatter([p[3] for p in mine], [p[2] for p in mine], label=model, s=36)
        for _, res, acc, cost in mine:
            axes.annotate(str(res), (cost, acc), fontsize=7, xytext=(3, 3), textcoords="offset points")
    best = sorted((points[i] for i in frontier), key=lambda p: p[3])
    axes.plot([p[3] for p in best], [p[2] for p in best], "k--", lw=1, label="Pareto frontier")
    axes.scatter([p[3] for p in best], [p[2] for p in best], s=110, facecolors="none", edgecolors="k")
    axes.set_xscale("log")
    axes.set_xlabel(xlabel)
    axes.set_ylabel("balanced accuracy")
    axes.set_title("Accuracy against cost")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    return save(figure, path)


def confusion(matrix: Sequence[Sequence[int]], classes: Sequence[str], title: str, path: Path) -> Path:
    """Row-normalised confusion matrix (recall on the diagonal) with the raw counts written in."""
    counts = np.asarray(matrix, dtype=float)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = max(3.6, 0.55 * len(classes) + 1.6)
    figure, axes = plt.subplots(figsize=(size, size))
    axes.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for (i, j), value in np.ndenumerate(counts):
        axes.text(j, i, str(int(value)), ha="center", va="center", fontsize=7,
                  color="white" if rates[i, j] > 0.6 else "black")
    axes.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    axes.set_yticks(range(len(classes)), classes)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title, fontsize=9)
    return save(figure, path)


def heatmap(matrix: dict[int, dict[int, float]], title: str, path: Path) -> Path:
    """Train resolution (rows) x test resolution (columns) balanced accuracy."""
    rows = sorted(matrix)
    cols = sorted({test for row in matrix.values() for test in row})
    values = np.array([[matrix[r].get(c, math.nan) for c in cols] for r in rows])
    figure, axes = plt.subplots(figsize=(1.0 + 0.8 * len(cols) + 1.5, 1.0 + 0.6 * len(rows)))
    finite = values[np.isfinite(values)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    image = axes.imshow(values, cmap="viridis", vmin=low, vmax=max(high, low + 1e-6))
    for (i, j), value in np.ndenumerate(values):
        if np.isfinite(value):
            light = value > (low + high) / 2  # viridis is light at the top of its range
            axes.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8,
                      color="black" if light else "white")
    axes.set_xticks(range(len(cols)), [str(c) for c in cols])
    axes.set_yticks(range(len(rows)), [str(r) for r in rows])
    axes.set_xlabel("test resolution (px)")
    axes.set_ylabel("train resolution (px)")
    axes.set_title(title, fontsize=9)
    figure.colorbar(image, ax=axes, label="balanced accuracy")
    return save(figure, path)
