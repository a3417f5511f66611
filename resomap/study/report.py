"""``report.md`` and a self-contained ``report.html``: the answer of a sweep, read first.

The report is a list of sections. Each entry of ``DATA_SECTIONS`` is a function
``(study, data) -> Section | None`` run once per data set in the results folder (None:
nothing to say); each entry of ``STUDY_SECTIONS`` is a function ``(study) -> Section | None``
run once. To add a section, write such a function and append it to one of the lists.
Sections write their figures under ``results/plots/`` and list them in ``Section.images``;
the HTML embeds them as data URIs.

A section that raises is never silently lost: with ``strict=True`` (tests) the error is
raised; otherwise every other section is still rendered and the report ends with
"Sections that failed", naming each and its error, and the caller is told (``failures``).
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import logging
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from markdown_it import MarkdownIt

from resomap.io import atomic_write_text
from resomap.names import UnsafeName, contained
from resomap.study import decide as decide_module
from resomap.study import degenerate, plots, spent, stats

# file_name and plots_dir stay importable from here (the report's names before blocks.py).
from resomap.study.blocks import (  # noqa: F401
    PLOTS_DIR,
    Md,
    Section,
    esc,
    figure,
    file_name,
    fmt,
    plots_dir,
    table,
    titled,
)
from resomap.study.grid_sections import confusion_section, explanations_section
from resomap.study.study import (
    EXPONENT_TOLERANCE,
    FIGURES,
    TRAIN_FLOPS_PER_FORWARD,
    DataStudy,
    Study,
    pareto_optimal,
)

log = logging.getLogger(__name__)

FAILED_TITLE = "Sections that failed"
# A report read in a minute opens at once and can be mailed: report.html (figures embedded) stays under this.
HTML_LIMIT = 2_000_000


@dataclass(frozen=True)
class SectionFailure:
    """A section that could not be built, and why."""

    section: str
    data_name: str | None
    error: str

    def describe(self) -> str:
        where = f" (data set {self.data_name})" if self.data_name else ""
        return f"{self.section}{where}: {self.error}"


@dataclass
class ReportOutput:
    files: list[Path]
    failures: list[SectionFailure]


class ReportIncomplete(RuntimeError):
    """The report was written, but some of its sections failed (listed at its end)."""

    def __init__(self, written: list[Path], failures: list[SectionFailure]) -> None:
        self.written = written
        self.failures = failures
        report = next((path for path in written if path.name == "report.html"), None)
        lines = "\n".join(f"  - {failure.describe()}" for failure in failures)
        super().__init__(f"The report {report or ''} was written, but {len(failures)} section(s) failed "
                         f"(listed under '{FAILED_TITLE}' at its end; tracebacks in the log):\n{lines}")


DataSection = Callable[[Study, DataStudy], "Section | None"]
StudySection = Callable[[Study], "Section | None"]


def with_ci(interval: stats.Interval | None) -> str:
    """``estimate [low, high]``; the interval's ends as computed, even when they exclude the estimate.
    A degenerate interval (zero width, an estimate at 0 or 1) is marked, never shown as certainty."""
    if interval is None or not math.isfinite(interval.mean):
        return "n/a"
    if not (math.isfinite(interval.low) and math.isfinite(interval.high)):
        return fmt(interval.mean)
    text = f"{fmt(interval.mean)} [{fmt(interval.low)}, {fmt(interval.high)}]"
    flag = degenerate.interval_flag(interval.low, interval.high, interval.mean)
    return Md(f"{text} (degenerate: {flag})" if flag else text)  # numbers only: nothing to escape


def signed_ci(difference: stats.PairedDifference, positives: int | None = None,
              estimates: Sequence[float] = ()) -> str:
    """``difference [low, high]``, marked when degenerate: zero width, few test images of the
    class (``positives``), or a compared estimate at its bound (``estimates``)."""
    text = f"{difference.difference:+.3f} [{difference.low:+.3f}, {difference.high:+.3f}]"
    reasons = [degenerate.interval_flag(difference.low, difference.high, bounded=False, positives=positives)]
    reasons += [f"an estimate at the bound {value:g}" for value in estimates
                if math.isfinite(value) and (value <= 0 or value >= 1)]
    found = ", ".join(reason for reason in reasons if reason)
    return Md(f"{text} (degenerate: {found})" if found else text)  # numbers only: nothing to escape


def pvalue(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


# ----------------------------------------------------------------------------- the answer


def rule(study: Study) -> str:
    settings = study.settings
    level = f"{settings.confidence:.0%}"
    looks = (f", split over {settings.looks} looks of a sequential study (Bonferroni: "
             f"{settings.alpha:.3g} per look)" if settings.looks > 1 else "")
    return (
        f"**How the resolution is chosen.** The metric is {settings.metric_label} (`report.metric="
        f"{settings.metric}`), computed from each run's stored test predictions. For each model the *best* "
        f"resolution has the highest {settings.metric_label} (mean over seeds). Every other resolution is "
        "compared with it on the same test images and seeds: the difference (resolution minus best) with a "
        f"{level} hierarchical percentile bootstrap interval ({settings.n_resamples} resamples; each draws "
        "the seeds with replacement, then the test images within each class, and scores every drawn seed "
        "of both resolutions on the same drawn images), so the interval holds training variance as well as "
        f"test-set variance. *Non-inferior*: the one-sided test of \"difference <= -margin\" (`report.margin="
        f"{settings.margin:g}`) rejects; *inferior* (shown worse by more than the margin): the one-sided "
        "test of \"difference >= -margin\" rejects. Both p-values are Holm-corrected over the model's "
        f"comparisons and compared with the same level, {settings.alpha:.3g}{looks}. A comparison resting "
        "on one training run per resolution is *undecided* whatever its p-values: one run says nothing of "
        "the seed-to-seed variance. The recommended resolution is the smallest among the best and the "
        "non-inferior ones; the answer is a *decision* only when every smaller resolution is shown "
        "inferior on at least two seeds. The *Pareto-optimal* resolutions are those no other resolution "
        f"of the model beats on {settings.metric_label} and cost at once (cost: latency and peak memory when "
        "profiled, else multiply-adds, else resolution)."
    )


def _labels(data: DataStudy, model: str) -> np.ndarray | None:
    for group in data.model_groups(model):
        for run in group.paired:
            return run.predictions.labels
    return None


def _margin_sentence(study: Study, data: DataStudy, model: str) -> str:
    """The margin against one test image's effect on the metric (computed from the test labels)."""
    labels = _labels(data, model)
    if labels is None:
        return ""
    effect, cls, count = decide_module.image_effect(labels)
    name = data.classes[cls] if cls < len(data.classes) else str(cls)
    margin = study.settings.margin
    relation = "below" if margin < effect - 1e-12 else "above" if margin > effect + 1e-12 else "equal to"
    text = (f"One test image of the smallest class ({esc(name)}, {count} images) moves "
            f"{study.settings.metric_label} by up to 1/({len(np.unique(labels))} x {count}) = {effect:.4f}; "
            f"the margin {margin:g} is {relation} one image's effect.")
    if relation == "below":
        text += (" A difference smaller than one such image cannot be seen on one run: only averaging "
                 "over seeds (or a larger test set) can show non-inferiority at this margin.")
    return text


