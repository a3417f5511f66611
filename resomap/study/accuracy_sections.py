"""The report's accuracy sections: metrics by resolution with each resolution against the best,
per-class AUROC and average precision, and the train x test resolution matrix."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from resomap.study import degenerate, plots, scores
from resomap.study.blocks import Section, esc, figure, fmt, pvalue, signed_ci, table, titled, with_ci
from resomap.study.power import POWER_ASSUMPTIONS
from resomap.study.study import DataStudy, Study


def _interval_series(data: DataStudy, metric: str) -> dict[str, list[plots.Point]]:
    series: dict[str, list[plots.Point]] = {}
    for (model, res), group in data.groups.items():
        interval = group.intervals.get(metric) if metric in scores.METRICS else group.f1
        if interval is not None and math.isfinite(interval.mean):
            series.setdefault(model, []).append((res, interval.mean, interval.low, interval.high))
    return series


def _comparison_row(study: Study, data: DataStudy, model: str, res: int) -> list[Any]:
    comparison = data.comparisons.get((model, res))
    if comparison is None:
        return [model, res, "best", "", "", "", "", "", "", ""]
    if comparison.paired is None:
        return [model, res, comparison.best_resolution, f"not paired: {comparison.reason}", "", "", "",
                "n/a", "", ""]
    power = []
    if comparison.decisive_seeds is not None:
        power.append(f"{comparison.decisive_seeds} seeds")
    if comparison.decisive_images is not None:
        power.append(f"{comparison.decisive_images} test images")
    if comparison.status == "undecided" and not power:
        power = ["n/a (one seed)" if comparison.paired.n_seeds < 2 else "both more seeds and images"]
    mcnemar = comparison.mcnemar
    plain = "n/a"
    if mcnemar:
        plain = (f"{pvalue(mcnemar.pvalue)} ({mcnemar.only_a} vs {mcnemar.only_b}, "
                 f"seed {comparison.mcnemar_seed})")
    status = comparison.status + (f" ({comparison.reason})" if comparison.reason else "")
    return [model, res, comparison.best_resolution, signed_ci(comparison.paired),
            pvalue(comparison.pvalue_holm), pvalue(comparison.noninferiority_p_holm),
            pvalue(comparison.inferiority_p_holm), status, " or ".join(power), plain]


def accuracy_section(study: Study, data: DataStudy) -> Section:
    settings = study.settings
    level = f"{settings.confidence:.0%}"
    rows = []
    for (model, res), group in data.groups.items():
        methods = sorted({interval.method for interval in group.intervals.values()})
        rows.append([model, res, ", ".join(map(str, group.seeds)),
                     with_ci(group.intervals["balanced_accuracy"]), with_ci(group.intervals["macro_auroc"]),
                     with_ci(group.f1), fmt(group.accuracy), "; ".join(methods)])
    text = table(["Model", "Resolution", "Seeds", f"Balanced accuracy [{level} CI]",
                  f"Macro AUROC [{level} CI]", "Macro F1", "Accuracy", "CI method"], rows)
    text += ("\n\nBalanced accuracy is ISIC's: the mean per-class recall. Macro AUROC: the mean one-vs-rest "
             "ROC AUC over the classes. Both are computed from the stored test predictions. CI method "
             "*bootstrap (images)*: one seed, percentile bootstrap over the test images (resampled within "
             "each class): test-set variance only, no training variance; *bootstrap (seeds, images)*: "
             "seeds resampled, then images (hierarchical); *t*: Student-t over seeds' recorded values (no "
             "stored predictions); *none*: one value, no interval. An interval need not contain its "
             "estimate; figures draw intervals from their ends. *Degenerate*: a zero-width interval or an "
             "estimate at 0 or 1 shows the percentile bootstrap's limit, not certainty.")
    comparison_rows = [_comparison_row(study, data, model, res) for model, res in data.groups]
    text += (f"\n\n**Each resolution against the best, on {settings.metric_label}** (difference = resolution "
             f"minus best, {level} hierarchical bootstrap interval; margin {settings.margin:g}):\n\n")
    text += table(["Model", "Resolution", "Best", f"Difference [{level} CI]", "p, difference = 0 (Holm)",
                   f"p, non-inferior: difference <= -{settings.margin:g} rejected (Holm)",
                   f"p, inferior: difference >= -{settings.margin:g} rejected (Holm)", "Decision",
                   "80 % power needs",
                   "McNemar p, plain accuracy (only here right vs only best right)"], comparison_rows)
    text += (f"\n\nThe p-values are bootstrap tests, Holm-corrected over each model's comparisons; both "
             f"one-sided tests are compared with the same level, {settings.alpha:.3g}. *80 % power needs*: "
             "for an undecided comparison, the seeds per resolution (test images as now) or the test images "
             "(seeds as now) at which the test the estimate points to would reject with 80 % power. "
             f"{POWER_ASSUMPTIONS} McNemar's exact test compares plain accuracy (share of "
             f"images right) on the first shared seed; it is not a test of {settings.metric_label} and may "
             "disagree with it in direction.")
    images = []
    for metric, label, name in (("balanced_accuracy", "balanced accuracy", "balanced_accuracy_vs_resolution"),
                                ("macro_auroc", "macro AUROC", "macro_auroc_vs_resolution"),
                                ("f1", "macro F1", "f1_vs_resolution")):
        series = _interval_series(data, metric)
        if series:
            drawn = any(math.isfinite(p[2]) and math.isfinite(p[3])
                        for points in series.values() for p in points)
            title = f"Test {label} by resolution" + (f" ({level} CI where drawn)" if drawn
                                                     else " (no intervals: one value each)")
            images.append(plots.lines_by_model(series, f"test {label} (0-1)", title,
                                               figure(study, data, name)))
    return Section(titled(study, data, "Accuracy by resolution"), text, images)


def _class_counts(data: DataStudy) -> dict[str, int]:
    """Test images per class (from the first stored predictions)."""
    for model in data.models:
        labels = data.model_labels(model)
        if labels is not None:
            return {name: int(np.sum(labels == i)) for i, name in enumerate(data.classes)}
    return {}


def auroc_section(study: Study, data: DataStudy) -> Section:
    classes = data.classes
    auroc_rows, precision_rows = [], []

    def auroc(value: float | None) -> str:
        text = fmt(value)
        return f"{text} (at bound)" if value is not None and math.isfinite(value) and value >= 1 else text

    for (model, res), group in data.groups.items():
        auroc_rows.append([model, res, *[auroc(group.per_class_auroc.get(name)) for name in classes],
                           fmt(group.value("macro_auroc"))])
        precision_rows.append([model, res, *[fmt(group.per_class_average_precision.get(name))
                                             for name in classes]])
    text = ("One-vs-rest ROC AUC of each class from the stored test probabilities (as the ISIC challenges "
            "report them beside balanced accuracy), mean over seeds. AUROC measures how well a class is "
            "ranked against the others whatever the decision threshold, so it shows a resolution effect "
            "that an under-trained model's argmax (balanced accuracy) can hide. Headers give each class's "
            f"test images; a class with fewer than {degenerate.FEW_POSITIVES} gives a coarse AUROC, and an "
            "AUROC of 1 (at bound) is a perfect ranking of these few images, not certainty.\n\n")
    counts = _class_counts(data)
    headers = [f"{name} (n={counts[name]}{', few' if counts[name] < degenerate.FEW_POSITIVES else ''})"
               if name in counts else name for name in classes]
    text += table(["Model", "Resolution", *headers, "Macro"], auroc_rows)
    text += "\n\n**Average precision per class** (one-vs-rest, area under the precision-recall curve):\n\n"
    text += table(["Model", "Resolution", *classes], precision_rows)
    level = f"{study.settings.confidence:.0%}"
    extreme_rows = []
    for model, found in data.extremes.items():
        labels = data.model_labels(model)
        for name, difference in found.differences.items():
            adjusted = found.pvalues_holm.get(name)
            positives, estimates = None, []
            if name.startswith("AUROC ") and labels is not None and name[6:] in classes:
                positives = int(np.sum(labels == classes.index(name[6:])))
                estimates = [data.groups[(model, res)].per_class_auroc.get(name[6:]) for res in
                             (found.high_resolution, found.low_resolution)]
            extreme_rows.append([model, f"{found.high_resolution} - {found.low_resolution}", name,
                                 signed_ci(difference, positives, [v for v in estimates if v is not None]),
                                 pvalue(difference.pvalue), pvalue(adjusted) if adjusted is not None else ""])
    if extreme_rows:
        text += ("\n\n**Highest minus lowest resolution** (paired over the same test images and seeds, "
                 f"{level} bootstrap interval; Holm over the classes of a model):\n\n")
        text += table(["Model", "Resolutions", "Metric", f"Difference [{level} CI]", "p",
                       "p (Holm, classes)"], extreme_rows)
    images = []
    for model in data.models:
        per_class = {name: [(g.resolution, g.per_class_auroc.get(name)) for g in data.model_groups(model)]
                     for name in classes}
        if any(value is not None for points in per_class.values() for _, value in points):
            images.append(plots.class_lines(per_class, "one-vs-rest AUROC (0-1)",
                                            f"{model}: AUROC per class by resolution",
                                            figure(study, data, f"auroc_by_class_{model}")))
    return Section(titled(study, data, "Per-class AUROC and average precision"), text, images)


def cross_res_section(study: Study, data: DataStudy) -> Section:
    if data.cross_res_error is not None:
        raise data.cross_res_error
    images, rows = [], []
    own: dict[str, list[bool]] = {}
    for model in data.cross_res.models():
        matrix = data.cross_res.matrix(model)
        if not any(len(row) > 1 for row in matrix.values()):
            continue
        images.append(plots.heatmap(matrix, f"{model}: balanced accuracy, train x test resolution",
                                    figure(study, data, f"cross_res_{model}")))
        for train, row in matrix.items():
            best = max(row, key=lambda test: (row[test], -test))
            rows.append([model, train, best, fmt(row[best]), fmt(row.get(train))])
            if len(row) > 1 and train in row:
                own.setdefault(model, []).append(best == train)
    text = ("Each model trained at one resolution is tested, from its best checkpoint, at every other "
            "resolution of the sweep: how well what it learned transfers to other input sizes. ResoMap "
            "resizes the whole image to the input size for training and testing alike (no random-resized "
            "crop), so objects have the same apparent size in both; the FixRes effect (Touvron et al. 2019: "
            "models trained with random-resized crops do best when tested above their training resolution) "
            "has no cause here.")
    if own:
        counts = "; ".join(f"{esc(model)}: {sum(found)} of {len(found)}" for model, found in own.items())
        total, hits = sum(len(found) for found in own.values()), sum(sum(found) for found in own.values())
        verdict = ("most often" if hits * 2 > total else "in half of the cases" if hits * 2 == total
                   else "less often than not")
        text += (f" In these results a model does best at its own training resolution {verdict}: "
                 f"{hits} of {total} training resolutions ({counts}; seeds averaged, no interval).")
    if rows:
        text += "\n\n" + table(["Model", "Train resolution", "Best test resolution",
                                "Balanced accuracy there", "At the train resolution"], rows)
    else:
        text += ("\n\nNo cross-resolution evaluations in these results (a single resolution, "
                 "`evaluate_cross_res=false`, or checkpoints not found).")
    return Section(titled(study, data, "Train resolution x test resolution"), text, images)

