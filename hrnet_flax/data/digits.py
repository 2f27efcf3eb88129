"""The embedded demo dataset: scikit-learn's handwritten digits as small RGB images.

1797 greyscale 8x8 digits (0-16), shipped inside scikit-learn (no download), upscaled to
`image_size` RGB, normalised like ImageNet, split 80/20 into train/val deterministically.
Batches use the same dict format as `hrnet_flax.data.pipeline`: `{"image": float32 NHWC, "label": int32,
"mask": bool}`. The train stream is infinite and resumable: step `s` always yields the same
global batch, whatever the number of processes, so a resumed run continues the same data order.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import numpy as np

from hrnet_flax.data.batches import process_share
from hrnet_flax.data.preprocess import IMAGENET_MEAN, IMAGENET_STD

NUM_CLASSES = 10
MEAN = np.array(IMAGENET_MEAN, np.float32)
STD = np.array(IMAGENET_STD, np.float32)
VAL_FRACTION = 0.2


@functools.lru_cache(maxsize=None)
def splits() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{"train", "val"}: (images (N, 8, 8) in [0, 1], labels (N,)), the fixed 80/20 split."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype(np.float32) / 16.0  # (1797, 8, 8) in [0, 1]
    labels = digits.target.astype(np.int32)
    order = np.random.default_rng(0).permutation(len(labels))
    n_val = int(round(len(labels) * VAL_FRACTION))
    val, train = order[:n_val], order[n_val:]
    return {"train": (images[train], labels[train]), "val": (images[val], labels[val])}


def split_size(split: str) -> int:
    if split not in ("train", "val"):
        raise ValueError(f"digits split {split!r}: must be 'train' or 'val'")
    return len(splits()[split][1])


def _to_rgb(images: np.ndarray, image_size: int) -> np.ndarray:
    """(N, 8, 8) in [0, 1] -> (N, S, S, 3) float32, normalised with the ImageNet mean/std."""
    if image_size % 8:
        raise ValueError(f"digits image_size must be a multiple of 8 (and of 32 for HRNet), got {image_size}")
    factor = image_size // 8
    big = np.repeat(np.repeat(images, factor, axis=1), factor, axis=2)
    return ((big[..., None] - MEAN) / STD).astype(np.float32)


def _shift(images: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Translate each 8x8 image by (dy, dx) - 1 pixels, dy, dx in {0, 1, 2}, zero fill."""
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1)))
    return np.stack([p[dy : dy + 8, dx : dx + 8] for p, (dy, dx) in zip(padded, offsets)])


def _rows(batch_size_per_process: int, process_index: int | None, process_count: int | None) -> tuple[int, slice]:
    """(process count, this process's rows of a global batch)."""
    index, count = process_share(process_index, process_count)
    return count, slice(index * batch_size_per_process, (index + 1) * batch_size_per_process)


def train_dataset(
    *,
    batch_size_per_process: int,
    image_size: int = 32,
    seed: int = 0,
    start_step: int = 0,
    augment: bool = True,
    process_index: int | None = None,
    process_count: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """Infinite train batches; batch `k` is step `start_step + k` of the run (this process's share)."""
    images, labels = splits()["train"]
    n = len(labels)
    count, part = _rows(batch_size_per_process, process_index, process_count)
    global_batch = batch_size_per_process * count
    step = start_step
    while True:
        positions = np.arange(step * global_batch, (step + 1) * global_batch)[part]
        epochs, offsets = np.divmod(positions, n)
        perms = {e: np.random.default_rng([seed, e]).permutation(n) for e in np.unique(epochs).tolist()}
        index = np.array([perms[e][o] for e, o in zip(epochs.tolist(), offsets.tolist())])
        batch_images = images[index]
        if augment:
            offsets = np.random.default_rng([seed, 1_000_003, step]).integers(0, 3, size=(global_batch, 2))
            batch_images = _shift(batch_images, offsets[part])
        yield {
            "image": _to_rgb(batch_images, image_size),
            "label": labels[index],
            "mask": np.ones(len(index), bool),
        }
        step += 1


def eval_dataset(
    *,
    batch_size_per_process: int,
    image_size: int = 32,
    split: str = "val",
    process_index: int | None = None,
    process_count: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """Every image of `split` once, in order; the last batch padded with `mask=False` rows."""
    split_size(split)
    images, labels = splits()[split]
    count, part = _rows(batch_size_per_process, process_index, process_count)
    global_batch = batch_size_per_process * count
    for start in range(0, len(labels), global_batch):
        index = np.arange(start, start + global_batch)[part]
        valid = index < len(labels)
        index = np.where(valid, index, 0)
        yield {"image": _to_rgb(images[index], image_size), "label": labels[index], "mask": valid}