def _bias_sentence(rec: Any, study: Study) -> str:
    decision = rec.decision
    if decision is None or decision.optimism is None:
        return ""
    return (f"Winner's curse: picking the highest of {len(decision.estimates)} noisy estimates inflates "
            f"the best's {study.settings.metric_label} by about {decision.optimism:.3f} (bootstrap estimate: "
            "mean excess of the resampled best over its own estimate); the observed best stays best in "
            f"{decision.best_share:.0%} of the resamples.")


def _next_step_sentence(data: DataStudy, model: str, rec: Any) -> str:
    step = spent.next_step(data.model_groups(model), rec.decision)
    if step is None or not step.runs:
        return ""
    where = ", ".join(f"{res} px" for res in step.resolutions)
    return (f"More seeds: {step.seeds} seeds at {where} take {step.runs} more run"
            f"{'s' if step.runs > 1 else ''}, about {spent.duration(step.seconds)} at the recorded "
            "timings (`timing.total_sec`).")


def answer_section(study: Study, data: DataStudy) -> Section:
    label = study.settings.metric_label
    rows, statements = [], []
    for model, rec in data.recommendations.items():
        chosen = data.groups.get((model, rec.resolution)) if rec.resolution is not None else None
        best = data.groups.get((model, rec.best_resolution)) if rec.best_resolution is not None else None
        seeds = sorted({len(g.runs) for g in data.model_groups(model)})
        decided = "decided" if rec.decided else Md("**not a decision**")
        rows.append([model, Md(f"**{rec.resolution}**") if rec.resolution is not None else "none", decided,
                     "-".join(map(str, (seeds[0], seeds[-1]))) if len(seeds) > 1 else seeds[0],
                     with_ci(chosen.intervals[study.settings.metric]) if chosen else "n/a",
                     rec.best_resolution if rec.best_resolution is not None else "n/a",
                     with_ci(best.intervals[study.settings.metric]) if best else "n/a",
                     ", ".join(map(str, rec.non_inferior)) or "none",
                     ", ".join(map(str, rec.undecided)) or "none",
                     ", ".join(map(str, rec.pareto)) + f" ({' / '.join([label, *rec.pareto_axes])})"])
        parts = [esc(rec.statement)]
        parts += [f"**Warning**: {esc(warning)}." for warning in rec.warnings]
        parts += [text for text in (_next_step_sentence(data, model, rec), _bias_sentence(rec, study),
                                    _margin_sentence(study, data, model)) if text]
        statements.append(f"- **{esc(model)}**: " + " ".join(parts))
    level = f"{study.settings.confidence:.0%}"
    text = table(["Model", "Recommended resolution", "Decision", "Seeds per resolution",
                  f"{label[0].upper()}{label[1:]} there [{level} CI]", "Best resolution",
                  f"Best {label} [{level} CI]", f"Non-inferior to best (margin {study.settings.margin:g})",
                  "Undecided", "Pareto-optimal"], rows)
    configs = data.configs
    if configs is not None and configs.keys:
        text += ("\n\nThe runs of " + ", ".join(f"{esc(m)} differ in {esc(', '.join(k))}"
                                               for m, k in configs.keys.items())
                 + ": each configuration is answered on its own (its keys are named with the model).")
    if configs is not None and configs.linked:
        text += ("\n\n**Warning**: " + "; ".join(f"the runs of {esc(m)} differ between resolutions in "
                                                 f"{esc(', '.join(k))}" for m, k in configs.linked.items())
                 + ": every comparison of their resolutions includes the effect of these settings.")
    text += "\n\n" + "\n".join(statements) + "\n\n" + rule(study) + " " + decide_module.POWER_ASSUMPTIONS
    return Section(titled(study, data, "Answer: the resolution to use for each model"), text)


