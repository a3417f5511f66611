"""Checks every image of a data set once before training, and remembers the answer.

Decoding a large data set takes minutes, so the outcome is cached under
``cache_dir/<dataset fingerprint>.json``; a changed file changes the fingerprint and
the data set is checked again.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm.auto import tqdm

from resomap.config_validation import ON_BAD_IMAGE
from resomap.data.io import image_files as list_images
from resomap.data.io import load_rgb
from resomap.errors import ResoMapError
from resomap.io import write_json

log = logging.getLogger(__name__)

MAX_LISTED = 20
CACHE_VERSION = 1


class BadImagesError(ResoMapError):
    """Some images of the data set cannot be decoded."""


def image_files(root: Path, splits: tuple[str, ...], classes: list[str]) -> list[Path]:
    """The files the datasets read: images anywhere under ``root/<split>/<class>/``, never inside
    a hidden or OS folder (:func:`resomap.data.io.image_files`)."""
    return sorted(path for split in splits for name in classes for path in list_images(root / split / name))


def check_image(path: Path) -> str | None:
    """Why ``path`` cannot be used, or None when it decodes to RGB."""
    try:
        if path.stat().st_size == 0:
            return "empty file (0 bytes)"
        load_rgb(path)
    # PIL raises many types for broken files (OSError, SyntaxError, ValueError, struct
    # and zlib errors, DecompressionBombError): any of them makes the file unusable.
    except Exception as error:
        return f"{type(error).__name__}: {error}"
    return None


def find_bad_images(root: Path, files: list[Path], fingerprint: str, cache_dir: str | os.PathLike | None,
                    workers: int | None = None) -> dict[str, str]:
    """Relative path -> reason for every file that does not decode; cached by ``fingerprint``."""
    cache = Path(cache_dir) / f"{fingerprint}.json" if cache_dir else None
    if cache is not None and cache.is_file():
        try:
            payload = json.loads(cache.read_text())
            if payload.get("version") == CACHE_VERSION and payload.get("checked") == len(files):
                return dict(payload["bad"])
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("Ignoring unreadable validation cache %s", cache)
    start = time.perf_counter()
    # PIL decodes without holding the GIL, so threads check images in parallel.
    with ThreadPoolExecutor(max_workers=workers or min(32, 2 * (os.cpu_count() or 1))) as pool:
        reasons = list(tqdm(pool.map(check_image, files), total=len(files), unit="img",
                            desc=f"Checking the images of {root.name}", mininterval=1.0))
    bad = {path.relative_to(root).as_posix(): reason
           for path, reason in zip(files, reasons) if reason is not None}
    log.info("Checked %d images of %s in %.1f s: %d unreadable", len(files), root,
             time.perf_counter() - start, len(bad))
    if cache is not None:
        write_json(cache, {"version": CACHE_VERSION, "fingerprint": fingerprint,
                                   "root": str(root), "checked": len(files), "bad": bad})
    return bad


def bad_images_message(root: Path, bad: dict[str, str]) -> str:
    """The first ``MAX_LISTED`` bad files with their reasons, then how many more."""
    lines = [f"{len(bad)} image(s) under {root} cannot be decoded (empty, truncated or not an "
             "image despite the extension):"]
    lines += [f"  {root / name}: {reason}" for name, reason in list(bad.items())[:MAX_LISTED]]
    if len(bad) > MAX_LISTED:
        lines.append(f"  ... and {len(bad) - MAX_LISTED} more.")
    lines.append("Replace or remove them, or pass data.on_bad_image=skip to train without them "
                 "(the skipped files are listed in the run's result).")
    return "\n".join(lines)


def validate_images(root: Path, splits: tuple[str, ...], classes: list[str], fingerprint: str,
                    on_bad_image: str = "error", cache_dir: str | os.PathLike | None = None) -> list[str]:
    """Decode every image once; raise on bad ones, or return them (relative paths) to skip."""
    if on_bad_image not in ON_BAD_IMAGE:
        raise ResoMapError(f"data.on_bad_image={on_bad_image!r} is not valid; use one of "
                           f"{', '.join(ON_BAD_IMAGE)}.")
    files = image_files(root, splits, classes)
    bad = find_bad_images(root, files, fingerprint, cache_dir)
    if not bad:
        return []
    if on_bad_image == "error":
        raise BadImagesError(bad_images_message(root, bad))
    remaining = Counter(path.relative_to(root).parts[:2] for path in files) - Counter(
        tuple(name.split("/")[:2]) for name in bad)
    emptied = [root.joinpath(*key) for key in sorted({tuple(n.split("/")[:2]) for n in bad})
               if remaining[key] == 0]
    if emptied:
        raise BadImagesError(f"Every image of {', '.join(map(str, emptied))} cannot be decoded, so "
                             "skipping them would leave the class empty.\n"
                             + bad_images_message(root, bad))
    log.warning("Skipping %d unreadable image(s) under %s (data.on_bad_image=skip); they are listed "
                "in the run's result under skipped_images", len(bad), root)
    return sorted(bad)
