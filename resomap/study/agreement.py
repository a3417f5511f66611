"""Scores of attribution maps and their agreement across resolutions.

Per run, the explain callback saves maps under ``results/explanations/{run_name}/``. Names read
from records and maps files (run, model, data set, maps file, image names) are checked with
:mod:`resomap.names`: a record whose names would lead outside the results folder or the data
root is skipped with a warning, an image name that leaves its data root is not shown.
Here every resolution's maps of one model are resampled to a common grid and compared
with the highest resolution's: Spearman rank correlation, IoU of the top-10% regions,
and the share of attribution mass inside the lesion (when the data set has masks).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from resomap.config import PRIMARY_DATA, seed_suffix
from resomap.io import atomic_write_bytes, figure_jpeg, write_csv
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
)
from resomap.names import UnsafeName, contained, safe_name
from resomap.run import record as records
from resomap.run.record_schema import RunRecord
from resomap.study.plots import short

log = logging.getLogger(__name__)

AGREEMENT_TARGET = "label"  # the same class at every resolution, whatever each run predicted


def _maps_path(results_dir: Path, record: RunRecord, source: Path | None = None) -> Path:
    """The record's maps file, its names checked and the path kept inside ``results_dir``.

    Raises :class:`~resomap.names.UnsafeName` (and a record with an unsafe name is skipped).
    """
    section = record.explain if isinstance(record.explain, dict) else {}
    safe_name(record.identity.model, "model", source)
    safe_name(record.identity.data_name, "data set name", source)
    run = safe_name(record.run_name, "run name", source)
    seed = record.seed
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise UnsafeName(f"seed {seed!r} in {source} is not an integer. The file is left out.")
    maps_file = safe_name(section.get("maps_file") or MAPS_FILE, "explain.maps_file", source)
    # The run's own folder (named by its identity digest); records of the earlier layout kept
    # their maps under explanations/{run_name}/.
    own = records.run_dir(results_dir, record) / EXPLANATIONS / maps_file
    if own.is_file():
        return own
    return contained(results_dir, explanation_dir(Path("."), run) / maps_file)


def image_path(data_root: str | Path, image: object) -> Path | None:
    """``data_root/image`` when ``image`` (a name read from a maps file) is a relative path that
    stays inside ``data_root``; None (with a warning) otherwise."""
    if not isinstance(image, str) or not image:
        return None
    try:
        return contained(data_root, image)
    except UnsafeName as error:
        log.warning("Image %r of an explanation is outside its data root: %s; left out", image, error)
        return None


def _load_maps(results_dir: Path, record: RunRecord, source: Path | None = None) -> dict[str, Any] | None:
    try:
        path = _maps_path(results_dir, record, source)
    except UnsafeName as error:
        log.warning("%s; its explanations are skipped", error)
        return None
    if not path.is_file():
        log.warning("%s: explain section without its maps file %s; skipped", record.run_name, path)
        return None
    with np.load(path, allow_pickle=False) as saved:
        return {key: saved[key] for key in saved.files}


def explained_runs(results_dir: Path) -> Explained:
    """(data set, model, seed) -> resolution -> (record, maps) of every run with explanations."""
    found: dict[tuple[str, str, int], dict[int, tuple[RunRecord, dict[str, Any]]]] = defaultdict(dict)
    for path, record in records.iter_records(results_dir):
        if (isinstance(record, records.InvalidRecord) or not isinstance(record.explain, dict)
                or not isinstance(record.explain.get("methods"), dict) or not record.explain["methods"]):
            continue
        maps = _load_maps(results_dir, record, path)
        if maps is not None and "images" in maps:
            found[(record.identity.data_name, record.model, record.seed)][record.resolution] = (record, maps)
    return found


def _method_figures(summary: dict[str, Any]) -> dict[str, Any]:
    """The figures of one method's ``explain`` summary that the agreement table carries along."""
    return {"sanity_spearman": summary.get("sanity_spearman"),
            "sanity_abs_spearman": summary.get("sanity_abs_spearman"),
            "completeness_error": summary.get("completeness_error"),
            "completeness_large": summary.get("completeness_large")}


Explained = dict[tuple[str, str, int], dict[int, tuple[RunRecord, dict[str, Any]]]]
# (data set, model, seed) and its explained runs by resolution -> the images to show.
Chooser = Callable[[tuple[str, str, int], dict[int, tuple[RunRecord, dict[str, Any]]]], list[str]]