def degenerate_section(study: Study, data: DataStudy) -> Section:
    """Runs that learned something other than the task, or stopped learning at once."""
    rows = [[run.model, run.record.resolution, run.seed, "; ".join(run.flags)]
            for run in data.runs if run.flags]
    title = titled(study, data, "Degenerate runs")
    rule_text = (f"A run is flagged when a class with at least {degenerate.MIN_CLASS_IMAGES} test images is "
                 "never predicted, or never predicted correctly; when its plain accuracy is below the "
                 "majority-class rate; or when its best epoch is the first of its schedule. A recommended "
                 "resolution with a flagged run carries a warning in the answer.")
    if not rows:
        return Section(title, f"No run is degenerate. {rule_text}")
    return Section(title, f"**{len(rows)} of {len(data.runs)} runs are degenerate.** {rule_text}\n\n"
                   + table(["Model", "Resolution", "Seed", "Why"], rows))


def answer_cost_section(study: Study, data: DataStudy) -> Section:
    """Runs and time spent per model, against the full k-seed grid."""
    rows = []
    for model in data.models:
        found = spent.spent(model, data.model_groups(model))
        seeds = ", ".join(f"{res}: {count}" for res, count in sorted(found.seeds.items()))
        grid = (f"{found.grid_runs} runs, about {spent.duration(found.grid_seconds)}"
                if found.grid_seconds is not None else f"{found.grid_runs} runs")
        rows.append([model, found.runs, spent.duration(found.seconds if found.timed else None)
                     + (f" ({found.timed} of {found.runs} timed)" if found.timed < found.runs else ""),
                     "; ".join(found.devices), seeds, found.k, grid, found.saved_runs])
    text = ("Wall time of every run (the records' `timing.total_sec`: setup, training, test, profiling, "
            "explanations) on the device it ran on, against the full grid of every resolution at k seeds "
            "(k: the most seeds any resolution of the model got; missing runs costed at the mean time of "
            "their resolution's runs).\n\n"
            + table(["Model", "Runs", "Time spent", "Device", "Seeds per resolution (px: seeds)", "k",
                     "Full k-seed grid", "Runs saved"], rows))
    return Section(titled(study, data, "What the answer cost"), text)


