"""``report.md`` and a self-contained ``report.html``: the answer of a sweep, read first.

The report is a list of sections. Each entry of ``SECTIONS`` is a function
``(study) -> Section | None`` (None: nothing to say); to add a section, write such a
function and append it to ``SECTIONS``. Sections write their figures under
``results/plots/`` and list them in ``Section.images``; the HTML embeds them as data URIs.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from markdown_it import MarkdownIt

from resomap.io import atomic_write_text
from resomap.study import agreement, plots
from resomap.study.study import EXPONENT_TOLERANCE, FIGURES, Study, pareto_optimal, run_name

log = logging.getLogger(__name__)

PLOTS_DIR = "plots"


@dataclass
class Section:
    """A titled block of Markdown followed by its figures (PNG files)."""

    title: str
    markdown: str
    images: list[Path] = field(default_factory=list)


SectionBuilder = Callable[[Study], "Section | None"]


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown (GFM) table; ``|`` inside cells is escaped."""
    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(map(cell, headers)) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
    return "\n".join(lines)


def fmt(value: Any, spec: str = ".3f") -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return "n/a"
    return format(value, spec)


def with_ci(interval: Any) -> str:
    if interval is None or not math.isfinite(interval.mean):
        return "n/a"
    if not math.isfinite(interval.low):
        return fmt(interval.mean)
    return f"{fmt(interval.mean)} [{fmt(interval.low)}, {fmt(interval.high)}]"


def plots_dir(study: Study) -> Path:
    return study.results_dir / PLOTS_DIR


RULE = (
    "**How the resolution is chosen.** For each model, the *best* resolution has the highest mean test "
    "balanced accuracy (macro recall: every class counts equally, as the classes are imbalanced). Every "
    "other resolution is compared with it on the same test images by a paired bootstrap of the "
    "difference in balanced accuracy (2000 resamples of the test images, averaged over the seeds both "
    "runs share). A resolution is *significantly below* the best when the whole 95% interval of that "
    "difference is below zero. The recommended resolution is the smallest one that is not significantly "
    "below the best: the cheapest input that loses no measurable accuracy. No correction for multiple "
    "comparisons is applied, which makes the rule conservative (it favours larger inputs). The exact "
    "McNemar test on per-image correctness (plain accuracy, first shared seed) is shown beside it. "
    "The *Pareto-optimal* resolutions are those no other resolution of the model beats on balanced "
    "accuracy and cost at once (cost: latency and peak memory when profiled, else FLOPs, else resolution)."
)


def answer_section(study: Study) -> Section:
    rows = []
    for model, rec in study.recommendations.items():
        chosen, best = study.groups[(model, rec.resolution)], study.groups[(model, rec.best_resolution)]
        untested = [res for (name, res), c in study.comparisons.items() if name == model and c.paired is None]
        candidates = ", ".join(map(str, rec.candidates))
        if untested:
            candidates += f" (untested: {', '.join(map(str, untested))}, see below)"
        rows.append([model, f"**{rec.resolution}**", with_ci(chosen.balanced_accuracy), rec.best_resolution,
                     with_ci(best.balanced_accuracy), candidates,
                     ", ".join(map(str, rec.pareto)) + f" ({' / '.join(['accuracy', *rec.pareto_axes])})"])
    text = table(["Model", "Recommended resolution", "Balanced accuracy [95% CI]", "Best resolution",
                  "Best balanced accuracy [95% CI]", "Not significantly below best", "Pareto-optimal"], rows)
    return Section("Answer: the resolution to use for each model", f"{text}\n\n{RULE}")