def agreement_table(results_dir: str | Path, grid: int | None = None, target: str = AGREEMENT_TARGET,
                    explained: Explained | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Per-image and averaged agreement of every resolution with the highest, per data set, model and seed.

    ``grid``: side of the common grid (default: the model's lowest resolution, so no map
    is compared at detail it never had). Returns ``(summary_rows, per_image_rows)``.
    ``lesion_area_fraction`` is the chance level of ``lesion_mass_fraction``: the lesion's
    share of the image on the same grid, what an evenly spread map would score.
    """
    results_dir = Path(results_dir)
    summary, per_image = [], []
    explained = explained_runs(results_dir) if explained is None else explained
    for (data_name, model, seed), loaded in sorted(explained.items()):
        reference_res = max(loaded)
        side = grid or min(loaded)
        images = set.intersection(*(set(maps["images"].tolist()) for _, maps in loaded.values()))
        if not images:
            log.warning("%s: no image explained at every resolution; agreement skipped", model)
            continue
        order = sorted(images)
        methods = sorted(set.intersection(*(set(r.explain["methods"]) for r, _ in loaded.values())))
        data_root = loaded[reference_res][0].explain.get("data_root")
        data_root = data_root if isinstance(data_root, str) and data_root else None
        masks = [load_mask(data_root, image, side) if data_root and image_path(data_root, image) else None
                 for image in order]
        chance = nanmean([float(mask.mean()) for mask in masks if mask is not None])
        common = {}
        for res, (_record, maps) in loaded.items():
            index = [maps["images"].tolist().index(image) for image in order]
            common[res] = {method: resample(maps[map_key(method, target)][index].astype(np.float32), side)
                           for method in methods}
        for method in methods:
            reference = common[reference_res][method]
            for res in sorted(common):
                current = common[res][method]
                rows = []
                for i, image in enumerate(order):
                    rows.append({"data_name": data_name, "model": model, "seed": seed, "resolution": res,
                                 "method": method, "image": image, "reference_resolution": reference_res,
                                 "spearman": rank_correlation(current[i], reference[i]),
                                 "iou_top10": top_iou(current[i], reference[i]),
                                 "lesion_mass_fraction": (mass_fraction(current[i], masks[i])
                                                          if masks[i] is not None else None),
                                 "lesion_area_fraction": (float(masks[i].mean())
                                                          if masks[i] is not None else None)})
                per_image.extend(rows)
                summary.append({
                    "data_name": data_name, "model": model, "seed": seed, "resolution": res, "method": method,
                    "reference_resolution": reference_res, "grid": side, "num_images": len(rows),
                    "spearman": nanmean([row["spearman"] for row in rows]),
                    "iou_top10": nanmean([row["iou_top10"] for row in rows]),
                    "lesion_mass_fraction": nanmean([row["lesion_mass_fraction"] for row in rows]),
                    "lesion_area_fraction": chance,
                    **_method_figures(loaded[res][0].explain["methods"][method]),
                })
    return summary, per_image


def image_classes(loaded: dict[int, tuple[RunRecord, dict[str, Any]]]) -> dict[str, str]:
    """Image -> its class name, for the images explained at every resolution, in the sample's
    order (the callback's ``explain.images`` list; else the class folder of the image's path)."""
    common = set.intersection(*(set(maps["images"].tolist()) for _, maps in loaded.values()))
    record, maps = loaded[max(loaded)]
    listed = record.explain.get("images") if isinstance(record.explain, dict) else None
    named = {item.get("image"): item.get("label") for item in listed or [] if isinstance(item, dict)}
    found = {}
    for image in maps["images"].tolist():
        if image in common:
            label = named.get(image)
            found[image] = label if isinstance(label, str) else Path(image).parent.name
    return found


def first_of_each(classes: dict[str, str], wanted: Sequence[str]) -> list[str]:
    """The first explained image of each class in ``wanted``, in that order."""
    return [next(image for image, name in classes.items() if name == cls)
            for cls in wanted if cls in classes.values()]


def configured_classes(loaded: dict[int, tuple[RunRecord, dict[str, Any]]]) -> list[str] | None:
    """The ``callbacks.explain.classes`` the runs were explained with (None: chosen automatically)."""
    record = loaded[max(loaded)][0]
    named = record.explain.get("classes") if isinstance(record.explain, dict) else None
    return [str(name) for name in named] if isinstance(named, list) and named else None


def default_images(loaded: dict[int, tuple[RunRecord, dict[str, Any]]], count: int = 2) -> list[str]:
    """Without a study to rank classes: one image of each configured class, else of the first
    ``count`` classes of the sample."""
    classes = image_classes(loaded)
    wanted = configured_classes(loaded) or list(dict.fromkeys(classes.values()))[:count]
    return first_of_each(classes, wanted)


def agreement_figure(loaded: dict[int, tuple[RunRecord, dict[str, Any]]], images: Sequence[str] | None = None,
                     target: str = AGREEMENT_TARGET) -> bytes | None:
    """JPEG grid for one model and seed: a row per (image, method), the image then a column per
    resolution; labels per row and column, sized to the panel (the figure is shown at its size)."""
    if not loaded:
        return None
    resolutions = sorted(loaded)
    model = loaded[resolutions[0]][0].model
    methods = sorted(set.intersection(*(set(r.explain["methods"]) for r, _ in loaded.values())))
    classes = image_classes(loaded)
    order = [image for image in (default_images(loaded) if images is None else images) if image in classes]
    if not order or not methods:
        return None
    data_root = loaded[resolutions[-1]][0].explain.get("data_root")
    side = 1.45  # inches a panel: 145 px at 100 dpi, about the thumbnail's own size
    font = 6.2 * side
    rows = [(image, method) for image in order for method in methods]
    figure = Figure(figsize=(side * (len(resolutions) + 1) + 0.3, side * len(rows) + 0.5),
                    layout="constrained")
    axes = np.atleast_2d(figure.subplots(len(rows), len(resolutions) + 1, squeeze=False))
    pictures = {image: _thumbnail(data_root, image) for image in order}
    for row, (image, method) in enumerate(rows):
        picture = pictures[image]
        if picture is not None:
            axes[row, 0].imshow(picture)
        axes[row, 0].set_ylabel(f"{short(classes[image], 16)}\n{method}", fontsize=font)
        for column, res in enumerate(resolutions, start=1):
            _, maps = loaded[res]
            attribution = maps[map_key(method, target)][maps["images"].tolist().index(image)]
            axis = axes[row, column]
            if picture is not None:
                axis.imshow(picture, extent=(0, 1, 1, 0))
            top = float(np.percentile(attribution, 99.5)) or 1.0
            axis.imshow(attribution.astype(np.float32), cmap="jet", alpha=0.5, vmin=0, vmax=top,
                        extent=(0, 1, 1, 0))
    for column, name in enumerate(["image", *(f"{res} px" for res in resolutions)]):
        axes[0, column].set_title(name, fontsize=font)
    for axis in axes.ravel():
        axis.set_xticks([])
        axis.set_yticks([])
        for spine in axis.spines.values():
            spine.set_visible(False)
    figure.suptitle(f"{model}: attribution ({target} class) by resolution", fontsize=font + 1)
    return figure_jpeg(figure, dpi=100, quality=80)


def _thumbnail(data_root: str | None, image: str, size: int = 160) -> np.ndarray | None:
    path = image_path(data_root, image) if isinstance(data_root, str) and data_root else None
    if path is None or not path.is_file():
        return None
    from resomap.data.io import load_rgb

    return np.asarray(load_rgb(path).resize((size, size)))


def write_agreement(results_dir: str | Path, grid: int | None = None, figures_dir: str | Path | None = None,
                    choose: Chooser | None = None) -> tuple[list[dict[str, Any]], list[Path]]:
    """Write ``explanations/agreement.csv``, ``agreement_per_image.csv`` and one grid figure per
    model and seed (``attribution_{model}.jpg``, ``--{data set}`` appended off the primary data set,
    in ``figures_dir``, default ``explanations/``) of the images ``choose`` picks for that
    (data set, model, seed) (default: :func:`default_images`).

    Returns the averaged rows and the written paths (none when no run has explanations).
    """
    out = Path(results_dir) / EXPLANATIONS
    explained = explained_runs(Path(results_dir))
    summary, per_image = agreement_table(results_dir, grid, explained=explained)
    if not summary:
        return [], []
    written = [out / "agreement.csv", out / "agreement_per_image.csv"]
    write_csv(written[0], summary)
    write_csv(written[1], per_image)
    for (data_name, model, seed), loaded in sorted(explained.items()):
        images = choose((data_name, model, seed), loaded) if choose else None
        jpeg = agreement_figure(loaded, images)
        if jpeg is not None:
            suffix = "" if data_name == PRIMARY_DATA else f"--{data_name}"
            # Names checked when the maps were loaded; the path is kept inside its folder anyway.
            path = contained(figures_dir or out, f"attribution_{model}{seed_suffix(seed)}{suffix}.jpg")
            atomic_write_bytes(path, jpeg)
            written.append(path)
    return summary, written
