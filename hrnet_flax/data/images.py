"""Decoding image files: any PIL mode to uint8 RGB, with errors that name the file."""

from __future__ import annotations

import io
import os

import numpy as np


class UnreadableImageError(ValueError):
    """An image or mask file that does not exist or cannot be decoded."""

    def __init__(self, message: str, path: str):
        super().__init__(message)
        self.path = path


def load_rgb(path: str | os.PathLike | io.BytesIO, name: str | None = None) -> np.ndarray:
    """uint8 [H, W, 3] RGB of an image file (greyscale, palette, CMYK and alpha converted; alpha
    dropped; 16-bit greyscale scaled to 8 bits). Raises `UnreadableImageError` naming `name` (or `path`)."""
    from PIL import Image, UnidentifiedImageError

    name = str(name if name is not None else path)
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("P", "PA", "LA"):
                image = image.convert("RGBA")
            if image.mode.startswith(("I", "F")):
                array = np.asarray(image, np.float64)
                top = 65535.0 if image.mode.startswith("I") and array.max() > 255 else 255.0
                return np.repeat(np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8)[..., None], 3, axis=-1)
            return np.asarray(image.convert("RGB"), np.uint8)
    except FileNotFoundError as e:
        raise UnreadableImageError(f"image file {name} does not exist", name) from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise UnreadableImageError(f"cannot read image {name}: {e}", name) from e
