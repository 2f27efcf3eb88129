"""The embedded segmentation demo: scikit-learn's handwritten digits pasted on small canvases.

No download. Each `image_size` canvas (64 by default) is split into 2x2 cells; 2 or 3 of them hold
a digit (8x8 upscaled smoothly to 3/8 of the canvas, 24 px at 64, jittered inside its cell, so
digits never overlap). Labels: 0 background, `digit + 1` on the digit's ink (upscaled intensity
above `INK_THRESHOLD`), `NUM_CLASSES` = 11. Train canvases use the train digits of
`hrnet_flax.data.digits` and val canvases its held-out digits, so validation measures unseen
handwriting.

Every digit is drawn in the same ink colour over one background colour, then each canvas gets a
random brightness, contrast and pixel noise: a pixel's own colour tells ink from background but
not which digit it belongs to, so the task needs the digit's shape. A per-pixel colour oracle
(the majority label of each colour bin on train canvases) scores under 20% mIoU on the val
canvases: 11-14% measured with 4 to 64 bins per channel (background right, the digits hardly).

Batches use the format of `hrnet_flax.data.segmentation`: `{"image": float32 [B, S, S, 3]
normalised like ImageNet, "label": int32 [B, S, S], "mask": bool [B]}`. The train stream is
infinite and resumable (canvas at global position `i` is drawn from (seed, i); step `s` holds
positions [s*G, (s+1)*G), G the global batch, whatever the number of processes); the val set is a
fixed `EVAL_CANVASES` canvases, the same every time.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import numpy as np

from hrnet_flax.data.batches import Batch, process_share
from hrnet_flax.data.digits import splits
from hrnet_flax.data.segmentation import normalize, resize_bilinear

NUM_CLASSES = 11
CLASS_NAMES = ("background", *(str(d) for d in range(10)))
EVAL_CANVASES = 256
EVAL_SEED = 0
IGNORE_LABEL = 255  # the label of padding rows
TRAIN_EPOCH = 576  # canvases per nominal epoch: each train digit seen about once (2.5 per canvas)
INK_THRESHOLD = 0.3
BACKGROUND = np.array([0.16, 0.22, 0.34], np.float32)  # slate blue
INK = np.array([0.96, 0.80, 0.30], np.float32)  # amber
_SPLIT_IDS = {"train": 0, "val": 1}


def split_size(split: str) -> int:
    """Canvases of a split: the fixed val set, or a nominal train epoch (the train stream is endless)."""
    _check_split(split)
    return TRAIN_EPOCH if split == "train" else EVAL_CANVASES


def _check_split(split: str) -> None:
    if split not in _SPLIT_IDS:
        raise ValueError(f"canvases split {split!r}: must be 'train' or 'val'")


def _check_size(image_size: int) -> None:
    if image_size < 64 or image_size % 32:
        raise ValueError(f"canvas image_size must be a multiple of 32, at least 64, got {image_size}")


@functools.lru_cache(maxsize=8)
def _glyphs(split: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The split's digits upscaled to `size` x `size` intensities in [0, 1], and their digits."""
    images, labels = splits()[split]
    return np.stack([np.clip(resize_bilinear(d, (size, size)), 0.0, 1.0) for d in images]), labels


def _canvas(rng: np.random.Generator, glyphs: np.ndarray, digits: np.ndarray, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """One canvas: uint8 [S, S, 3] and int32 [S, S] labels."""
    cell, size = image_size // 2, glyphs.shape[1]
    ink = np.zeros((image_size, image_size), np.float32)
    label = np.zeros((image_size, image_size), np.int32)
    count = int(rng.integers(2, 4))
    for c in rng.permutation(4)[:count]:
        k = int(rng.integers(len(digits)))
        y = (c // 2) * cell + int(rng.integers(0, cell - size + 1))
        x = (c % 2) * cell + int(rng.integers(0, cell - size + 1))
        glyph = glyphs[k]
        ink[y : y + size, x : x + size] = glyph
        label[y : y + size, x : x + size] = np.where(glyph > INK_THRESHOLD, digits[k] + 1, 0)
    colour = BACKGROUND + ink[..., None] * (INK - BACKGROUND)
    contrast, brightness = rng.uniform(0.6, 1.4), rng.uniform(-0.15, 0.15)
    colour = (colour - 0.5) * contrast + 0.5 + brightness
    colour = colour + rng.normal(0.0, 0.04, colour.shape).astype(np.float32)
    return np.clip(colour * 255.0 + 0.5, 0, 255).astype(np.uint8), label


def _draw(split: str, positions: np.ndarray, image_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    glyphs, digits = _glyphs(split, round(image_size * 3 / 8))
    pairs = [_canvas(np.random.default_rng([seed, _SPLIT_IDS[split], int(i)]), glyphs, digits, image_size) for i in positions]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def canvases(split: str, count: int, image_size: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`count` canvases of `split`: (uint8 RGB [count, S, S, 3], int32 labels [count, S, S]); the
    train ones are the first `count` of `train_dataset(seed=seed)`'s stream."""
    _check_split(split)
    _check_size(image_size)
    return _draw(split, np.arange(count), image_size, seed)


def train_dataset(
    *,
    batch_size_per_process: int,
    image_size: int = 64,
    seed: int = 0,
    start_step: int = 0,
    process_index: int | None = None,
    process_count: int | None = None,
) -> Iterator[Batch]:
    """Infinite train batches; batch `k` is step `start_step + k` of the run (this process's share)."""
    _check_size(image_size)
    if batch_size_per_process <= 0:
        raise ValueError(f"batch_size_per_process must be positive, got {batch_size_per_process}")
    index, count = process_share(process_index, process_count)

    def batches() -> Iterator[Batch]:
        step = start_step
        while True:
            first = (step * count + index) * batch_size_per_process
            images, labels = _draw("train", np.arange(first, first + batch_size_per_process), image_size, seed)
            yield {"image": normalize(images), "label": labels, "mask": np.ones(batch_size_per_process, bool)}
            step += 1

    return batches()


@functools.lru_cache(maxsize=4)
def _eval_set(image_size: int) -> tuple[np.ndarray, np.ndarray]:
    images, labels = canvases("val", EVAL_CANVASES, image_size, EVAL_SEED)
    return normalize(images), labels


def eval_dataset(
    *,
    batch_size_per_process: int,
    image_size: int = 64,
    process_index: int | None = None,
    process_count: int | None = None,
) -> Iterator[Batch]:
    """The `EVAL_CANVASES` val canvases once, in order, split over processes like `digits.eval_dataset`;
    the last batch padded with `mask=False` rows whose labels are all `IGNORE_LABEL`."""
    _check_size(image_size)
    if batch_size_per_process <= 0:
        raise ValueError(f"batch_size_per_process must be positive, got {batch_size_per_process}")
    index, count = process_share(process_index, process_count)
    global_batch = batch_size_per_process * count
    part = slice(index * batch_size_per_process, (index + 1) * batch_size_per_process)

    def batches() -> Iterator[Batch]:
        images, labels = _eval_set(image_size)
        for start in range(0, EVAL_CANVASES, global_batch):
            rows = np.arange(start, start + global_batch)[part]
            valid = rows < EVAL_CANVASES
            rows = np.where(valid, rows, 0)
            batch_labels = labels[rows]
            batch_labels[~valid] = IGNORE_LABEL
            yield {"image": images[rows], "label": batch_labels, "mask": valid}

    return batches()