def data_section(study: Study) -> Section:
    latest = max(study.runs, key=lambda run: str(run.get("timestamp")))
    data, classes = latest.get("data") or {}, latest.get("classes") or []
    if data:
        lines = [f"- **Dataset**: {data.get('name', 'unknown')} at `{data.get('root', 'unknown')}` "
                 f"(fingerprint `{data.get('fingerprint', 'n/a')}`)"]
    else:
        lines = ["- **Dataset**: not recorded in these results (an older result format)."]
    fingerprints = {(run.get("data") or {}).get("fingerprint") for run in study.runs}
    if len(fingerprints) > 1:
        lines.append(f"- **Warning**: the runs used {len(fingerprints)} different data sets; "
                     "compare them with care.")
    devices = sorted({f"{run.get('device', 'unknown')} ({run.get('accelerator', '?')}, "
                      f"{run.get('precision', '?')})" for run in study.runs})
    lines.append(f"- **Machine**: {'; '.join(devices)}")
    versions = latest.get("versions") or {}
    lines.append("- **Libraries**: " + (", ".join(f"{name} {version}" for name, version in versions.items())
                                        or "not recorded"))
    text = "\n".join(lines)
    counts = data.get("class_counts") or {}
    if counts and classes:
        header = ["Class", *[f"{split} (n={sum(values)})" for split, values in counts.items()]]
        rows = [[name, *[f"{values[i]} ({100 * values[i] / max(sum(values), 1):.1f}%)"
                         for values in counts.values()]] for i, name in enumerate(classes)]
        text += "\n\n**Class balance** (images per class and share of the split):\n\n" + table(header, rows)
    return Section("Data set and machine", text)


def accuracy_section(study: Study) -> Section:
    rows = []
    for (model, res), group in study.groups.items():
        comparison = study.comparisons.get((model, res))
        if comparison is None:
            versus, pvalues = "best", ("", "")
        elif comparison.paired is None:
            versus, pvalues = f"not paired: {comparison.reason}", ("n/a", "n/a")
        else:
            paired = comparison.paired
            flag = " (significantly below)" if paired.significantly_below else ""
            versus = f"{paired.difference:+.3f} [{paired.low:+.3f}, {paired.high:+.3f}]{flag}"
            pvalues = (fmt(paired.pvalue), fmt(comparison.mcnemar.pvalue) if comparison.mcnemar else "n/a")
        rows.append([model, res, ", ".join(map(str, group.seeds)), with_ci(group.balanced_accuracy),
                     group.balanced_accuracy.method, with_ci(group.f1), fmt(group.accuracy), versus,
                     *pvalues])
    text = table(["Model", "Resolution", "Seeds", "Balanced accuracy [95% CI]", "CI method", "Macro F1",
                  "Accuracy", "Difference to best [95% CI]", "Bootstrap p", "McNemar p"], rows)
    text += ("\n\nCI method *t*: mean and Student-t interval over seeds; *bootstrap*: one seed, percentile "
             "bootstrap over its test images.")
    images = []
    for key, label, name in (("balanced_accuracy", "balanced accuracy", "balanced_accuracy_vs_resolution"),
                             ("f1", "macro F1", "f1_vs_resolution")):
        series: dict[str, list[plots.Point]] = {}
        for (model, res), group in study.groups.items():
            interval = getattr(group, key)
            if interval is not None:
                series.setdefault(model, []).append((res, interval.mean, interval.low, interval.high))
        images.append(plots.lines_by_model(series, label, f"Test {label} by resolution",
                                           plots_dir(study) / f"{name}.png"))
    return Section("Accuracy by resolution", text, images)


def _cost_label(study: Study, name: str) -> str:
    keys = sorted({g.cost_keys[name] for g in study.groups.values() if name in g.cost_keys})
    return f"{FIGURES[name].label} ({FIGURES[name].unit}; {', '.join(keys)})"


