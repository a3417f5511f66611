"""The report's two grid sections: every run's confusion matrix in one figure, and the
explanations of the classes whose AUROC resolution changes most.

A run cannot know how a class's AUROC changes across resolutions, so each run explains a
class-stratified sample (resomap/callbacks/explain.py) and the report, which sees every run,
chooses which of the explained classes to show (or shows those ``callbacks.explain.classes`` named).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from resomap.run.record_schema import RunRecord
from resomap.study import agreement, plots
from resomap.study.blocks import Md, Section, esc, figure, fmt, plots_dir, table, titled
from resomap.study.runs import RunData
from resomap.study.study import DataStudy, Study

# Classes shown when the report chooses them: the two whose AUROC changes most (one image each).
SHOWN_CLASSES = 2


def run_title(run: RunData) -> str:
    """``model res px`` (with the configuration when runs of the model differ in one, and the seed
    when it is not 0)."""
    seed = f" seed {run.seed}" if run.seed else ""
    return f"{run.model} {run.record.resolution} px{seed}"


def confusion_section(study: Study, data: DataStudy) -> Section:
    """One figure: a confusion-matrix panel per run (a row per model, a column per resolution)."""
    runs = sorted((run for run in data.runs if run.record.test_metrics.confusion_matrix),
                  key=lambda run: (run.model, run.seed, run.record.resolution))
    if not runs:
        return Section(titled(study, data, "Confusion matrices"), "No run recorded a confusion matrix.")
    size = len(runs[0].record.test_metrics.confusion_matrix)
    classes = data.classes if len(data.classes) == size else [str(i) for i in range(size)]
    panels = [(run_title(run), run.record.test_metrics.confusion_matrix) for run in runs
              if len(run.record.test_metrics.confusion_matrix) == size]
    columns = max(sum(1 for run in runs if (run.model, run.seed) == key)
                  for key in {(run.model, run.seed) for run in runs})
    image = plots.confusion_grid(panels, classes, columns, figure(study, data, "confusion_matrices"))
    text = ("One panel per run (a row per model, a column per resolution). Rows: true class; shading: share "
            "of the row on one scale for every panel (recall on the diagonal); numbers: image counts.")
    return Section(titled(study, data, "Confusion matrices"), text, [image])


def auroc_ranges(study: Study, data_name: str, model: str) -> dict[str, tuple[float, float]]:
    """Per class, the lowest and highest test AUROC over the model's resolutions (each the mean
    over seeds), the same per-class AUROC as the report's AUROC section."""
    data = study.data_sets.get(data_name)
    if data is None:
        return {}
    by_res: dict[int, list[RunData]] = {}
    for run in data.runs:
        if run.record.model == model:
            by_res.setdefault(run.record.resolution, []).append(run)
    found: dict[str, tuple[float, float]] = {}
    for name in data.classes:
        means = [np.mean(values) for runs in by_res.values()
                 if (values := [v for run in runs if (v := run.per_class_auroc.get(name)) is not None
                                and math.isfinite(v)])]
        if len(means) > 1:
            found[name] = (float(min(means)), float(max(means)))
    return found


def _span(name: str, ranges: dict[str, tuple[float, float]]) -> str:
    low, high = ranges.get(name, (math.nan, math.nan))
    return f"{esc(name)} {fmt(low, '.2f')}-{fmt(high, '.2f')}"


def _names(classes: list[str]) -> str:
    quoted = [esc(name) for name in classes]
    return " and ".join(quoted) if len(quoted) < 3 else ", ".join(quoted[:-1]) + f" and {quoted[-1]}"


