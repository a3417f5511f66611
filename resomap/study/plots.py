"""The report's figures as PNG files (matplotlib ``Figure`` objects: no display, no global state)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib import ticker
from matplotlib.figure import Figure

from resomap.io import save_figure

# (resolution, value, ci_low, ci_high); the interval may be NaN (not known).
Point = tuple[int, float, float, float]
# 100 dpi: a 6.4 in chart is 640 px, shown at its own size in the report (at most 1100 px wide).
DPI = 100
# Charts are flat colours and their anti-aliased edges: a 256-colour palette keeps them as drawn
# at about a third of the bytes (the report must stay under 2 MB with every figure embedded).
PALETTE = 256


def save(figure: Figure, path: Path) -> Path:
    """Write the figure atomically, as a palette PNG."""
    return save_figure(figure, path, dpi=DPI, palette=PALETTE, bbox_inches="tight")


def readable_log(axis) -> None:
    """Log-scale ticks at 1, 2 and 5 times powers of ten, labelled as plain numbers (``20``,
    ``0.5``, ``1e+12``), so a range within one decade still gets labelled ticks."""
    axis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(ticker.NullFormatter())


def _resolution_axis(axes, resolutions: Sequence[int], log_scale: bool = False) -> None:
    if log_scale:
        axes.set_xscale("log")
        axes.set_yscale("log")
        axes.minorticks_off()
        readable_log(axes.yaxis)
    axes.set_xticks(list(resolutions), [str(r) for r in resolutions])
    axes.set_xlabel("input resolution (px)")


def lines_by_model(series: dict[str, Sequence[Point]], ylabel: str, title: str, path: Path,
                   log_scale: bool = False) -> Path:
    """One line per model against resolution; each interval drawn from its ends.

    The interval is a vertical bar from ``ci_low`` to ``ci_high`` with caps, not an error bar
    of lengths around the estimate: a bootstrap interval need not contain its estimate, and
    matplotlib refuses negative error lengths. Models are shifted sideways by a few percent
    so their bars do not hide each other.
    """
    figure = Figure(figsize=(6.4, 4.2))
    axes = figure.subplots()
    models = sorted(series)
    for index, model in enumerate(models):
        points = sorted(series[model])
        shift = 1 + 0.012 * (index - (len(models) - 1) / 2)
        res = np.array([p[0] for p in points], dtype=float) * shift
        values = np.array([p[1] for p in points], dtype=float)
        line = axes.plot(res, values, marker="o", label=model)[0]
        for x, _, low, high in ((r, *p[1:]) for r, p in zip(res, points)):
            if math.isfinite(low) and math.isfinite(high):
                axes.vlines(x, low, high, color=line.get_color(), linewidth=1.4)
                axes.plot([x, x], [low, high], linestyle="none", marker="_", markersize=9,
                          color=line.get_color())
    resolutions = sorted({p[0] for points in series.values() for p in points})
    _resolution_axis(axes, resolutions, log_scale)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    if models:
        axes.legend(fontsize="small")
    return save(figure, path)


def class_lines(per_class: dict[str, Sequence[tuple[int, float | None]]], ylabel: str, title: str,
                path: Path) -> Path:
    """One line per class against resolution (e.g. one-vs-rest AUROC of each class)."""
    figure = Figure(figsize=(6.4, 4.2))
    axes = figure.subplots()
    for name, points in per_class.items():
        points = sorted(p for p in points if p[1] is not None and math.isfinite(p[1]))
        if points:
            axes.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name)
    resolutions = sorted({p[0] for points in per_class.values() for p in points})
    _resolution_axis(axes, resolutions)
    axes.set_ylabel(ylabel)
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small", ncol=2)
    return save(figure, path)


def cost_curves(curves: Sequence[tuple[int, Sequence[float], Sequence[float]]], xlabel: str, ylabel: str,
                title: str, path: Path, budgets: Sequence[float] = ()) -> Path:
    """Validation metric against cumulative training cost, one colour per resolution
    (``curves``: (resolution, costs, values), one per run); budgets as dashed verticals."""
    figure = Figure(figsize=(6.4, 4.2))
    axes = figure.subplots()
    resolutions = sorted({res for res, _, _ in curves})
    colours = {res: f"C{i}" for i, res in enumerate(resolutions)}
    labelled: set[int] = set()
    for res, costs, values in sorted(curves, key=lambda c: c[0]):
        axes.plot(costs, values, marker="o", markersize=3, color=colours[res],
                  label=f"{res} px" if res not in labelled else None)
        labelled.add(res)
    for budget in budgets:
        axes.axvline(budget, color="grey", linestyle="--", linewidth=0.8)
    axes.set_xscale("log")
    readable_log(axes.xaxis)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    return save(figure, path)


def pareto_scatter(points: Sequence[tuple[str, int, float, float]], frontier: Sequence[int],
                   xlabel: str, ylabel: str, path: Path) -> Path:
    """The metric against a cost for every (model, resolution); the frontier joined."""
    figure = Figure(figsize=(6.4, 4.2))
    axes = figure.subplots()
    for model in sorted({p[0] for p in points}):
        mine = [p for p in points if p[0] == model]
        axes.scatter([p[3] for p in mine], [p[2] for p in mine], label=model, s=36)
        for _, res, acc, cost in mine:
            axes.annotate(str(res), (cost, acc), fontsize=7, xytext=(3, 3), textcoords="offset points")
    best = sorted((points[i] for i in frontier), key=lambda p: p[3])
    axes.plot([p[3] for p in best], [p[2] for p in best], "k--", lw=1, label="Pareto frontier")
    axes.scatter([p[3] for p in best], [p[2] for p in best], s=110, facecolors="none", edgecolors="k")
    axes.set_xscale("log")
    readable_log(axes.xaxis)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title("Accuracy against cost")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    return save(figure, path)


def short(text: str, length: int) -> str:
    """``text`` cut to ``length`` characters (an ellipsis marks the cut): a long record-derived
    name must not squeeze a panel to nothing."""
    return text if len(text) <= length else text[:length - 1] + "\u2026"


def confusion_grid(panels: Sequence[tuple[str, Sequence[Sequence[int]]]], classes: Sequence[str],
                   columns: int, path: Path) -> Path:
    """Every run's confusion matrix in one figure (small multiples, ``columns`` panels a row): rows
    are the true class, shading the share of the row (recall on the diagonal) on one colour scale
    shared by every panel, the image counts written in; ``panels`` are (title, counts)."""
    columns = max(1, min(columns, len(panels)))
    classes = [short(name, 14) for name in classes]
    rows = math.ceil(len(panels) / columns)
    side = min(2.3, 10.0 / columns)  # inches a panel: the figure stays within the report's width
    text_size = max(5.0, min(9.0, 0.42 * 72 * side / max(len(classes), 1)))
    figure = Figure(figsize=(side * columns + 1.4, side * rows + 0.9), layout="constrained")
    axes = np.atleast_2d(figure.subplots(rows, columns, squeeze=False))
    image = None
    for index, axis in enumerate(axes.ravel()):
        if index >= len(panels):
            axis.set_axis_off()
            continue
        title, matrix = panels[index]
        counts = np.asarray(matrix, dtype=float)
        rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        image = axis.imshow(rates, cmap="Blues", vmin=0, vmax=1)
        for (i, j), value in np.ndenumerate(counts):
            axis.text(j, i, str(int(value)), ha="center", va="center", fontsize=text_size,
                      color="white" if rates[i, j] > 0.6 else "black")
        column = index % columns
        last_row = index + columns >= len(panels)
        axis.set_xticks(range(len(classes)), classes if last_row else [], rotation=90, fontsize=text_size + 1)
        axis.set_yticks(range(len(classes)), classes if column == 0 else [], fontsize=text_size + 1)
        if last_row:
            axis.set_xlabel("predicted class", fontsize=text_size + 1)
        if column == 0:
            axis.set_ylabel("true class", fontsize=text_size + 1)
        axis.set_title(short(title, int(6 * side + 12)), fontsize=text_size + 2)
    if image is not None:
        figure.colorbar(image, ax=axes, shrink=0.8, label="share of the true class (recall on the diagonal)")
    return save(figure, path)


def heatmap(matrix: dict[int, dict[int, float]], title: str, path: Path) -> Path:
    """Train resolution (rows) x test resolution (columns) balanced accuracy."""
    rows = sorted(matrix)
    cols = sorted({test for row in matrix.values() for test in row})
    values = np.array([[matrix[r].get(c, math.nan) for c in cols] for r in rows])
    figure = Figure(figsize=(1.0 + 0.8 * len(cols) + 1.5, 1.0 + 0.6 * len(rows)))
    axes = figure.subplots()
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
    figure.colorbar(image, ax=axes, label="balanced accuracy (0-1)")
    return save(figure, path)
