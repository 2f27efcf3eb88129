"""The batch format every pipeline yields, and the two helpers they share.

A batch is a dict of numpy arrays with a leading batch axis, `mask` (bool) False on padding rows;
each task adds its own keys (`image` and `label` for classification).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

Batch = dict[str, np.ndarray]


def pad_rows(batch: Mapping[str, np.ndarray], size: int) -> Batch:
    """`batch` padded with zero rows to `size` rows; `mask` False on the new rows (and True on the
    old ones when `batch` has no mask)."""
    n = len(next(iter(batch.values())))
    if n > size:
        raise ValueError(f"a batch of {n} rows does not fit in {size}")
    if n == size and "mask" in batch:  # already full: no copy of the images
        return dict(batch)
    mask = np.asarray(batch["mask"], bool) if "mask" in batch else np.ones(n, bool)
    out = {k: np.concatenate([v, np.zeros((size - n, *np.shape(v)[1:]), np.asarray(v).dtype)]) for k, v in batch.items()}
    out["mask"] = np.concatenate([mask, np.zeros(size - n, bool)])
    return out


def process_share(process_index: int | None = None, process_count: int | None = None) -> tuple[int, int]:
    """`(index, count)` of this process (JAX's, where not given); checks that they fit."""
    if process_index is None or process_count is None:
        import jax

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} out of range for process_count {process_count}")
    return process_index, process_count