def data_section(study: Study, data: DataStudy) -> Section:
    latest = max(data.runs, key=lambda run: run.record.timestamp).record
    info = latest.data
    lines = [f"- **Data set**: {esc(info.name)} at {esc(info.root or 'unknown')} (fingerprint "
             f"{esc(info.fingerprint or 'n/a')})"]
    fingerprints = {run.record.identity.data_fingerprint for run in data.runs}
    if len(fingerprints) > 1:
        lines.append(f"- **Warning**: the runs of {esc(info.name)} saw {len(fingerprints)} different "
                     "versions of it (data fingerprints); their comparisons mix data versions.")
    if len(study.data_sets) > 1:
        names = esc(", ".join(study.data_sets))
        lines.append(f"- This folder holds {len(study.data_sets)} data sets ({names}); each has its own "
                     "sections and runs of different data sets are never compared.")
    devices = sorted({f"{run.record.device or 'unknown'} ({run.record.accelerator or '?'}, "
                      f"{run.record.precision or '?'})" for run in data.runs})
    lines.append(f"- **Machine**: {esc('; '.join(devices))}")
    versions = latest.versions or {}
    libraries = ", ".join(f"{name} {version}" for name, version in versions.items())
    lines.append("- **Libraries**: " + esc(libraries or "not recorded"))
    text = "\n".join(lines)
    counts, classes = info.class_counts or {}, latest.classes
    if counts and classes:
        header = ["Class", *[f"{split} (n={sum(values)})" for split, values in counts.items()]]
        rows = [[name, *[f"{values[i]} ({100 * values[i] / max(sum(values), 1):.1f}%)"
                         if i < len(values) else "n/a" for values in counts.values()]]
                for i, name in enumerate(classes)]
        text += "\n\n**Class balance** (images per class and share of the split):\n\n" + table(header, rows)
    return Section(titled(study, data, "Data set and machine"), text)


# ----------------------------------------------------------------------------- accuracy


def _interval_series(data: DataStudy, metric: str) -> dict[str, list[plots.Point]]:
    series: dict[str, list[plots.Point]] = {}
    for (model, res), group in data.groups.items():
        interval = group.intervals.get(metric) if metric in stats.METRICS else group.f1
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
             f"{decide_module.POWER_ASSUMPTIONS} McNemar's exact test compares plain accuracy (share of "
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
        labels = _labels(data, model)
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
        labels = _labels(data, model)
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


# --------------------------------------------------------------------- equal training cost


def _scale(value: float, axis: str) -> str:
    return f"{value / 1e15:.3g} PMACs" if axis == "flops" else f"{value:.4g} s"


