"""A 2-D convolution with hand-written gradients in the forms XLA:CPU runs fast.

XLA's own gradients of a convolution were most of HRNet's CPU training step: the weight
gradient transposes both operands (and XLA fused the recomputation of whole residual chains into
those transposes), and inside `scan` XLA:CPU runs both gradients with a slow generic kernel.
Here the input gradient is a plain NHWC/HWIO convolution of the zero-dilated output gradient
with the flipped kernel; the weight gradient is one matrix product for 1x1 kernels and otherwise
an NHWC/HWIO convolution of explicitly transposed operands. Used by
`HRNet(explicit_conv_grads=True)`. In every HRNet (either kind of gradient), a convolution whose
input or output is spatially smaller than its kernel (the lowest branches and the head at small
image sizes) is one matrix product of shifted views instead. Measurements in
experiments/results/speed_notes.md.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
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
    convolutions of the head's `downsamp` layers (experiments/results/speed_notes.md, session 8).
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


def input_grad(dy: jax.Array, w: jax.Array, x_shape: tuple[int, ...], strides, padding) -> jax.Array:
    """d(loss)/d(input) as a stride-1 NHWC/HWIO convolution of the zero-dilated `dy` with the
    flipped kernel (the canonical layout XLA:CPU runs fast, also inside `scan`)."""
    pads = [(0, 0, 0)]
    for d, (k, s, (lo, _)) in enumerate(zip(w.shape[:2], strides, padding), start=1):
        before = k - 1 - lo
        pads.append((before, x_shape[d] + k - 1 - ((dy.shape[d] - 1) * s + 1) - before, s - 1))
    dy = lax.pad(dy, jnp.zeros((), dy.dtype), [*pads, (0, 0, 0)])
    return _conv(dy, jnp.flip(w, (0, 1)).swapaxes(2, 3), (1, 1), ((0, 0), (0, 0)))


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
