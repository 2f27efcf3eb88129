"""Predictions for image files: top-k classes (evaluation preprocessing, softmax), or label maps and
coloured overlays of a segmentation model."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from hrnet_flax.data.images import UnreadableImageError, load_rgb
from hrnet_flax.data.sources import imagenet_class_names

__all__ = ["UnreadableImageError", "load_rgb", "predict", "preprocess", "segment_files", "top_k"]


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


# ------------------------------------------------------------------ segmentation

# Cityscapes' own colours for its 19 training classes (road, sidewalk, ..., bicycle).
CITYSCAPES_PALETTE = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
)  # fmt: skip


def palette(num_classes: int) -> np.ndarray:
    """uint8 [256, 3] class colours: Cityscapes' for 19 classes, else PASCAL VOC's bit-interleaved
    palette (class 0 black); index 255 (the ignore label) is white."""
    colours = np.zeros((256, 3), np.uint8)
    if num_classes == len(CITYSCAPES_PALETTE):
        colours[: len(CITYSCAPES_PALETTE)] = CITYSCAPES_PALETTE
    else:
        for c in range(256):
            value, rgb = c, [0, 0, 0]
            for bit in range(8):
                for channel in range(3):
                    rgb[channel] |= ((value >> channel) & 1) << (7 - bit)
                value >>= 3
            colours[c] = rgb
    colours[255] = 255
    return colours


def _check_alpha(alpha: float) -> None:
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"overlay alpha must be in [0, 1]; got {alpha}")


def overlay(image: np.ndarray, labels: np.ndarray, num_classes: int, alpha: float = 0.5) -> np.ndarray:
    """uint8 RGB: `image` blended with the class colours of `labels` (opacity `alpha`)."""
    _check_alpha(alpha)
    colours = palette(num_classes)[labels].astype(np.float32)
    return np.clip(image.astype(np.float32) * (1 - alpha) + colours * alpha + 0.5, 0, 255).astype(np.uint8)


def _label_paths(path: str, out: str | None, many: bool) -> tuple[str, str]:
    stem = os.path.splitext(os.path.basename(path))[0]
    if out is None:
        labels = os.path.join(os.path.dirname(os.path.abspath(path)), f"{stem}_labels.png")
    elif many or os.path.isdir(out):
        os.makedirs(out, exist_ok=True)
        labels = os.path.join(out, f"{stem}_labels.png")
    else:
        labels = out
    return labels, os.path.splitext(labels)[0] + "_overlay.png"


def segment_files(
    model: Any,
    variables: Any,
    paths: Sequence[str | os.PathLike],
    task: Any,
    out: str | None = None,
    *,
    alpha: float = 0.5,
) -> list[tuple[str, str, list[tuple[int, float]]]]:
    """Segment image files with `task`'s inference (`tasks.segmentation.Segmentation`: scales, flip,
    window, stride, align_corners). Writes each label map as a palette PNG (pixel value = class)
    and an overlay PNG; returns `(labels path, overlay path, [(class, share of the pixels)] largest
    first)` per image. Every file is read, and given a label map path of its own, before any is
    segmented: an unreadable file, or two images that would write the same label map, fail first."""
    from PIL import Image

    from hrnet_flax.data.segmentation import normalize
    from hrnet_flax.tasks.segmentation import segment

    _check_alpha(alpha)
    if model.num_classes > 255:  # 8-bit palette PNGs; 255 is the ignore colour
        raise ValueError(f"label maps are 8-bit palette PNGs (at most 255 classes); the model has {model.num_classes}")
    images = [load_rgb(p) for p in paths]
    targets = [_label_paths(str(path), out, len(paths) > 1) for path in paths]
    first: dict[str, str] = {}
    for path, (labels_path, _) in zip(paths, targets):
        if first.setdefault(os.path.abspath(labels_path), str(path)) != str(path):
            raise ValueError(f"{first[os.path.abspath(labels_path)]} and {path} would both be written to {labels_path}")
    results = []
    colours = palette(model.num_classes)
    for path, image, (labels_path, overlay_path) in zip(paths, images, targets):
        labels = np.asarray(
            segment(
                model, variables, normalize(image), scales=task.scales, flip=task.flip, window=task.window,
                stride=task.stride, align_corners=task.align_corners,
            )  # fmt: skip
        )
        picture = Image.fromarray(labels.astype(np.uint8), mode="P")
        picture.putpalette(colours.reshape(-1).tolist())
        picture.save(labels_path)
        Image.fromarray(overlay(image, labels, model.num_classes, alpha)).save(overlay_path)
        counts = np.bincount(labels.reshape(-1), minlength=model.num_classes)
        order = np.argsort(-counts, kind="stable")
        areas = [(int(c), float(counts[c]) / labels.size) for c in order if counts[c]]
        results.append((labels_path, overlay_path, areas))
    return results