def training_cost_section(study: Study, data: DataStudy) -> Section:
    title = titled(study, data, "Accuracy at equal training cost")
    if not data.curves:
        return Section(title, "Not available: no run's history has per-epoch validation metrics with "
                              "cumulative training time (`train_time_sec`).")
    keys = sorted({c.metric for c in data.curves})
    names = ", ".join(f"`{key}`" for key in keys)
    text = (f"Validation metric ({names}) after each epoch against the cumulative training cost: "
            f"multiply-adds (MACs) = {TRAIN_FLOPS_PER_FORWARD} x forward MACs per image (fvcore counts one "
            "multiply-add once; "
            "forward plus backward, the usual approximation) x training images seen, and training wall "
            "time (`train_time_sec`, this machine). Equal epochs favour large inputs; at equal cost a "
            "smaller input gets more epochs. For a few budgets (the full schedule of the smallest, middle "
            "and largest resolution), the best validation value each resolution reached within it (the "
            "best checkpoint so far, mean over seeds). Caveats: a run cut at a budget is not a run "
            "scheduled for that budget (the learning-rate schedule spans the full run), and the "
            "validation split is small, so close values are within noise.")
    if f"val_{study.settings.metric}" not in keys:
        text += (f" The histories have no validation {study.settings.metric_label}; the curves use "
                 f"{', '.join(keys)} instead.")
    rows = []
    for model, found in data.budgets.items():
        for reference in sorted({budget.reference for budget in found}):
            by_axis = {budget.axis: budget for budget in found if budget.reference == reference}
            row = [model, f"{reference} px full schedule"]
            for axis in ("flops", "seconds"):
                budget = by_axis.get(axis)
                if budget is None:
                    row += ["n/a", "n/a"]
                    continue
                best = budget.best
                row += [_scale(budget.budget, axis),
                        Md(f"**{best}** ({fmt(budget.reached[best])})") if best is not None else "n/a"]
            flops = by_axis.get("flops") or by_axis.get("seconds")
            row.append(", ".join(f"{res}: {fmt(value)}" for res, value in flops.reached.items()))
            rows.append(row)
    if rows:
        text += "\n\n" + table(["Model", "Budget", "Training MACs", "Best at this MACs budget",
                                "Wall time", "Best at this time budget",
                                "Value reached within the MACs budget (n/a: first epoch over it)"], rows)
    else:
        text += "\n\nFewer than two resolutions per model have cost curves: no budget comparison."
    images = []
    for model in data.models:
        mine = [c for c in data.curves if c.model == model]
        for axis, label in (("flops", "training multiply-adds (MACs; 3 x forward, fvcore)"),
                            ("seconds", "training wall time (s)")):
            series = [(c.resolution, c.flops if axis == "flops" else c.seconds, c.values) for c in mine
                      if (c.flops if axis == "flops" else c.seconds)]
            if series:
                marks = [b.budget for b in data.budgets.get(model, []) if b.axis == axis]
                images.append(plots.cost_curves(series, label, f"{mine[0].metric} (0-1)",
                                                f"{model}: validation metric against training cost",
                                                figure(study, data, f"training_cost_{axis}_{model}"), marks))
    return Section(title, text, images)


# --------------------------------------------------------------------------------- cost


def _cost_unit(data: DataStudy, name: str) -> str:
    keys = sorted({g.cost_keys[name] for g in data.groups.values() if name in g.cost_keys})
    return " or ".join(sorted({FIGURES[name].unit_of(key) for key in keys})) or FIGURES[name].unit


def _cost_label(data: DataStudy, name: str) -> str:
    keys = sorted({g.cost_keys[name] for g in data.groups.values() if name in g.cost_keys})
    return f"{FIGURES[name].label} ({_cost_unit(data, name)}; {', '.join(keys)})"


