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

The sections live in ``overview_sections``, ``accuracy_sections``, ``cost_sections`` and
``grid_sections``; writing them out is :mod:`resomap.study.render`'s; this module assembles them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from resomap.io import atomic_write_text
from resomap.study.accuracy_sections import accuracy_section, auroc_section, cross_res_section
from resomap.study.blocks import Section
from resomap.study.cost_sections import cost_section, pareto_section, timing_section, training_cost_section
from resomap.study.failures import SectionFailure, failed_section
from resomap.study.grid_sections import confusion_section, explanations_section
from resomap.study.overview_sections import (
    answer_cost_section,
    answer_section,
    data_section,
    degenerate_section,
    notes_section,
)
from resomap.study.render import render_html, render_markdown
from resomap.study.study import DataStudy, Study

log = logging.getLogger(__name__)

# A report read in a minute opens at once and can be mailed: report.html (figures embedded) stays under this.
HTML_LIMIT = 2_000_000


@dataclass
class ReportOutput:
    files: list[Path]
    failures: list[SectionFailure]


DataSection = Callable[[Study, DataStudy], "Section | None"]
StudySection = Callable[[Study], "Section | None"]

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
