"""Top-k predictions for image files: decode (PIL, any mode -> RGB), evaluation preprocessing, softmax."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from hrnet_flax.data.sources import imagenet_class_names


class UnreadableImageError(ValueError):
    """An image file that does not exist or cannot be decoded."""


def load_rgb(path: str | os.PathLike) -> np.ndarray:
    """uint8 [H, W, 3] RGB of an image file (greyscale, palette, CMYK and alpha converted; alpha dropped)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("P", "PA", "LA"):
                image = image.convert("RGBA")
            if image.mode.startswith(("I", "F")):  # 16-bit / float greyscale: scale to 8 bits
                array = np.asarray(image, np.float64)
                top = 65535.0 if image.mode.startswith("I") and array.max() > 255 else 255.0
                return np.repeat(np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8)[..., None], 3, axis=-1)
            return np.asarray(image.convert("RGB"), np.uint8)
    except FileNotFoundError as e:
        raise UnreadableImageError(f"image file {path} does not exist") from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise UnreadableImageError(f"cannot read image {path}: {e}") from e


def preprocess(images: Sequence[np.ndarray], spec: Any = "timm", *, size: int | None = None) -> np.ndarray:
    """float32 [N, S, S, 3]: the same evaluation preprocessing as `data.eval_dataset`."""
    from hrnet_flax.data.preprocess import eval_image, eval_spec, tf

    spec = eval_spec(spec, size=size)
    t = tf()
    return np.stack([eval_image(t.constant(image), spec).numpy() for image in images])


def top_k(logits: np.ndarray, k: int, names: Sequence[str] | None = None) -> list[list[tuple[str, float]]]:
    """Per row: the k most probable (class name, probability) pairs, best first."""
    logits = np.asarray(logits, np.float64)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    k = min(k, probs.shape[-1])
    order = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
    label = (lambda i: names[i]) if names is not None else (lambda i: f"class {i}")
    return [[(label(int(i)), float(p[i])) for i in row] for p, row in zip(probs, order)]


def predict(
    model: Any,
    variables: Any,
    paths: Sequence[str | os.PathLike],
    *,
    spec: Any = "timm",
    size: int | None = None,
    k: int = 5,
    names: Sequence[str] | None = None,
) -> list[list[tuple[str, float]]]:
    """Top-k (class name, probability) for each image file; an unreadable file raises
    `UnreadableImageError` naming it before any forward pass."""
    import jax

    images = [load_rgb(p) for p in paths]
    batch = preprocess(images, spec, size=size)
    logits = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, batch)
    num_classes = logits.shape[-1]
    if names is None and num_classes == 1000:
        names = imagenet_class_names()
    if names is not None and len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for a model with {num_classes} classes")
    return top_k(np.asarray(logits), k, names)
