"""The one way ResoMap writes a file: atomically (old or new, never half), strict JSON, CSV, PNG.

Every writer of results, caches, checkpoints' side files and reports goes through here, so a
kill at any moment leaves each file either as it was or complete.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def current_umask() -> int:
    """The process's umask now (read from ``/proc`` where it can be: setting it to read it back
    is not thread-safe)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a new file gets under the current umask (``0o666 & ~umask``): what ``open``
    would give it. ``mkstemp`` makes 0600, so files written through a temporary get this mode."""
    return 0o666 & ~current_umask()


def to_strict_json(value: Any) -> Any:
    """Replace NaN and infinities by None and numpy scalars by Python ones (strict JSON)."""
    if isinstance(value, dict):
        return {str(key): to_strict_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_strict_json(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A new temporary file beside ``path`` to write (or memory-map) into; swapped in as ``path``
    when the block ends, removed if it raises: readers see the old file or the new one, never half.

    The temporary file lives in the target's own folder, so the final ``os.replace`` is a
    rename on one file system (the system temp dir may be another mount, where a move is a copy).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(descriptor)
    try:
        yield Path(temporary)
        os.chmod(temporary, file_mode())  # mkstemp makes 0600; give the usual file mode
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (:func:`atomic_path`), synced to disk first."""
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_json(path: str | os.PathLike, payload: Any) -> None:
    """Strict JSON (no NaN), indented, written atomically."""
    text = json.dumps(to_strict_json(payload), indent=2, allow_nan=False)
    atomic_write_text(path, text + "\n")


# A spreadsheet reads a cell that starts with one of these as a formula (OWASP "CSV injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """``value`` made safe for a spreadsheet: text that starts like a formula (``=HYPERLINK(..)``,
    ``+1``, ``@SUM``) gets a leading ``'``, which spreadsheets show as plain text; numbers (and
    text that is only a number, such as ``-0.5``) are left as they are."""
    if not isinstance(value, str) or not value.startswith(FORMULA_STARTS):
        return value
    try:
        float(value)
        return value
    except ValueError:
        return "'" + value


def write_csv(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]],
              columns: Sequence[str] | None = None) -> None:
    """Rows as CSV (columns: given, else the first row's keys), written atomically. Cells and
    column names read from records are data: one that begins like a formula is neutralised
    (:func:`csv_cell`)."""
    rows = [to_strict_json(dict(row)) for row in rows]
    buffer = io.StringIO()
    fieldnames = list(columns) if columns is not None else (list(rows[0]) if rows else [])
    if fieldnames:
        writer = csv.writer(buffer)
        writer.writerow([csv_cell(str(name)) for name in fieldnames])
        writer.writerows([csv_cell(row.get(name, "")) for name in fieldnames] for row in rows)
    atomic_write_text(path, buffer.getvalue())


def figure_png(figure: Any, dpi: int = 100, **savefig: Any) -> bytes:
    """A matplotlib ``Figure`` as PNG bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, **savefig)
    return buffer.getvalue()


def palette_png(png: bytes, colors: int = 256) -> bytes:
    """``png`` with an adaptive palette of at most ``colors`` (Pillow ``quantize``, no dithering):
    a chart's flat colours and their anti-aliased edges survive, at a third of the size or less."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        quantised = image.convert("RGB").quantize(colors=colors, dither=Image.Dither.NONE)
    buffer = io.BytesIO()
    quantised.save(buffer, format="png", optimize=True)
    return buffer.getvalue()


def figure_jpeg(figure: Any, dpi: int = 100, quality: int = 80, **savefig: Any) -> bytes:
    """A matplotlib ``Figure`` as JPEG bytes: for photographs under attribution maps, which a
    palette would band and PNG would store at several times the size."""
    from PIL import Image

    with Image.open(io.BytesIO(figure_png(figure, dpi=dpi, **savefig))) as image:
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="jpeg", quality=quality, optimize=True)
    return buffer.getvalue()


def save_figure(figure: Any, path: str | os.PathLike, dpi: int = 100, palette: int | None = None,
                **savefig: Any) -> Path:
    """Write a matplotlib ``Figure`` as a PNG, atomically; returns the path. ``palette``: quantise
    to that many colours (:func:`palette_png`)."""
    png = figure_png(figure, dpi=dpi, **savefig)
    atomic_write_bytes(path, palette_png(png, palette) if palette else png)
    return Path(path)


def atomic_symlink(target: str | os.PathLike, link: str | os.PathLike) -> None:
    """Point ``link`` at ``target`` (a relative link), swapped in atomically: readers see the old
    link (or file) or the new link, never none."""
    link = Path(link)
    link.parent.mkdir(parents=True, exist_ok=True)
    temporary = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)
    os.symlink(os.path.relpath(target, link.parent), temporary)
    os.replace(temporary, link)
