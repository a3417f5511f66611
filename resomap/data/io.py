"""The one place images are decoded: any mode or orientation in, 8-bit RGB out."""

from __future__ import annotations

import os

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


# Files an operating system or a copy tool leaves beside images: never images, never classes.
OS_FILES = frozenset({"thumbs.db", "desktop.ini", "__macosx"})


def is_hidden_name(name: str) -> bool:
    """Hidden or OS entries (``.DS_Store``, macOS ``._*`` forks, ``Thumbs.db``, ``__MACOSX``)."""
    return name.startswith(".") or name.lower() in OS_FILES


def is_image_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a visible file with an image extension: what datasets and validation read."""
    name = os.path.basename(os.fspath(path))
    return not is_hidden_name(name) and name.lower().endswith(IMAGE_EXTENSIONS)


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