def cost_section(study: Study) -> Section:
    present = [name for name in ("latency", "throughput", "memory", "flops", "params")
               if name in study.figures_present()]
    missing = [name for name in ("latency", "throughput", "memory", "flops") if name not in present]
    parts = []
    if present:
        rows = [[model, res, *[fmt(group.costs.get(name), ".4g") for name in present]]
                for (model, res), group in study.groups.items()]
        parts.append(table(["Model", "Resolution", *[_cost_label(study, name) for name in present]], rows))
    if missing:
        parts.append(f"Not measured in these results: {', '.join(missing)} (the runs have no "
                     "`profiling`/`complexity` figures for them); their plots are left out.")
    images = []
    for name in ("latency", "throughput", "memory", "flops"):
        if name not in present:
            continue
        series = {}
        for (model, res), group in study.groups.items():
            if name in group.costs:
                series.setdefault(model, []).append((res, group.costs[name], math.nan, math.nan))
        images.append(plots.lines_by_model(series, f"{FIGURES[name].label} ({FIGURES[name].unit})",
                                           f"{FIGURES[name].label} by resolution (log-log)",
                                           plots_dir(study) / f"{name}_vs_resolution.png", log_scale=True))
    fits = [[model, name, fmt(fit.k, ".2f"), fmt(fit.r2, ".3f"), fit.n,
             "**departs from 2**" if abs(fit.k - 2) > EXPONENT_TOLERANCE else "about 2"]
            for model, by_name in study.scaling.items() for name, fit in by_name.items()]
    if fits:
        parts.append("**Cost scaling.** Each cost is fitted as `a * res^k` (least squares on log cost "
                     "against log resolution). Compute grows with the pixel count, so k is about 2 for "
                     f"FLOPs; a k further than {EXPONENT_TOLERANCE} from 2 is flagged. Latency and memory "
                     "usually scale less steeply at small inputs, where fixed overheads (kernel launches, "
                     "weights, the framework itself) dominate.\n\n"
                     + table(["Model", "Figure", "k", "R^2", "Points", "Verdict"], fits))
    return Section("Cost by resolution", "\n\n".join(parts), images)


def pareto_section(study: Study) -> Section | None:
    present = study.figures_present()
    cost = next((name for name in ("latency", "flops") if name in present), None)
    if cost is None:
        return Section("Accuracy against cost", "No latency or FLOPs in these results: no Pareto plot.")
    points = [(model, res, group.balanced_accuracy.mean, group.costs[cost])
              for (model, res), group in study.groups.items() if cost in group.costs]
    frontier = pareto_optimal({i: (acc, value) for i, (_, _, acc, value) in enumerate(points)})
    label = _cost_label(study, cost)
    image = plots.pareto_scatter(points, frontier, label, plots_dir(study) / "accuracy_vs_latency_pareto.png")
    listed = ", ".join(f"{points[i][0]} @ {points[i][1]}" for i in frontier)
    return Section("Accuracy against cost",
                   f"Across all models, the runs on the Pareto frontier of balanced accuracy against "
                   f"{label.lower()} are: {listed}.", [image])


def cross_res_section(study: Study) -> Section:
    models = study.cross_res.models()
    images, rows = [], []
    for model in models:
        matrix = study.cross_res.matrix(model)
        if not any(len(row) > 1 for row in matrix.values()):
            continue
        images.append(plots.heatmap(matrix, f"{model}: balanced accuracy, train x test resolution",
                                    plots_dir(study) / f"cross_res_{model}.png"))
        for train, row in matrix.items():
            best = max(row, key=lambda test: (row[test], -test))
            rows.append([model, train, best, fmt(row[best]), fmt(row.get(train))])
    text = ("Each model trained at one resolution is tested, from its best checkpoint, at every other "
            "resolution of the sweep (FixRes, Touvron et al. 2019: a model often does best when tested "
            "somewhat above its training resolution).")
    if rows:
        text += "\n\n" + table(["Model", "Train resolution", "Best test resolution",
                                "Balanced accuracy there", "At the train resolution"], rows)
    else:
        text += ("\n\nNo cross-resolution evaluations in these results (a single resolution, "
                 "`evaluate_cross_res=false`, or checkpoints not found).")
    return Section("Train resolution x test resolution", text, images)


def confusion_section(study: Study) -> Section:
    images = []
    for run in study.runs:
        matrix = run["test_metrics"].get("confusion_matrix")
        if matrix:
            name = run_name(run)
            balanced = run["test_metrics"].get("balanced_accuracy")
            images.append(plots.confusion(matrix, run.get("classes") or [str(i) for i in range(len(matrix))],
                                          f"{name}: balanced accuracy {fmt(balanced)}",
                                          plots_dir(study) / f"confusion_{name}.png"))
    return Section("Confusion matrices", "Rows: true class; colour: share of the row (recall on the "
                   "diagonal); numbers: image counts.", images)


def notes_section(study: Study) -> Section | None:
    lines = [f"- Ignored, not a valid result: `{problem}`" for problem in study.invalid]
    lines += [f"- {note}" for note in study.notes]
    return Section("Notes and ignored files", "\n".join(lines)) if lines else None



