"""The one place images are decoded: any mode or orientation in, 8-bit RGB out."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """Decode ``path`` as an upright 8-bit RGB image.

    EXIF orientation is applied; 16-bit and 32-bit greyscale are scaled to 8 bits
    (PIL's own ``convert`` would clip them); transparency is composited on white.
    """
    with Image.open(path) as image:
        image.load()
        image = ImageOps.exif_transpose(image)
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):
            pixels = np.asarray(image, dtype=np.float64)
            peak = 65535.0 if image.mode.startswith("I;16") or pixels.max() > 255 else 255.0
            image = Image.fromarray(np.clip(pixels / peak * 255 + 0.5, 0, 255).astype(np.uint8))
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            image = Image.alpha_composite(background, rgba)
        return image.convert("RGB")
