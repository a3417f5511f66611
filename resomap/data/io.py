"""The one place images are decoded: any mode or orientation in, 8-bit RGB out."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


# Files an operating system or a copy tool leaves beside images: never images, never classes.
OS_FILES = frozenset({"thumbs.db", "desktop.ini", "__macosx"})


def is_hidden_name(name: str) -> bool:
    """Hidden or OS entries (``.DS_Store``, macOS ``._*`` forks, ``Thumbs.db``, ``__MACOSX``)."""
    return name.startswith(".") or name.lower() in OS_FILES


def is_image_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a visible file with an image extension: what datasets and validation read."""
    name = os.path.basename(os.fspath(path))
    return not is_hidden_name(name) and name.lower().endswith(IMAGE_EXTENSIONS)


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

    Decodes the whole file, so a truncated or corrupt image raises ``OSError`` here.
    EXIF orientation is applied; CMYK and palette images go through PIL's conversion;
    16-bit, 32-bit and float greyscale are scaled to 8 bits; transparency is composited
    on white.
    """
    with Image.open(path) as opened:
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
