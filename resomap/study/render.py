"""Writing the built sections out: ``report.md`` and the self-contained ``report.html``.

Only layout (header, contents, anchors, embedded figures); what the sections say is built by
the section modules and assembled by :mod:`resomap.study.report`.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import logging
import re
from collections.abc import Sequence
from pathlib import Path

from markdown_it import MarkdownIt

from resomap.names import UnsafeName, contained
from resomap.study.blocks import PLOTS_DIR, Section, esc
from resomap.study.failures import FAILED_TITLE, SectionFailure
from resomap.study.study import Study

log = logging.getLogger(__name__)


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
