"""Resizing as PyTorch's `F.interpolate` does it, so converted weights see the same features.

`resize_bilinear` is bilinear interpolation without antialiasing, in both of PyTorch's sample
grids: `align_corners=False` (half-pixel centres, source index clamped at 0) and `align_corners=True`
(corner pixels aligned). `jax.image.resize` has only the first, and antialiases when it shrinks.
Sample positions and weights are computed in float64 on the host (the shapes are static), then
applied as two gathers per axis: exact at any size, and cheap (four taps per output pixel).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


@functools.lru_cache(maxsize=256)
def _taps(size_in: int, size_out: int, align_corners: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lower index, upper index, weight of the upper one) for each output position of one axis."""
    dst = np.arange(size_out, dtype=np.float64)
    if align_corners:
        src = dst * ((size_in - 1) / (size_out - 1)) if size_out > 1 else np.zeros_like(dst)
    else:
        src = np.maximum((dst + 0.5) * (size_in / size_out) - 0.5, 0.0)
    lower = np.minimum(np.floor(src).astype(np.int64), size_in - 1)
    upper = np.minimum(lower + 1, size_in - 1)
    return lower.astype(np.int32), upper.astype(np.int32), src - lower


def _resize_axis(x: jax.Array, axis: int, size: int, align_corners: bool) -> jax.Array:
    if x.shape[axis] == size:
        return x
    lower, upper, weight = _taps(x.shape[axis], size, align_corners)
    shape = [1] * x.ndim
    shape[axis] = size
    w = jnp.asarray(weight.reshape(shape), x.dtype)
    return jnp.take(x, lower, axis=axis) * (1 - w) + jnp.take(x, upper, axis=axis) * w


def resize_bilinear(x: jax.Array, size: tuple[int, int], align_corners: bool = False) -> jax.Array:
    """NHWC `x` resized to `size` (H, W) as `F.interpolate(mode="bilinear", align_corners=...)`."""
    if x.ndim != 4:
        raise ValueError(f"resize_bilinear expects NHWC arrays; got shape {tuple(x.shape)}")
    h, w = size
    if h <= 0 or w <= 0:
        raise ValueError(f"resize_bilinear: target size must be positive; got {size}")
    x = _resize_axis(x, 1, int(h), align_corners)
    return _resize_axis(x, 2, int(w), align_corners)


def resize_nearest(x: jax.Array, size: tuple[int, int]) -> jax.Array:
    """NHWC `x` resized to `size` as PyTorch's `mode="nearest"` (index floor(dst * in / out));
    for label maps, which must never be interpolated."""
    out = x
    for axis, n in ((1, int(size[0])), (2, int(size[1]))):
        if out.shape[axis] != n:
            index = np.minimum(np.floor(np.arange(n) * (out.shape[axis] / n)).astype(np.int32), out.shape[axis] - 1)
            out = jnp.take(out, index, axis=axis)
    return out
