"""A report section that could not be built: how it is named, listed and raised.

The report never loses a failing section silently: every other section is still rendered,
the report ends with "Sections that failed", and :class:`ReportIncomplete` tells the caller.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from resomap.study.blocks import Section, esc

FAILED_TITLE = "Sections that failed"


@dataclass(frozen=True)
class SectionFailure:
    """A section that could not be built, and why."""

    section: str
    data_name: str | None
    error: str

    def describe(self) -> str:
        where = f" (data set {self.data_name})" if self.data_name else ""
        return f"{self.section}{where}: {self.error}"


class ReportIncomplete(RuntimeError):
    """The report was written, but some of its sections failed (listed at its end)."""

    def __init__(self, written: list[Path], failures: list[SectionFailure]) -> None:
        self.written = written
        self.failures = failures
        report = next((path for path in written if path.name == "report.html"), None)
        lines = "\n".join(f"  - {failure.describe()}" for failure in failures)
        super().__init__(f"The report {report or ''} was written, but {len(failures)} section(s) failed "
                         f"(listed under '{FAILED_TITLE}' at its end; tracebacks in the log):\n{lines}")



def failed_section(failures: Sequence[SectionFailure]) -> Section:
    lines = [f"- `{failure.section}`{f' (data set {esc(failure.data_name)})' if failure.data_name else ''}: "
             f"{esc(failure.error)}" for failure in failures]
    intro = ("These sections could not be built; the rest of the report is complete. The command that "
             "wrote it exited with an error; the log has each traceback.")
    return Section(FAILED_TITLE, intro + "\n\n" + "\n".join(lines))