def cost_section(study: Study, data: DataStudy) -> Section:
    present = [name for name in ("latency", "throughput", "memory", "flops", "params")
               if name in data.figures_present()]
    missing = [name for name in ("latency", "throughput", "memory", "flops") if name not in present]
    parts = []
    if present:
        rows = [[model, res, *[fmt(group.costs.get(name), ".4g") for name in present]]
                for (model, res), group in data.groups.items()]
        parts.append(table(["Model", "Resolution", *[_cost_label(data, name) for name in present]], rows))
        parts.append("Latency: median time of one inference batch in the run's precision. Memory: on a GPU "
                     "`gpu_memory_peak_mb` (MiB: model weights and buffers plus the peak the measured "
                     "forward passes added; the data cache excluded); on a CPU `cpu_memory_increase_mb` "
                     "(decimal MB: the rise of resident memory during the measured passes), or for older "
                     "records `peak_cpu_memory_mb` (the whole process's peak, baseline included). The "
                     "column header names the record keys used; docs/profiling.md says what each figure "
                     "includes.")
    if missing:
        parts.append(f"Not measured in these results: {', '.join(missing)} (the runs have no "
                     "`profiling`/`complexity` figures for them); their plots are left out.")
    images = []
    for name in ("latency", "throughput", "memory", "flops"):
        if name not in present:
            continue
        series: dict[str, list[plots.Point]] = {}
        for (model, res), group in data.groups.items():
            if name in group.costs:
                series.setdefault(model, []).append((res, group.costs[name], math.nan, math.nan))
        images.append(plots.lines_by_model(series, f"{FIGURES[name].label} ({_cost_unit(data, name)})",
                                           f"{FIGURES[name].label} by resolution (log-log)",
                                           figure(study, data, f"{name}_vs_resolution"),
                                           log_scale=True))
    fits = [[model, name, fmt(fit.k, ".2f"), fmt(fit.r2, ".3f"), fit.n,
             Md("**departs from 2**") if abs(fit.k - 2) > EXPONENT_TOLERANCE else "about 2"]
            for model, by_name in data.scaling.items() for name, fit in by_name.items()]
    if fits:
        parts.append("**Cost scaling.** Each cost is fitted as `a * res^k` (least squares on log cost "
                     "against log resolution). Compute grows with the pixel count, so k is about 2 for "
                     f"multiply-adds; a k further than {EXPONENT_TOLERANCE} from 2 is flagged. Latency and "
                     "memory usually scale less steeply at small inputs, where fixed overheads (kernel "
                     "launches, weights, the framework itself) dominate.\n\n"
                     + table(["Model", "Figure", "k", "R^2", "Points", "Verdict"], fits))
    return Section(titled(study, data, "Cost by resolution"), "\n\n".join(parts), images)


TIMING_ORDER = ("setup", "fit", "test", "profile", "explain", "total")


def timing_section(study: Study, data: DataStudy) -> Section | None:
    timed = [run.record for run in data.runs if run.record.timing]
    if not timed:
        return None
    found = {key for record in timed for key in record.timing}
    rank = {name: i for i, name in enumerate(TIMING_ORDER)}
    keys = sorted(found, key=lambda key: (rank.get(key.removesuffix("_sec"), len(rank)), key))
    rows = [[record.run_name, *[fmt(record.timing.get(key), ".1f") for key in keys]] for record in timed]
    return Section(titled(study, data, "Where the time went"),
                   "Wall time of each run's stages, in seconds (the record's `timing`).\n\n"
                   + table(["Run", *[f"{key.removesuffix('_sec')} (s)" for key in keys]], rows))


def pareto_section(study: Study, data: DataStudy) -> Section:
    title = titled(study, data, "Accuracy against cost")
    label = study.settings.metric_label
    present = data.figures_present()
    cost = next((name for name in ("latency", "flops") if name in present), None)
    if cost is None:
        return Section(title, "No latency or multiply-adds in these results: no Pareto plot.")
    points = [(model, res, group.value(study.settings.metric), group.costs[cost])
              for (model, res), group in data.groups.items()
              if cost in group.costs and math.isfinite(group.value(study.settings.metric))]
    if not points:
        return Section(title, f"No run has both {label} and {cost}: no Pareto plot.")
    frontier = pareto_optimal({i: (value, spent) for i, (_, _, value, spent) in enumerate(points)})
    cost_label = _cost_label(data, cost)
    image = plots.pareto_scatter(points, frontier, cost_label, f"test {label} (0-1)",
                                 figure(study, data, "accuracy_vs_cost_pareto"))
    listed = ", ".join(f"{points[i][0]} @ {points[i][1]}" for i in frontier)
    return Section(title, f"Across all models, the runs on the Pareto frontier of {label} against "
                          f"{cost_label.lower()} are: {listed}.", [image])


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


