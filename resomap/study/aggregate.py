"""The sweep-level files of the seed study, rebuilt from the run records.

``all_results.csv`` (one row per run), ``results_summary.json`` and ``detailed_report.txt``
keep the seed's names, columns and layout; new figures are added after them. Runs are ranked
by the study's metric (``report.metric``: balanced accuracy by default, or macro AUROC).
This module builds the study once and writes every file; their contents are
:mod:`resomap.study.results_table`'s, :mod:`resomap.study.summary_json`'s,
:mod:`resomap.study.detailed_text`'s and :mod:`resomap.study.report`'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from resomap.io import atomic_write_text, write_csv, write_json
from resomap.study.decision_settings import check_settings
from resomap.study.detailed_text import detailed_report
from resomap.study.results_table import results_table
from resomap.study.study import build_study
from resomap.study.summary_json import summary


def write_aggregates(results_dir: str | Path, evaluate_cross_res: bool = True, digests: Any = None,
                     metric: str = "balanced_accuracy", margin: float = 0.02, strict: bool = False,
                     **settings: Any) -> list[Path]:
    """Rebuild every sweep-level file from the run records; returns what was written.

    Writes ``all_results.csv``, ``results_summary.json``, ``detailed_report.txt``, ``report.md``,
    ``report.html`` and ``plots/``. ``evaluate_cross_res=False`` uses cached train x test
    resolution evaluations only. ``metric`` and ``margin`` (``report.metric``/``report.margin``)
    choose the metric that drives the recommendation and the non-inferiority margin; other
    ``report.*`` keys (confidence, n_resamples, seed, looks) pass through ``settings``.
    ``digests`` (identity digests) restricts the study to those runs, e.g. one sweep's own;
    None: every run in the folder.

    A report section that cannot be built does not cost the others: every file is written,
    the report ends with the sections that failed, and then
    :class:`resomap.study.failures.ReportIncomplete` is raised (the caller exits non-zero).
    ``strict=True`` (tests) raises the section's own error at once instead.
    """
    from resomap.study.failures import ReportIncomplete
    from resomap.study.report import write_report

    chosen = check_settings(metric, margin, **settings)
    results_dir = Path(results_dir)
    study = build_study(results_dir, evaluate_cross_res=evaluate_cross_res, settings=chosen,
                        digests=None if digests is None else set(digests))
    columns, rows = results_table(study.runs)
    written = [results_dir / "all_results.csv"]
    write_csv(written[0], rows, columns)
    if not rows:
        return written
    written.append(results_dir / "results_summary.json")
    write_json(written[-1], summary(study, rows))
    written.append(results_dir / "detailed_report.txt")
    atomic_write_text(written[-1], detailed_report(study, rows))
    report = write_report(study, strict=strict)
    written += report.files
    if report.failures:
        raise ReportIncomplete(written, report.failures)
    return written
