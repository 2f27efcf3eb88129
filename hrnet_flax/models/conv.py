"""A 2-D convolution with hand-written gradients in the forms XLA:CPU runs fast.

XLA's own gradients of a convolution were most of HRNet's CPU training step: the weight
gradient transposes both operands (and XLA fused the recomputation of whole residual chains into
those transposes), and inside `scan` XLA:CPU runs both gradients with a slow generic kernel.
Here the input gradient is a plain NHWC/HWIO convolution of the output gradient with the flipped
kernel (with a stride, one per phase of the input, interleaved); the weight gradient is one matrix
product for 1x1 kernels and otherwise an NHWC/HWIO convolution of explicitly transposed
operands. Used by `HRNet(explicit_conv_grads=True)`. In every HRNet (either kind of gradient), a
convolution whose input or output is spatially smaller than its kernel (the lowest branches and
the head at small image sizes) is one matrix product of shifted views instead. Measurements in
docs/performance.md.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

NHWC = ("NHWC", "HWIO", "NHWC")


def _conv(x: jax.Array, w: jax.Array, strides: tuple[int, int], padding: tuple[tuple[int, int], ...]) -> jax.Array:
    return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=NHWC)


def conv2d(
    x: jax.Array, w: jax.Array, strides: tuple[int, int], padding: tuple[tuple[int, int], ...], explicit_grads: bool = True
) -> jax.Array:
    """NHWC x HWIO convolution with explicit padding; same values as `lax.conv_general_dilated`.

    `explicit_grads=False` keeps XLA's own gradients, except for convolutions smaller than the kernel.
    """
    if smaller_than_kernel(x.shape, w.shape, strides, padding):
        return patches_conv2d(x, w, strides, padding)
    return _conv2d(x, w, strides, padding) if explicit_grads else _conv(x, w, strides, padding)


def smaller_than_kernel(x_shape, w_shape, strides, padding) -> bool:
    """Whether the input or the output is spatially smaller than the kernel (e.g. 3x3 on 2x2).

    XLA:CPU then swaps a convolution's operands (its own forward, or the input gradient) and runs it
    on a slow generic kernel: 1.1 s of the demo's 1.5 s step (32 px, batch 64) went to three such
    convolutions of the head's `downsamp` layers.
    """
    for size, k, s, (lo, hi) in zip(x_shape[1:3], w_shape[:2], strides, padding):
        if k > 1 and min(size, (size + lo + hi - k) // s + 1) < k:
            return True
    return False


def patches_conv2d(x: jax.Array, w: jax.Array, strides, padding) -> jax.Array:
    """The convolution as one matrix product of the kernel with the input's kh*kw shifted, strided
    views (differentiated by JAX: slices, pads and matrix products)."""
    kh, kw, cin, cout = w.shape
    (sh, sw), zero = strides, jnp.zeros((), x.dtype)
    x = lax.pad(x, zero, [(0, 0, 0), (*padding[0], 0), (*padding[1], 0), (0, 0, 0)])
    ho, wo = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
    taps = [x[:, i : i + (ho - 1) * sh + 1 : sh, j : j + (wo - 1) * sw + 1 : sw, :] for i in range(kh) for j in range(kw)]
    patches = jnp.concatenate(taps, axis=-1)  # (N, Ho, Wo, kh*kw*Cin), ordered like w.reshape below
    return lax.dot_general(patches, w.reshape(kh * kw * cin, cout), (((3,), (0,)), ((), ())))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv2d(x: jax.Array, w: jax.Array, strides: tuple[int, int], padding: tuple[tuple[int, int], ...]) -> jax.Array:
    return _conv(x, w, strides, padding)


def _fwd(x, w, strides, padding):
    return _conv(x, w, strides, padding), (x, w)


def _accumulation_type(x: jax.Array) -> Any:
    """float32 for bfloat16/float32 inputs, float64 for float64 ones."""
    return jnp.promote_types(x.dtype, jnp.float32)


def weight_grad(x: jax.Array, dy: jax.Array, kernel: tuple[int, int], strides, padding) -> jax.Array:
    """d(loss)/d(kernel): for 1x1 kernels one (N*H*W, Cin)^T (N*H*W, Cout) product; otherwise a
    convolution of x as (Cin, H, W, N) with dy as an (H, W, N, Cout) kernel dilated by the stride."""
    if tuple(kernel) != (1, 1):
        pads = [(lo, k + (n - 1) * s - size - lo) for k, s, (lo, _), n, size in zip(kernel, strides, padding, dy.shape[1:3], x.shape[1:3])]
        dw = lax.conv_general_dilated(
            x.transpose(3, 1, 2, 0), dy.transpose(1, 2, 0, 3), (1, 1), pads, rhs_dilation=strides,
            dimension_numbers=NHWC, preferred_element_type=_accumulation_type(x),
        )
        return dw.transpose(1, 2, 0, 3)
    (sh, sw), cout = strides, dy.shape[-1]
    x = x[:, :: sh, :: sw, :].reshape(-1, x.shape[-1])
    dw = lax.dot_general(x, dy.reshape(-1, cout), (((0,), (0,)), ((), ())), preferred_element_type=_accumulation_type(x))
    return dw.reshape(1, 1, *dw.shape)


def phase_taps(k: int, s: int, lo: int) -> tuple[int, int, np.ndarray]:
    """One spatial axis of a stride-`s` convolution with a `k`-tap kernel and `lo` padding in front.

    The input gradient at positions s*i + a (phase a) is a stride-1 correlation of the output
    gradient, padded by `before`, over `window` positions; `taps[u, a]` is the kernel tap used at
    window offset u in phase a, or -1 where the phase uses none. For s == 1 this is the flipped kernel.
    """
    phases = [((a + lo) % s, (a + lo) // s) for a in range(s)]  # (first tap, offset into dy)
    counts = [-(-(k - first) // s) for first, _ in phases]
    before = max(n - 1 - offset for (_, offset), n in zip(phases, counts))
    window = max(offset for _, offset in phases) + before + 1
    taps = np.full((window, s), -1)
    for a, ((first, offset), n) in enumerate(zip(phases, counts)):
        for u in range(window):
            if 0 <= offset + before - u < n:
                taps[u, a] = s * (offset + before - u) + first
    return before, window, taps


def _span(column: np.ndarray) -> tuple[int, int]:
    used = np.flatnonzero(column >= 0)
    return (int(used[0]), int(used[-1]) + 1) if used.size else (0, 0)


# Below this many input channels, a strided convolution's input gradient computes all its phases in one
# convolution (more output channels suit Eigen's kernels, at 16/9 of the multiplies for 3x3 stride 2);
# from it on, one convolution per phase (exactly the forward's multiplies).
COMBINED_PHASES_BELOW = 64


def input_grad(dy: jax.Array, w: jax.Array, x_shape: tuple[int, ...], strides, padding) -> jax.Array:
    """d(loss)/d(input) as stride-1 NHWC/HWIO convolutions of `dy` (the canonical layout XLA:CPU runs
    fast, also inside `scan`): with stride 1 one convolution with the flipped kernel; with stride s
    one per phase of the input (rows s*i + a, columns s*j + b) with the taps that reach it,
    interleaved afterwards, instead of one convolution of a zero-dilated `dy` (s*s times the work)."""
    kh, kw, cin, cout = w.shape
    (bh, nh, th), (bw, nw, tw) = (phase_taps(k, s, lo) for k, s, (lo, _) in zip((kh, kw), strides, padding))
    (sh, sw), n = strides, dy.shape[0]
    ih, iw = -(-x_shape[1] // sh), -(-x_shape[2] // sw)  # rows and columns per phase
    pads = [(0, 0, 0), (bh, ih + nh - 1 - dy.shape[1] - bh, 0), (bw, iw + nw - 1 - dy.shape[2] - bw, 0), (0, 0, 0)]
    dy = lax.pad(dy, jnp.zeros((), dy.dtype), pads)
    valid = ((0, 0), (0, 0))
    if sh * sw == 1:  # taps == the flipped kernel
        return _conv(dy, jnp.flip(w, (0, 1)).swapaxes(2, 3), (1, 1), valid)
    # kernel[u, v, :, a, b, :] = w[th[u, a], tw[v, b]].T, zero where a phase has no tap
    used = (th[:, None, :, None] >= 0) & (tw[None, :, None, :] >= 0)
    index = np.where(used, th[:, None, :, None] * kw + tw[None, :, None, :], kh * kw).reshape(-1)
    flat = jnp.concatenate([w.reshape(kh * kw, cin, cout), jnp.zeros((1, cin, cout), w.dtype)])
    kernel = flat[index].reshape(nh, nw, sh, sw, cin, cout).transpose(0, 1, 5, 2, 3, 4)
    if cin < COMBINED_PHASES_BELOW:
        out = _conv(dy, kernel.reshape(nh, nw, cout, sh * sw * cin), (1, 1), valid).reshape(n, ih, iw, sh, sw, cin)
    else:
        rows = []
        for a in range(sh):
            cols = []
            for b in range(sw):
                (u0, u1), (v0, v1) = _span(th[:, a]), _span(tw[:, b])
                if u0 == u1 or v0 == v1:  # no tap reaches this phase (a 1x1 kernel with stride 2)
                    cols.append(jnp.zeros((n, ih, iw, cin), dy.dtype))
                else:
                    part = dy[:, u0 : u1 - 1 + ih, v0 : v1 - 1 + iw]
                    cols.append(_conv(part, kernel[u0:u1, v0:v1, :, a, b], (1, 1), valid))
            rows.append(jnp.stack(cols, axis=3))
        out = jnp.stack(rows, axis=3)
    out = out.transpose(0, 1, 3, 2, 4, 5).reshape(n, ih * sh, iw * sw, cin)
    return out[:, : x_shape[1], : x_shape[2]]


def _bwd(strides, padding, residuals, dy):
    x, w = residuals
    dx = input_grad(dy, w, x.shape, strides, padding)
    dw = weight_grad(x, dy, w.shape[:2], strides, padding)
    return dx, dw.astype(w.dtype)


_conv2d.defvjp(_fwd, _bwd)


def conv_general_dilated(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Sequence[int],
    padding: Any,
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers: Any = None,
    feature_group_count: int = 1,
    precision: Any = None,
    explicit_grads: bool = True,
) -> jax.Array:
    """`conv2d` behind `lax.conv_general_dilated`'s signature (for `flax.linen.Conv`), limited to what HRNet uses."""
    if (
        lhs.ndim != 4
        or rhs.ndim != 4
        or lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
        != lax.conv_dimension_numbers(lhs.shape, rhs.shape, NHWC)
        or isinstance(padding, str)
        or any(d != 1 for d in (*(lhs_dilation or ()), *(rhs_dilation or ())))
        or feature_group_count != 1
        or precision is not None
    ):
        raise ValueError(
            "conv2d supports only undilated, ungrouped 2-D NHWC/HWIO convolutions "
            f"with explicit padding; got input {lhs.shape}, kernel {rhs.shape}, padding {padding!r}, "
            f"dilations {lhs_dilation}/{rhs_dilation}, groups {feature_group_count}, precision {precision}"
        )
    return conv2d(lhs, rhs, tuple(window_strides), tuple(tuple(p) for p in padding), explicit_grads)