def notes_section(study: Study) -> Section | None:
    lines = [f"- Ignored, not a valid result: {esc(problem)}" for problem in study.invalid]
    lines += [f"- {esc(note)}" for note in study.notes]
    return Section("Notes and ignored files", "\n".join(lines)) if lines else None


DATA_SECTIONS: list[DataSection] = [
    answer_section,
    degenerate_section,
    answer_cost_section,
    data_section,
    accuracy_section,
    auroc_section,
    training_cost_section,
    cost_section,
    timing_section,
    pareto_section,
    cross_res_section,
    confusion_section,
]
STUDY_SECTIONS: list[StudySection] = [
    explanations_section,
    notes_section,
]


def build_sections(study: Study, strict: bool = False, data_sections: Sequence[DataSection] | None = None,
                   study_sections: Sequence[StudySection] | None = None
                   ) -> tuple[list[Section], list[SectionFailure]]:
    """Run every section builder (default: ``DATA_SECTIONS`` per data set, then ``STUDY_SECTIONS``).

    ``strict``: a failing builder raises. Otherwise it is logged with its traceback and listed in
    the returned failures, and the other sections are still built.
    """
    data_sections = DATA_SECTIONS if data_sections is None else data_sections
    study_sections = STUDY_SECTIONS if study_sections is None else study_sections
    sections, failures = [], []
    calls: list[tuple[str, DataStudy | None, Callable[[], Section | None]]] = [
        (builder.__name__, data, lambda builder=builder, data=data: builder(study, data))
        for data in study.data_sets.values() for builder in data_sections]
    calls += [(builder.__name__, None, lambda builder=builder: builder(study)) for builder in study_sections]
    started = time.perf_counter()
    for index, (name, data, call) in enumerate(calls, 1):
        # Progress: the train x test matrix alone can take a minute or more.
        log.info("Report section %d/%d: %s%s (%.0f s so far)", index, len(calls),
                 name.removesuffix("_section"), f" of {data.name}" if data else "",
                 time.perf_counter() - started)
        try:
            section = call()
        except Exception as error:
            if strict:
                raise
            log.exception("Report section %s failed", name)
            reason = f"{type(error).__name__}: {error}"
            failures.append(SectionFailure(name, data.name if data else None, reason))
            continue
        if section is not None:
            sections.append(section)
    return sections, failures


def failed_section(failures: Sequence[SectionFailure]) -> Section:
    lines = [f"- `{failure.section}`{f' (data set {esc(failure.data_name)})' if failure.data_name else ''}: "
             f"{esc(failure.error)}" for failure in failures]
    intro = ("These sections could not be built; the rest of the report is complete. The command that "
             "wrote it exited with an error; the log has each traceback.")
    return Section(FAILED_TITLE, intro + "\n\n" + "\n".join(lines))


def header(study: Study, failures: Sequence[SectionFailure] = ()) -> str:
    settings = study.settings
    text = (f"# ResoMap report\n\nGenerated {dt.datetime.now():%Y-%m-%d %H:%M} from "
            f"{len(study.runs)} runs in {esc(study.results_dir)}: data "
            f"set{'s' if len(study.data_sets) > 1 else ''} "
            f"{esc(', '.join(study.data_sets))}; models {esc(', '.join(study.models))}; resolutions "
            f"{', '.join(map(str, study.resolutions))}. Recommendation metric: {settings.metric_label} "
            f"(`report.metric={settings.metric}`), non-inferiority margin {settings.margin:g} "
            f"(`report.margin`), {settings.confidence:.0%} intervals.")
    if failures:
        text += (f"\n\n**Incomplete: {len(failures)} section(s) failed; see \"{FAILED_TITLE}\" at the end.**")
    return text


def anchors(sections: Sequence[Section]) -> list[str]:
    """One anchor per section, as GitHub derives it from a heading (lower case, punctuation
    dropped, spaces to hyphens; repeats numbered), so report.md's links work there too."""
    seen: dict[str, int] = {}
    found = []
    for section in sections:
        slug = re.sub(r"[^\w\- ]", "", section.title.lower()).strip().replace(" ", "-") or "section"
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.append(slug if count == 0 else f"{slug}-{count}")
    return found


