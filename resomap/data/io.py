"""The one place images are listed and decoded: hidden and OS entries never count, any mode or
orientation in, 8-bit RGB out."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from resomap.errors import ResoMapError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
# The only PIL decoders tried. By default PIL tries every format it knows, whatever the file's
# name, and some run an external program: EPS/PostScript is rendered by Ghostscript.
IMAGE_FORMATS = ("JPEG", "PNG", "BMP", "TIFF", "WEBP")
# First bytes of formats worth naming when a file is refused.
_SIGNATURES = ((b"%!PS", "PostScript/EPS"), (b"\xc5\xd0\xd3\xc6", "EPS"), (b"%PDF", "PDF"),
               (b"GIF8", "GIF"), (b"\x00\x00\x00\x0cjP", "JPEG 2000"), (b"<", "text/XML (e.g. SVG)"))


# Entries an operating system, a NAS or a copy tool leaves beside images (lower case): never
# images, never classes. Names starting with '.' (``.DS_Store``, ``._*`` forks, ``.thumbnails/``,
# ``.ipynb_checkpoints/``, ``.git/``) are hidden too.
OS_FILES = frozenset({"thumbs.db", "ehthumbs.db", "desktop.ini", "__macosx", "@eadir", "$recycle.bin",
                      "system volume information", "icon\r"})


def is_hidden_name(name: str) -> bool:
    """Hidden or OS entries (``.DS_Store``, macOS ``._*`` forks, ``Thumbs.db``, ``__MACOSX``)."""
    return name.startswith(".") or name.lower() in OS_FILES


def is_image_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a visible file with an image extension: what datasets and validation read."""
    name = os.path.basename(os.fspath(path))
    return not is_hidden_name(name) and name.lower().endswith(IMAGE_EXTENSIONS)


def is_visible(path: str | os.PathLike, root: str | os.PathLike) -> bool:
    """Whether no part of ``path`` below ``root`` is hidden (``root/a/.thumbnails/x.png`` is not)."""
    relative = os.path.relpath(os.fspath(path), os.fspath(root))
    return not any(is_hidden_name(part) for part in relative.split(os.sep) if part not in ("", "."))


def visible_folders(folder: str | os.PathLike) -> list[Path]:
    """The sub-folders of ``folder`` that may be classes or splits, sorted: hidden and OS folders
    (``.ipynb_checkpoints``, ``__MACOSX``, ``@eaDir``) never are. Symlinked folders count."""
    folder = Path(folder)
    return sorted(path for path in folder.iterdir() if path.is_dir() and not is_hidden_name(path.name))


def image_files(folder: str | os.PathLike) -> list[Path]:
    """Every image under ``folder`` at any depth, sorted, never inside a hidden or OS folder.

    The one listing of images: classes, data sets, validation, ``data prepare`` and the data
    fingerprint all read it (or apply :func:`is_hidden_name` the same way). Symlinked folders
    are followed, as ``torchvision``'s ``ImageFolder`` does, each real folder once.
    """
    found, seen = [], set()
    for current, dirs, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(current)
        if real in seen:  # a symlink loop
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(name for name in dirs if not is_hidden_name(name))
        found += [Path(current) / name for name in names if is_image_file(name)]
    return sorted(path for path in found if path.is_file())


class UnsupportedImageError(ResoMapError, OSError):
    """A file is not in one of :data:`IMAGE_FORMATS`, whatever its extension says.

    An ``OSError`` like PIL's own decoding errors, so validation lists it with the other
    unreadable files and ``data.on_bad_image=skip`` can leave it out.
    """


def _unsupported(path: str | os.PathLike) -> UnsupportedImageError:
    try:
        with open(path, "rb") as handle:
            head = handle.read(16)
    except OSError:
        head = b""
    found = next((name for signature, name in _SIGNATURES if head.startswith(signature)), None)
    what = f"it is {found}" if found else "its content is none of them"
    return UnsupportedImageError(
        f"{os.fspath(path)} is not a JPEG, PNG, BMP, TIFF or WebP image ({what}, whatever its extension "
        "says). Only these formats are decoded; others, such as EPS/PostScript, would run an "
        "external program. Convert the file to one of them, or remove it.")


def open_image(path: str | os.PathLike) -> Image.Image:
    """``PIL.Image.open`` limited to :data:`IMAGE_FORMATS` (reads the header only, like PIL).

    Raises :class:`UnsupportedImageError` naming the file when it is in another format.
    """
    try:
        return Image.open(path, formats=IMAGE_FORMATS)
    except UnidentifiedImageError as error:
        raise _unsupported(path) from error


def _to_8bit(image: Image.Image) -> Image.Image:
    """Scale 16-bit, 32-bit integer and float greyscale to 8 bits (PIL's ``convert`` clips them)."""
    pixels = np.asarray(image, dtype=np.float64)
    if image.mode == "F" and pixels.size and pixels.max() <= 1.0:
        peak = 1.0
    elif image.mode.startswith("I;16") or pixels.max(initial=0) > 255:
        peak = 65535.0
    else:
        peak = 255.0
    return Image.fromarray(np.clip(pixels / peak * 255 + 0.5, 0, 255).astype(np.uint8))


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """Decode ``path`` as an upright 8-bit RGB image.

    Decodes the whole file, so a truncated or corrupt image raises ``OSError`` here, and a file
    in a format other than :data:`IMAGE_FORMATS` raises :class:`UnsupportedImageError`.
    EXIF orientation is applied; CMYK and palette images go through PIL's conversion;
    16-bit, 32-bit and float greyscale are scaled to 8 bits; transparency is composited
    on white.
    """
    with open_image(path) as opened:
        opened.load()
        image = ImageOps.exif_transpose(opened)
        if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
            image = _to_8bit(image)
        if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
                image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            image = Image.alpha_composite(background, rgba)
        return image.convert("RGB")
