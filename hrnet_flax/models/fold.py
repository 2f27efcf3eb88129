"""Fold BatchNorm into the preceding convolution, for inference with `create_model(..., fold_bn=True)`."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def fold_batchnorm(variables: dict, epsilon: float = 1e-5) -> dict:
    """Variables of a `fold_bn=True` model computing what `variables` compute in eval mode.

    Each ConvBN's `conv.kernel` is scaled per output channel by gamma / sqrt(var + eps) and gets a
    bias (b - mean) * scale + beta; the BatchNorm and the running statistics are gone. Works on the
    canonical and the stacked (`scan=True`) layouts alike.
    """

    def fold(params: Any, stats: Any) -> Any:
        if not isinstance(params, dict):
            return params
        if "conv" in params and "bn" in params:
            bn, st = params["bn"], stats["bn"]
            scale = bn["scale"] * jax.lax.rsqrt(st["var"].astype(jnp.float32) + epsilon)
            kernel = params["conv"]["kernel"]
            bias = params["conv"].get("bias", jnp.zeros_like(bn["bias"]))
            per_out = scale.reshape(scale.shape[:-1] + (1,) * (kernel.ndim - scale.ndim) + scale.shape[-1:])
            return {
                "conv": {
                    "kernel": (kernel * per_out).astype(kernel.dtype),
                    "bias": ((bias - st["mean"]) * scale + bn["bias"]).astype(kernel.dtype),
                }
            }
        return {k: fold(v, (stats or {}).get(k, {})) for k, v in params.items()}

    return {"params": fold(variables["params"], variables.get("batch_stats", {}))}
