"""Scores of attribution maps and their agreement across resolutions.

Per run, the explain callback saves maps under ``results/explanations/{run_name}/``.
Here every resolution's maps of one model are resampled to a common grid and compared
with the highest resolution's: Spearman rank correlation, IoU of the top-10% regions,
and the share of attribution mass inside the lesion (when the data set has masks).
"""

from __future__ import annotations

import csv
import io
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from resomap.config import seed_suffix  # noqa: E402
from resomap.io import atomic_write_bytes, atomic_write_text, to_strict_json  # noqa: E402
from resomap.measure.maps import (
    EXPLANATIONS,
    MAPS_FILE,
    explanation_dir,
    load_mask,
    map_key,
    mass_fraction,
    nanmean,
    rank_correlation,
    resample,
    top_iou,
)  # noqa: E402
from resomap.run import record as results  # noqa: E402

log = logging.getLogger(__name__)

AGREEMENT_TARGET = "label"  # the same class at every resolution, whatever each run predicted


def _load_maps(results_dir: Path, result: dict[str, Any]) -> dict[str, Any] | None:
    section = result.get("explain") or {}
    path = explanation_dir(results_dir, result["run_name"]) / section.get("maps_file", MAPS_FILE)
    if not path.is_file():
        log.warning("%s: explain section without its maps file %s; skipped", result["run_name"], path)
        return None
    with np.load(path) as saved:
        return {key: saved[key] for key in saved.files}


