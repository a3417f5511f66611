"""The report's building blocks, shared by its section modules: a section, escaped Markdown,
tables, numbers (intervals and p-values as cells), and where a section's figures go.

Kept apart from :mod:`resomap.study.report` so section modules (``grid_sections``) can use them
without importing the report that lists them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resomap.names import contained
from resomap.study import bootstrap, degenerate
from resomap.study.study import DataStudy, Study

PLOTS_DIR = "plots"


@dataclass
class Section:
    """A titled block of Markdown followed by its figures (PNG, or JPEG for photographs)."""

    title: str
    markdown: str
    images: list[Path] = field(default_factory=list)


class Md(str):
    """Markdown the report wrote itself (bold, code): a table cell that is not escaped."""


# Characters that make Markdown (or the HTML it may carry) out of plain text: emphasis, code,
# links and images (``(`` is harmless once ``[`` is escaped), raw HTML, tables, headings,
# strike-through, entities.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>#!|~&])")


def esc(value: Any) -> str:
    """Record-derived text (a model, class, data or run name, a note) as literal Markdown text:
    every character that Markdown or HTML would interpret is backslash-escaped, line breaks
    become spaces. markdown-it renders the result as the same text, HTML-escaped."""
    text = str(value).replace("\r", " ").replace("\n", " ")
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown (GFM) table. Every cell is escaped (:func:`esc`) except :class:`Md` cells,
    which the report wrote itself."""
    def cell(value: Any) -> str:
        if isinstance(value, Md):
            return str(value).replace("|", "\\|").replace("\n", " ")
        return esc(value)
    lines = ["| " + " | ".join(map(cell, headers)) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
    return "\n".join(lines)


def fmt(value: Any, spec: str = ".3f") -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return "n/a"
    return format(value, spec)


def file_name(text: str) -> str:
    """A record-derived name (a model with its configuration, a run) as a plain file name."""
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", text).strip("._") or "figure"


def plots_dir(study: Study, data: DataStudy | None = None) -> Path:
    """``results/plots``; with several data sets, ``results/plots/{data set}`` for each one's figures."""
    base = study.results_dir / PLOTS_DIR
    if data is not None and len(study.data_sets) > 1:
        return contained(base, file_name(data.name))
    return base


def figure(study: Study, data: DataStudy | None, name: str) -> Path:
    """``plots_dir / {name}.png``, the name made a plain file name and kept inside the folder."""
    return contained(plots_dir(study, data), f"{file_name(name)}.png")


def titled(study: Study, data: DataStudy, title: str) -> str:
    return f"{title} ({data.name})" if len(study.data_sets) > 1 else title


def with_ci(interval: bootstrap.Interval | None) -> str:
    """``estimate [low, high]``; the interval's ends as computed, even when they exclude the estimate.
    A degenerate interval (zero width, an estimate at 0 or 1) is marked, never shown as certainty."""
    if interval is None or not math.isfinite(interval.mean):
        return "n/a"
    if not (math.isfinite(interval.low) and math.isfinite(interval.high)):
        return fmt(interval.mean)
    text = f"{fmt(interval.mean)} [{fmt(interval.low)}, {fmt(interval.high)}]"
    flag = degenerate.interval_flag(interval.low, interval.high, interval.mean)
    return Md(f"{text} (degenerate: {flag})" if flag else text)  # numbers only: nothing to escape


def signed_ci(difference: bootstrap.PairedDifference, positives: int | None = None,
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