def choose_classes(study: Study, key: tuple[str, str, int],
                   loaded: dict[int, tuple[RunRecord, dict[str, Any]]]) -> tuple[list[str], str]:
    """The classes to show for (data set, model, seed) and the sentence that says why: those
    ``callbacks.explain.classes`` named, else the explained classes whose AUROC changes most."""
    data_name, model, _ = key
    ranges = auroc_ranges(study, data_name, model)
    explained = list(dict.fromkeys(agreement.image_classes(loaded).values()))
    spread = {name: ranges[name][1] - ranges[name][0] for name in ranges}
    named = agreement.configured_classes(loaded)
    if named:
        shown = [name for name in named if name in explained]
        if not shown:
            return [], f"{esc(model)}: no explained image of the classes `callbacks.explain.classes` named."
        spans = "; ".join(_span(name, ranges) for name in shown)
        return shown, (f"{esc(model)}: shown: {_names(shown)}, named by `callbacks.explain.classes` "
                       f"(test AUROC over the resolutions: {spans or 'n/a'}).")
    ranked = sorted(explained, key=lambda name: (-spread.get(name, -1.0), name))
    shown = ranked[:SHOWN_CLASSES]
    if not spread:
        return shown, f"{esc(model)}: shown: {_names(shown)} (no per-class AUROC to rank the classes by)."
    spans = "; ".join(_span(name, ranges) for name in shown)
    text = (f"{esc(model)}: shown: {_names(shown)}, whose AUROC changes most with resolution among the "
            f"explained classes ({', '.join(map(esc, explained))}): {spans} (lowest-highest over the "
            "resolutions).")
    top = max(spread, key=lambda name: (spread[name], name))
    if top not in explained:
        text += (f" The class that changes most, {_span(top, ranges)}, has no explained image: "
                 f"`callbacks.explain.classes=[{top}]` (or a larger `callbacks.explain.num_images`) "
                 "explains it.")
    return shown, text


def _agreement_rows(summary: list[dict[str, Any]], several: bool) -> list[list[Any]]:
    rows = []
    for row in summary:
        mass = fmt(row["lesion_mass_fraction"])
        if row.get("lesion_area_fraction") is not None and mass != "n/a":
            mass += f" (chance {fmt(row['lesion_area_fraction'])})"
        completeness = fmt(row.get("completeness_error"))
        if row.get("completeness_large"):
            completeness = Md(f"**{completeness} (large)**")
        rows.append([*([row["data_name"]] if several else []), row["model"], row["resolution"], row["method"],
                     fmt(row["spearman"]), fmt(row["iou_top10"]), mass, fmt(row.get("sanity_spearman")),
                     fmt(row.get("sanity_abs_spearman")), completeness])
    return rows


EXPLAINED = (
    "Attribution maps of the same test images (label class) at every resolution, resampled to a "
    "common grid (the model's lowest resolution) and compared with the highest resolution's: "
    "Spearman rank correlation and IoU of the top-10% regions (1 = the model looks at the same "
    "evidence). *Lesion mass*: the share of attribution inside the lesion mask (n/a without masks); "
    "*chance* is the lesion's share of the image, what a map spread evenly would score, so only a "
    "value well above it means the map points at the lesion. *Sanity* (Adebayo et al. 2018): rank "
    "correlation between the trained model's maps and a randomly re-initialised copy's, per image; "
    "the signed mean can be near 0 while single images correlate strongly in both directions, so the "
    "mean of its absolute value is shown beside it (near 0: the method explains the model; near 1: it "
    "mostly shows the image). *Completeness* (Integrated Gradients only): |sum of attributions - "
    "(output - baseline output)| relative to |output - baseline output|, mean over images; a large "
    "value means too few integration steps (raise `callbacks.explain.methods.integrated_gradients."
    "n_steps`). Per-image values: `explanations/agreement_per_image.csv`.")


def explanations_section(study: Study) -> Section | None:
    """The report's "Explanations across resolutions" section (None without explanations): the
    agreement table over every explained image, and per model a figure of one image of each
    shown class (:func:`choose_classes`)."""
    sentences: list[str] = []

    def choose(key: tuple[str, str, int], loaded: dict[int, tuple[RunRecord, dict[str, Any]]]) -> list[str]:
        shown, sentence = choose_classes(study, key, loaded)
        sentences.append(sentence)
        return agreement.first_of_each(agreement.image_classes(loaded), shown)

    summary, written = agreement.write_agreement(study.results_dir, figures_dir=plots_dir(study),
                                                 choose=choose)
    if not summary:
        return None
    several = len({row["data_name"] for row in summary}) > 1
    text = (EXPLAINED + "\n\n"
            + table([*(["Data set"] if several else []), "Model", "Resolution", "Method",
                     "Spearman vs highest", "Top-10% IoU", "Lesion mass (chance)", "Sanity rho (mean)",
                     "Sanity |rho| (mean)", "Completeness error"], _agreement_rows(summary, several)))
    if sentences:
        text += ("\n\nThe figures show one image of each chosen class, the image then its maps at every "
                 "resolution, a row per method.\n\n" + "\n".join(f"- {sentence}" for sentence in sentences))
    return Section("Explanations across resolutions", text,
                   [path for path in written if path.suffix in (".png", ".jpg")])
