"""The report's cost sections: accuracy at equal training cost, cost by resolution with its
scaling, where the time went, and accuracy against cost (the Pareto frontier)."""

from __future__ import annotations

import math

from resomap.study import plots
from resomap.study.blocks import Md, Section, figure, fmt, table, titled
from resomap.study.cost_figures import EXPONENT_TOLERANCE, FIGURES
from resomap.study.recommend import pareto_optimal
from resomap.study.study import DataStudy, Study
from resomap.study.training_cost import TRAIN_MACS_PER_FORWARD


def _scale(value: float, axis: str) -> str:
    return f"{value / 1e15:.3g} PMACs" if axis == "macs" else f"{value:.4g} s"


def training_cost_section(study: Study, data: DataStudy) -> Section:
    title = titled(study, data, "Accuracy at equal training cost")
    if not data.curves:
        return Section(title, "Not available: no run's history has per-epoch validation metrics with "
                              "cumulative training time (`train_time_sec`).")
    keys = sorted({c.metric for c in data.curves})
    names = ", ".join(f"`{key}`" for key in keys)
    text = (f"Validation metric ({names}) after each epoch against the cumulative training cost: "
            f"multiply-adds (MACs) = {TRAIN_MACS_PER_FORWARD} x forward MACs per image (fvcore counts one "
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
            for axis in ("macs", "seconds"):
                budget = by_axis.get(axis)
                if budget is None:
                    row += ["n/a", "n/a"]
                    continue
                best = budget.best
                row += [_scale(budget.budget, axis),
                        Md(f"**{best}** ({fmt(budget.reached[best])})") if best is not None else "n/a"]
            macs = by_axis.get("macs") or by_axis.get("seconds")
            row.append(", ".join(f"{res}: {fmt(value)}" for res, value in macs.reached.items()))
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
        for axis, label in (("macs", "training multiply-adds (MACs; 3 x forward, fvcore)"),
                            ("seconds", "training wall time (s)")):
            series = [(c.resolution, c.macs if axis == "macs" else c.seconds, c.values) for c in mine
                      if (c.macs if axis == "macs" else c.seconds)]
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
    present = [name for name in ("latency", "throughput", "memory", "macs", "params")
               if name in data.figures_present()]
    missing = [name for name in ("latency", "throughput", "memory", "macs") if name not in present]
    parts = []
    if present:
        rows = [[model, res, *[fmt(group.costs.get(name), ".4g") for name in present]]
                for (model, res), group in data.groups.items()]
        parts.append(table(["Model", "Resolution", *[_cost_label(data, name) for name in present]], rows))
        parts.append("Latency: median time of one inference batch in the run's precision. Memory: on a GPU "
                     "`gpu_memory_peak_mib` (MiB: model weights and buffers plus the peak the measured "
                     "forward passes added; the data cache excluded); on a CPU `cpu_memory_increase_mb` "
                     "(decimal MB: the rise of resident memory during the measured passes), or for older "
                     "records `peak_cpu_memory_mb` (the whole process's peak, baseline included). The "
                     "column header names the record keys used; docs/profiling.md says what each figure "
                     "includes.")
    if missing:
        parts.append(f"Not measured in these results: {', '.join(missing)} (the runs have no "
                     "`profiling`/`complexity` figures for them); their plots are left out.")
    images = []
    for name in ("latency", "throughput", "memory", "macs"):
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
    cost = next((name for name in ("latency", "macs") if name in present), None)
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