def contents(sections: Sequence[Section]) -> str:
    """The table of contents: a linked list of the sections, the answer first."""
    return "**Contents**\n\n" + "\n".join(f"- [{esc(section.title)}](#{anchor})"
                                            for section, anchor in zip(sections, anchors(sections)))


def own_images(study: Study, section: Section) -> list[Path]:
    """The section's figures that are the results folder's own plots (regular files under
    ``plots/``); anything else is left out with a warning, never embedded."""
    found = []
    for image in section.images:
        try:
            path = contained(study.results_dir / PLOTS_DIR, Path(image).resolve().relative_to(
                (study.results_dir / PLOTS_DIR).resolve()))
        except (ValueError, UnsafeName):
            log.warning("Not embedded in the report: %s is not under %s", image,
                        study.results_dir / PLOTS_DIR)
            continue
        if path.is_file() and not Path(image).is_symlink():
            found.append(path)
    return found


def render_markdown(study: Study, sections: Sequence[Section],
                    failures: Sequence[SectionFailure] = ()) -> str:
    parts = [header(study, failures), contents(sections)]
    root = study.results_dir.resolve()
    for section in sections:
        parts.append(f"## {esc(section.title)}\n\n{section.markdown}")
        parts += [f"![{esc(image.stem)}]({image.relative_to(root).as_posix()})"
                  for image in own_images(study, section)]
    return "\n\n".join(parts) + "\n"


STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:0.9em}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:left}th{background:#f2f2f2}
figure{display:inline-block;margin:0.5em}img{max-width:100%}figcaption{font-size:0.8em;color:#555}
code{background:#f5f5f5;padding:0 3px}
"""


def render_html(study: Study, sections: Sequence[Section], failures: Sequence[SectionFailure] = ()) -> str:
    """One HTML file with everything inline (figures as base64 data URIs): no external requests.
    Raw HTML in the Markdown is not rendered (markdown-it's ``html: False``): record-derived
    text stays text."""
    markdown = MarkdownIt("commonmark", {"html": False}).enable("table")
    body = [markdown.render(header(study, failures)), markdown.render(contents(sections))]
    for section, anchor in zip(sections, anchors(sections)):
        body.append(f'<h2 id="{html.escape(anchor)}">{html.escape(section.title)}</h2>')
        body.append(markdown.render(section.markdown))
        for image in own_images(study, section):
            data = base64.b64encode(image.read_bytes()).decode()
            kind = "jpeg" if image.suffix.lower() in (".jpg", ".jpeg") else "png"
            body.append(f'<figure><img src="data:image/{kind};base64,{data}" alt="{html.escape(image.stem)}">'
                        f"<figcaption>{html.escape(image.name)}</figcaption></figure>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>ResoMap report</title><style>{STYLE}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def _largest(sections: Sequence[Section], count: int = 3) -> list[str]:
    """The ``count`` heaviest figures of the report, named with their size."""
    sizes = [(path.stat().st_size, path.name) for section in sections for path in section.images
             if Path(path).is_file()]
    return [f"{name} ({size / 1e6:.2f} MB)" for size, name in sorted(sizes, reverse=True)[:count]]


def write_report(study: Study, strict: bool = False) -> ReportOutput:
    """Write ``report.md``, ``report.html`` and the figures.

    Returns the files written and the sections that failed (always empty with ``strict``,
    which raises instead); a caller with failures must exit non-zero.
    """
    sections, failures = build_sections(study, strict=strict)
    if failures:
        sections.append(failed_section(failures))
    markdown_path, html_path = study.results_dir / "report.md", study.results_dir / "report.html"
    atomic_write_text(markdown_path, render_markdown(study, sections, failures))
    page = render_html(study, sections, failures)
    atomic_write_text(html_path, page)
    if len(page.encode()) > HTML_LIMIT:
        log.warning("%s is %.1f MB, over the %.0f MB a report should weigh: its largest figures are %s",
                    html_path, len(page.encode()) / 1e6, HTML_LIMIT / 1e6, ", ".join(_largest(sections)))
    images = [image for section in sections for image in section.images]
    return ReportOutput([markdown_path, html_path, *images], failures)
