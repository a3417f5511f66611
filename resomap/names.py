"""Names and paths that come from data: the one check every reader of a results folder uses.

A results folder is data, never code or paths. A model, data set or run name read from a
record, a checkpoint or a cache is accepted only when it matches :data:`NAME_PATTERN`
(letters, digits and ``_ . + -``; no separator, no ``..``, not starting with ``-`` or ``.``),
and every path a later tool builds from such a name is resolved and checked to lie inside its
root (results, checkpoints, cache) by :func:`contained`.
"""

from __future__ import annotations

import re
from pathlib import Path

from resomap.errors import ResoMapError

NAME_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+\-]{0,127}")


class UnsafeName(ResoMapError):
    """A name or path read from data that would leave its folder or is not a plain name."""


def safe_name(value: object, what: str = "name", source: str | Path | None = None) -> str:
    """``value`` as a plain name, or :class:`UnsafeName` naming the field and the file."""
    text = value if isinstance(value, str) else None
    if text is None or not NAME_PATTERN.fullmatch(text) or ".." in text:
        where = f" in {source}" if source is not None else ""
        raise UnsafeName(f"{what} {value!r}{where} is not a valid name: a name is 1 to 128 letters, digits "
                         "and '_ . + -', starting with a letter, digit or '_', with no '..' and no path "
                         "separator. The file is left out.")
    return text


def contained(root: str | Path, *parts: str | Path) -> Path:
    """``root / parts``, resolved, refused unless it lies inside ``root`` (symlinks followed)."""
    base = Path(root).resolve()
    path = base.joinpath(*parts).resolve()
    if path != base and base not in path.parents:
        raise UnsafeName(f"{Path(root).joinpath(*parts)} resolves to {path}, outside {base}: refused.")
    return path
