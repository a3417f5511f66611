"""``results_summary.json``: the seed's keys first, then per data set the intervals,
comparisons and answers of the study."""

from __future__ import annotations

import datetime as dt
from typing import Any

from resomap.study import bootstrap, scores, spent
from resomap.study.compare import Comparison
from resomap.study.decision_settings import Settings
from resomap.study.resolution_group import Group
from resomap.study.results_table import ranked, seed_statistics
from resomap.study.study import DataStudy, Study


def _interval(interval: bootstrap.Interval | None, confidence: float) -> dict[str, Any] | None:
    if interval is None:
        return None
    return {"estimate": interval.mean, "spread": interval.spread, "ci_low": interval.low,
            "ci_high": interval.high, "ci_level": confidence, "seeds": interval.n, "method": interval.method}


def _recommendation(data: DataStudy, model: str, rec: Any, settings: Settings) -> dict[str, Any]:
    decision = rec.decision
    found = spent.spent(model, data.model_groups(model))
    step = spent.next_step(data.model_groups(model), decision)
    return {
        "recommended_resolution": rec.resolution, "best_resolution": rec.best_resolution,
        "decided": rec.decided, "non_inferior": list(rec.non_inferior), "undecided": list(rec.undecided),
        "statement": rec.statement, "warnings": list(rec.warnings), "pareto_optimal": list(rec.pareto),
        "pareto_axes": [settings.metric, *rec.pareto_axes],
        "level_one_sided": decision.level if decision else None,
        "winners_curse_optimism": decision.optimism if decision else None,
        "best_share_of_resamples": decision.best_share if decision else None,
        "cost": {"runs": found.runs, "seconds": found.seconds, "timed_runs": found.timed,
                 "seeds_per_resolution": {str(res): n for res, n in found.seeds.items()}, "k": found.k,
                 "grid_runs": found.grid_runs, "grid_seconds": found.grid_seconds,
                 "devices": list(found.devices)},
        "more_seeds": ({"resolutions": list(step.resolutions), "seeds": step.seeds, "runs": step.runs,
                        "seconds": step.seconds} if step is not None else None),
    }


def _vs_best(comparison: Comparison) -> dict[str, Any]:
    """One resolution against the best of its model, as ``results_summary.json`` keeps it."""
    paired = comparison.paired
    return {
        "metric": comparison.metric, "best_resolution": comparison.best_resolution,
        "paired_seeds": list(comparison.seeds),
        "difference": paired.difference if paired else None,
        "ci_low": paired.low if paired else None, "ci_high": paired.high if paired else None,
        "pvalue_holm": comparison.pvalue_holm, "margin": comparison.margin,
        "inferiority_pvalue_holm": comparison.inferiority_p_holm,
        "noninferiority_pvalue": comparison.noninferiority_p,
        "noninferiority_pvalue_holm": comparison.noninferiority_p_holm,
        "status": comparison.status,
        "power80_test_images": comparison.decisive_images,
        "power80_seeds": comparison.decisive_seeds,
        "mcnemar_plain_accuracy_pvalue": comparison.mcnemar.pvalue if comparison.mcnemar else None,
        "mcnemar_seed": comparison.mcnemar_seed,
        "note": comparison.reason or None,
    }


def _group_entry(data: DataStudy, model: str, res: int, group: Group, settings: Settings) -> dict[str, Any]:
    """One model at one resolution: its intervals, per-class figures, costs and comparison."""
    entry: dict[str, Any] = {
        "model": model, "resolution": res, "seeds": group.seeds,
        **{metric: _interval(group.intervals[metric], settings.confidence) for metric in scores.METRICS},
        "f1_score": _interval(group.f1, settings.confidence), "accuracy": group.accuracy,
        "per_class_auroc": group.per_class_auroc,
        "per_class_average_precision": group.per_class_average_precision,
        "costs": group.costs, "cost_keys": group.cost_keys,
        "configuration": group.config,
        "degenerate_runs": [{"seed": run.seed, "run_name": run.record.run_name, "flags": run.flags}
                            for run in group.flagged],
    }
    comparison = data.comparisons.get((model, res))
    if comparison is not None:
        entry["vs_best"] = _vs_best(comparison)
    return entry