def explanations_section(study: Study) -> Section | None:
    """The report's "Explanations across resolutions" section (None without explanations)."""
    summary, written = agreement.write_agreement(study.results_dir, figures_dir=plots_dir(study))
    if not summary:
        return None
    rows = [[row["model"], row["resolution"], row["method"], fmt(row["spearman"]),
             fmt(row["iou_top10"]), fmt(row["lesion_mass_fraction"]), fmt(row["sanity_spearman"])]
            for row in summary]
    text = (
        "Attribution maps of the same test images (label class) at every resolution, resampled to a "
        "common grid (the model's lowest resolution) and compared with the highest resolution's: "
        "Spearman rank correlation and IoU of the top-10% regions (1 = the model looks at the same "
        "evidence), and the share of attribution inside the lesion mask (n/a without masks). "
        "*Sanity*: rank correlation between the trained model's maps and a randomly re-initialised "
        "copy's (Adebayo et al. 2018); near 0 means the method explains the model, near 1 that it "
        "mostly shows the image. Per-image values: `explanations/agreement_per_image.csv`.\n\n"
        + table(["Model", "Resolution", "Method", "Spearman vs highest", "Top-10% IoU",
                 "Lesion mass", "Sanity (trained vs random)"], rows))
    return Section("Explanations across resolutions", text,
                   [path for path in written if path.suffix == ".png"])


SECTIONS: list[SectionBuilder] = [
    answer_section,
    data_section,
    accuracy_section,
    cost_section,
    pareto_section,
    cross_res_section,
    explanations_section,
    confusion_section,
    notes_section,
]


def build_sections(study: Study, builders: Sequence[SectionBuilder] = SECTIONS) -> list[Section]:
    """Run every section builder; one that fails becomes a short error section, not a lost report."""
    sections = []
    for builder in builders:
        try:
            section = builder(study)
        except Exception as error:  # a broken section must not cost the whole report
            log.exception("Report section %s failed", builder.__name__)
            section = Section(f"Section {builder.__name__} failed", f"`{error!r}`")
        if section is not None:
            sections.append(section)
    return sections


def header(study: Study) -> str:
    return (f"# ResoMap report\n\nGenerated {dt.datetime.now():%Y-%m-%d %H:%M} from "
            f"{len(study.runs)} runs in `{study.results_dir}`: models {', '.join(study.models)}; "
            f"resolutions {', '.join(map(str, study.resolutions))}.")


def render_markdown(study: Study, sections: Sequence[Section]) -> str:
    parts = [header(study)]
    for section in sections:
        parts.append(f"## {section.title}\n\n{section.markdown}")
        parts += [f"![{image.stem}]({image.relative_to(study.results_dir).as_posix()})"
                  for image in section.images]
    return "\n\n".join(parts) + "\n"


STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:0.9em}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:left}th{background:#f2f2f2}
figure{display:inline-block;margin:0.5em}img{max-width:100%}figcaption{font-size:0.8em;color:#555}
code{background:#f5f5f5;padding:0 3px}
"""


def render_html(study: Study, sections: Sequence[Section]) -> str:
    """One HTML file with everything inline (figures as base64 data URIs): no external requests."""
    markdown = MarkdownIt("commonmark", {"html": False}).enable("table")
    body = [markdown.render(header(study))]
    for section in sections:
        body.append(markdown.render(f"## {section.title}\n\n{section.markdown}"))
        for image in section.images:
            data = base64.b64encode(image.read_bytes()).decode()
            body.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(image.stem)}">'
                        f"<figcaption>{html.escape(image.name)}</figcaption></figure>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>ResoMap report</title><style>{STYLE}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def write_report(study: Study) -> list[Path]:
    """Write ``report.md``, ``report.html`` and the figures; returns the report files and figures."""
    sections = build_sections(study)
    markdown_path, html_path = study.results_dir / "report.md", study.results_dir / "report.html"
    atomic_write_text(markdown_path, render_markdown(study, sections))
    atomic_write_text(html_path, render_html(study, sections))
    return [markdown_path, html_path, *[image for section in sections for image in section.images]]
