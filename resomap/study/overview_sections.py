"""The report's opening sections: the answer and how it was chosen, degenerate runs, what the
answer cost, the data set and machine, and the study-level notes."""

from __future__ import annotations

from typing import Any

import numpy as np

from resomap.study import degenerate, spent
from resomap.study.blocks import Md, Section, esc, table, titled, with_ci
from resomap.study.power import POWER_ASSUMPTIONS, image_effect
from resomap.study.study import DataStudy, Study


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



def _margin_sentence(study: Study, data: DataStudy, model: str) -> str:
    """The margin against one test image's effect on the metric (computed from the test labels)."""
    labels = data.model_labels(model)
    if labels is None:
        return ""
    effect, cls, count = image_effect(labels)
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
    # The bootstrap estimate is signed: at or below zero the selection shows no measurable inflation.
    return (f"Winner's curse (picking the highest of {len(decision.estimates)} noisy estimates): the "
            f"best's {study.settings.metric_label} is inflated by an estimated {decision.optimism:+.3f} "
            "(bootstrap: mean excess of the resampled best over its own estimate; 0 or below, no "
            "measurable inflation); the observed best stays best in "
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
    text += "\n\n" + "\n".join(statements) + "\n\n" + rule(study) + " " + POWER_ASSUMPTIONS
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


def notes_section(study: Study) -> Section | None:
    lines = [f"- Ignored, not a valid result: {esc(problem)}" for problem in study.invalid]
    lines += [f"- {esc(note)}" for note in study.notes]
    return Section("Notes and ignored files", "\n".join(lines)) if lines else None