def agreement_table(results_dir: str | Path, grid: int | None = None,
                    target: str = AGREEMENT_TARGET) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Per-image and averaged agreement of every resolution with the highest, per model.

    ``grid``: side of the common grid (default: the model's lowest resolution, so no map
    is compared at detail it never had). Returns ``(summary_rows, per_image_rows)``.
    """
    results_dir = Path(results_dir)
    runs: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for _path, result in results.iter_results(results_dir):
        if isinstance(result, dict) and result.get("explain") and result.get("run_name"):
            runs[(result["model"], int(result.get("seed", 0)))].append(result)
    summary, per_image = [], []
    for (model, seed), group in sorted(runs.items()):
        loaded = {int(r["resolution"]): (r, maps) for r in group if (maps := _load_maps(results_dir, r))}
        if not loaded:
            continue
        reference_res = max(loaded)
        side = grid or min(loaded)
        images = set.intersection(*(set(maps["images"].tolist()) for _, maps in loaded.values()))
        if not images:
            log.warning("%s: no image explained at every resolution; agreement skipped", model)
            continue
        order = sorted(images)
        methods = sorted(set.intersection(*(set(r["explain"]["methods"]) for r, _ in loaded.values())))
        data_root = loaded[reference_res][0]["explain"].get("data_root")
        masks = [load_mask(data_root, image, side) if data_root else None for image in order]
        common = {}
        for res, (_result, maps) in loaded.items():
            index = [maps["images"].tolist().index(image) for image in order]
            common[res] = {method: resample(maps[map_key(method, target)][index].astype(np.float32), side)
                           for method in methods}
        for method in methods:
            reference = common[reference_res][method]
            for res in sorted(common):
                current = common[res][method]
                rows = []
                for i, image in enumerate(order):
                    row = {"model": model, "seed": seed, "resolution": res, "method": method,
                           "image": image, "reference_resolution": reference_res,
                           "spearman": rank_correlation(current[i], reference[i]),
                           "iou_top10": top_iou(current[i], reference[i]),
                           "lesion_mass_fraction": (mass_fraction(current[i], masks[i])
                                                    if masks[i] is not None else None)}
                    rows.append(row)
                per_image.extend(rows)
                sanity = loaded[res][0]["explain"]["methods"][method].get("sanity_spearman")
                summary.append({
                    "model": model, "seed": seed, "resolution": res, "method": method,
                    "reference_resolution": reference_res, "grid": side, "num_images": len(rows),
                    "spearman": nanmean([row["spearman"] for row in rows]),
                    "iou_top10": nanmean([row["iou_top10"] for row in rows]),
                    "lesion_mass_fraction": nanmean([row["lesion_mass_fraction"] for row in rows]),
                    "sanity_spearman": sanity,
                })
    return summary, per_image


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(to_strict_json(rows))
    atomic_write_text(path, buffer.getvalue())


def agreement_figure(results_dir: str | Path, model: str, seed: int = 0, max_images: int = 4,
                     target: str = AGREEMENT_TARGET) -> bytes | None:
    """PNG grid for one model: a row per image, a column per (method, resolution)."""
    results_dir = Path(results_dir)
    loaded = {}
    for _path, result in results.iter_results(results_dir):
        if (isinstance(result, dict) and result.get("explain") and result["model"] == model
                and int(result.get("seed", 0)) == seed):
            if (maps := _load_maps(results_dir, result)) is not None:
                loaded[int(result["resolution"])] = (result, maps)
    if not loaded:
        return None
    resolutions = sorted(loaded)
    methods = sorted(set.intersection(*(set(r["explain"]["methods"]) for r, _ in loaded.values())))
    order = sorted(set.intersection(*(set(m["images"].tolist()) for _, m in loaded.values())))[:max_images]
    data_root = loaded[resolutions[-1]][0]["explain"].get("data_root")
    columns = [(method, res) for method in methods for res in resolutions]
    figure = Figure(figsize=(1.6 * (len(columns) + 1), 1.7 * len(order) + 0.4), layout="constrained")
    axes = np.atleast_2d(figure.subplots(len(order), len(columns) + 1, squeeze=False))
    for row, image in enumerate(order):
        picture = _thumbnail(data_root, image)
        axes[row, 0].imshow(picture)
        axes[row, 0].set_title(Path(image).parent.name, fontsize=7)
        for column, (method, res) in enumerate(columns, start=1):
            _, maps = loaded[res]
            attribution = maps[map_key(method, target)][maps["images"].tolist().index(image)]
            axis = axes[row, column]
            if picture is not None:
                axis.imshow(picture, extent=(0, 1, 1, 0))
            top = float(np.percentile(attribution, 99.5)) or 1.0
            axis.imshow(attribution.astype(np.float32), cmap="jet", alpha=0.5, vmin=0, vmax=top,
                        extent=(0, 1, 1, 0))
            if row == 0:
                axis.set_title(f"{method}\n{res}px", fontsize=7)
    for axis in axes.ravel():
        axis.set_axis_off()
    figure.suptitle(f"{model}: attribution ({target} class) by resolution", fontsize=9)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    return buffer.getvalue()


def _thumbnail(data_root: str | None, image: str, size: int = 160) -> np.ndarray | None:
    if not data_root or not (Path(data_root) / image).is_file():
        return None
    from resomap.data.io import load_rgb

    return np.asarray(load_rgb(Path(data_root) / image).resize((size, size)))


def write_agreement(results_dir: str | Path, grid: int | None = None,
                    figures_dir: str | Path | None = None) -> tuple[list[dict[str, Any]], list[Path]]:
    """Write ``explanations/agreement.csv``, ``agreement_per_image.csv`` and one grid figure
    per model (``agreement_{model}.png`` in ``figures_dir``, default ``explanations/``).

    Returns the averaged rows and the written paths (none when no run has explanations).
    """
    out = Path(results_dir) / EXPLANATIONS
    summary, per_image = agreement_table(results_dir, grid)
    if not summary:
        return [], []
    written = [out / "agreement.csv", out / "agreement_per_image.csv"]
    _write_csv(written[0], summary)
    _write_csv(written[1], per_image)
    for model, seed in sorted({(row["model"], row["seed"]) for row in summary}):
        png = agreement_figure(results_dir, model, seed)
        if png is not None:
            path = Path(figures_dir or out) / f"attribution_{model}{seed_suffix(seed)}.png"
            atomic_write_bytes(path, png)
            written.append(path)
    return summary, written