def _cross_summary(data: DataStudy) -> dict[str, Any]:
    """The train x test resolution matrix per model (empty when it was not built)."""
    if data.cross_res is None:
        return {}
    return {model: {str(train): {str(test): value for test, value in row.items()}
                    for train, row in data.cross_res.matrix(model).items()}
            for model in data.cross_res.models()}


def _data_summary(data: DataStudy, settings: Settings) -> dict[str, Any]:
    return {
        "models": data.models, "resolutions": data.resolutions, "classes": data.classes,
        "by_model_resolution": [_group_entry(data, model, res, group, settings)
                                for (model, res), group in data.groups.items()],
        "recommendations": {
            model: _recommendation(data, model, rec, settings)
            for model, rec in data.recommendations.items()},
        "configurations": ({"keys": data.configs.keys, "linked_to_resolution": data.configs.linked,
                            "warnings": data.configs.warnings} if data.configs is not None else {}),
        "runs": [{"model": run.model, "resolution": run.record.resolution, "seed": run.seed,
                  "run_name": run.record.run_name, "identity": run.record.identity.digest,
                  "configuration": run.config, "degenerate": run.flags} for run in data.runs],
        "highest_vs_lowest_resolution": {
            model: {"high": found.high_resolution, "low": found.low_resolution, "seeds": list(found.seeds),
                    "differences": {name: {"difference": d.difference, "ci_low": d.low, "ci_high": d.high,
                                           "pvalue": d.pvalue, "pvalue_holm": found.pvalues_holm.get(name)}
                                    for name, d in found.differences.items()}}
            for model, found in data.extremes.items()},
        "equal_training_cost": {
            model: [{"budget_of": budget.reference, "axis": budget.axis, "budget": budget.budget,
                     "best_resolution": budget.best,
                     "reached": {str(res): value for res, value in budget.reached.items()}}
                    for budget in found]
            for model, found in data.budgets.items()},
        "cost_scaling": {model: {name: {"a": fit.a, "k": fit.k, "r2": fit.r2, "points": fit.n}
                                 for name, fit in fits.items()} for model, fits in data.scaling.items()},
        "cross_resolution": _cross_summary(data),
    }


def summary(study: Study, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """``results_summary.json``: the seed's keys first, then per data set the intervals,
    comparisons and answers."""
    settings = study.settings
    column = f"test_{settings.metric}"
    by_model = {m: seed_statistics([r for r in rows if r["model"] == m], column) for m in study.models}
    by_res = {str(res): seed_statistics([r for r in rows if int(r["resolution"]) == res], column)
              for res in study.resolutions}
    top = [{"model": r["model"], "resolution": r["resolution"], "test_accuracy": r.get("test_accuracy"),
            "test_f1_score": r.get("test_f1_score"),
            "test_balanced_accuracy": r.get("test_balanced_accuracy"),
            "test_macro_auroc": r.get("test_macro_auroc"), "seed": r.get("seed"),
            "data_name": r.get("data_name")}
           for r in ranked(rows, column)[:5]]
    return {
        "generated_at": dt.datetime.now().isoformat(),
        "total_experiments": len(rows),
        "models": study.models,
        "resolutions": study.resolutions,
        "statistics": {"by_model": by_model, "by_resolution": by_res},
        "top_5_results": top,
        "ranking_metric": column,
        "settings": {"metric": settings.metric, "margin": settings.margin, "confidence": settings.confidence,
                     "n_resamples": settings.n_resamples, "bootstrap_seed": settings.seed,
                     "looks": settings.looks},
        "data_sets": {name: _data_summary(data, settings) for name, data in study.data_sets.items()},
        "invalid_files": study.invalid,
        "notes": study.notes,
    }

