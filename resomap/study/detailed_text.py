"""``detailed_report.txt``: the seed study's plain-text report, in its layout, ranked by the
study's metric."""

from __future__ import annotations

import datetime as dt
from typing import Any

from resomap.study.cost_figures import number as _number
from resomap.study.results_table import ranked, seed_statistics
from resomap.study.study import Study


def _fmt(value: Any, spec: str = ".4f") -> str:
    number = _number(value)
    return format(number, spec) if number is not None else "n/a"


def _block(title: str, rule: str = "=") -> list[str]:
    return ["", rule * 80, title, rule * 80]


def _top_lines(study: Study, order: list[dict[str, Any]]) -> list[str]:
    """The ten best runs, one line each."""
    lines = _block("TOP 10 BEST RESULTS")
    for rank, row in enumerate(order[:10], 1):
        seed = f" seed {row.get('seed')}" if row.get("seed") else ""
        data = f" [{row.get('data_name')}]" if len(study.data_sets) > 1 else ""
        lines.append(f"{rank:2d}. {row['model']} @ {row['resolution']}px{seed}{data} | "
                     f"Balanced Accuracy: {_fmt(row.get('test_balanced_accuracy'))} | "
                     f"Macro AUROC: {_fmt(row.get('test_macro_auroc'))} | "
                     f"Accuracy: {_fmt(row.get('test_accuracy'))} | "
                     f"F1: {_fmt(row.get('test_f1_score'))} | Val Loss: {_fmt(row.get('best_val_loss'))}")
    return lines


def _recommended_lines(study: Study, model: str) -> list[str]:
    """The recommended resolution of ``model`` (each of its configurations, each data set)."""
    lines = []
    for name, data in study.data_sets.items():
        for label, rec in data.recommendations.items():
            if label != model and not label.startswith(f"{model} ["):
                continue
            where = f" ({name})" if len(study.data_sets) > 1 else ""
            config = label[len(model):].strip()
            where += f" {config}" if config else ""
            chosen = f"{rec.resolution}px" if rec.resolution is not None else "none"
            decided = "" if rec.decided else " (not a decision)"
            lines.append(f"  Recommended Resolution{where}: {chosen}{decided}")
    return lines


def _breakdown_lines(study: Study, order: list[dict[str, Any]], key: str, value: Any) -> list[str]:
    """The runs of one model (``key`` "model") or one resolution (``key`` "resolution")."""
    column = f"test_{study.settings.metric}"
    label = study.settings.metric_label
    mine = [row for row in order if row[key] == value]
    found = seed_statistics(mine, column)
    best = mine[0]
    where = f"@ {best['resolution']}px" if key == "model" else f"({best['model']})"
    lines = [f"\n{value}{'px' if key == 'resolution' else ''}:",
             f"  Experiments: {found['num_experiments']}",
             f"  Average {label}: {_fmt(found[f'avg_{column}'])}",
             f"  Best {label}: {_fmt(best.get(column))} {where}",
             f"  Average Accuracy: {_fmt(found['avg_test_accuracy'])}",
             f"  Best Accuracy: {_fmt(found['best_test_accuracy'])}",
             f"  Average F1: {_fmt(found['avg_test_f1'])}",
             f"  Average Inference Time: {_fmt(found['avg_inference_time_sec'])} s per batch"]
    if key == "resolution":
        return [*lines, f"  Best Model: {best['model']}"]
    return lines + _recommended_lines(study, value)


def _table_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Every run, one fixed-width line each."""
    header = (f"{'Model':<22}{'Res':>6}{'Seed':>6}{'BalAcc':>9}{'AUROC':>9}{'Acc':>9}{'Prec':>9}{'Recall':>9}"
              f"{'F1':>9}{'ValLoss':>9}{'Time(s)':>10}{'Img/s':>10}")
    lines = [*_block("DETAILED RESULTS TABLE"), header, "-" * len(header)]
    for row in rows:
        lines.append(f"{row['model']:<22}{row['resolution']:>6}{row.get('seed', 0):>6}"
                     f"{_fmt(row.get('test_balanced_accuracy')):>9}{_fmt(row.get('test_macro_auroc')):>9}"
                     f"{_fmt(row.get('test_accuracy')):>9}"
                     f"{_fmt(row.get('test_precision')):>9}{_fmt(row.get('test_recall')):>9}"
                     f"{_fmt(row.get('test_f1_score')):>9}{_fmt(row.get('best_val_loss')):>9}"
                     f"{_fmt(row.get('profile_avg_time_sec')):>10}"
                     f"{_fmt(row.get('profile_throughput_samples_sec'), '.1f'):>10}")
    return lines


def detailed_report(study: Study, rows: list[dict[str, Any]]) -> str:
    """``detailed_report.txt`` in the seed's layout, ranked by the study's metric."""
    column = f"test_{study.settings.metric}"
    order = ranked(rows, column)
    lines = ["=" * 80, "RESOMAP - DETAILED RESULTS REPORT", "=" * 80,
             f"Generated: {dt.datetime.now():%Y-%m-%d %H:%M:%S}",
             f"Total Experiments: {len(rows)}",
             f"Models: {', '.join(study.models)}",
             f"Resolutions: {', '.join(map(str, study.resolutions))}",
             f"Data sets: {', '.join(study.data_sets)}",
             f"Ranked by: test {study.settings.metric_label} ({column})"]
    lines += _top_lines(study, order)
    for title, key, values in (("RESULTS BY MODEL", "model", study.models),
                               ("RESULTS BY RESOLUTION", "resolution", study.resolutions)):
        lines += _block(title)
        for value in values:
            lines += _breakdown_lines(study, order, key, value)
    lines += _table_lines(rows)
    if study.invalid:
        lines += _block("IGNORED FILES (not valid results)")
        lines += [f"  {problem}" for problem in study.invalid]
    lines += ["", "=" * 80, "End of Report", "=" * 80, ""]
    return "\n".join(lines)

