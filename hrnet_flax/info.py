"""Parameters and multiply-accumulates of each variant, counted from the model itself."""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from hrnet_flax.config import FAMILY
from hrnet_flax.registry import canonical_name, create_model, list_models

COUNTED = (
    "params: trainable parameters (BatchNorm running statistics excluded); MACs: multiply-accumulates "
    "of every convolution and dense layer for one {size}x{size} image (bias adds, BatchNorm, ReLU, "
    "additions, upsampling and pooling excluded); FLOPs = 2 x MACs."
)


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    name: str
    params: int
    macs: int

    @property
    def flops(self) -> int:
        return 2 * self.macs


def count(name: str, size: int = 224, num_classes: int = 1000) -> ModelInfo:
    """Parameters and conv/dense MACs of a variant for one `size`x`size` image (no compilation)."""
    model = create_model(name, num_classes=num_classes)
    macs = []

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        module = context.module
        if context.method_name == "__call__" and isinstance(module, (nn.Conv, nn.Dense)):
            kernel = module.get_variable("params", "kernel")
            per_output = math.prod(kernel.shape[:-1])  # kh*kw*cin (conv) or cin (dense)
            macs.append(math.prod(out.shape[:-1]) * out.shape[-1] * per_output)
        return out

    image = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    with nn.intercept_methods(interceptor):
        variables = jax.eval_shape(model.init, jax.random.key(0), image)
    params = sum(math.prod(x.shape) for x in jax.tree.leaves(variables["params"]))
    return ModelInfo(canonical_name(name), params, sum(macs))


def table(names: list[str] | None = None, size: int = 224) -> str:
    """A Markdown table of params (M), MACs (G) and FLOPs (G) for `names` (default: all)."""
    rows = [
        "| model | params (M) | MACs (G) | FLOPs (G) | layout |",
        "|---|---:|---:|---:|---|",
    ]
    for name in names or list_models():
        info = count(name, size)
        rows.append(
            f"| {info.name} | {info.params / 1e6:.3f} | {info.macs / 1e9:.2f} | {info.flops / 1e9:.2f} "
            f"| {FAMILY[info.name]} |"
        )
    return "\n".join(rows) + "\n\n" + COUNTED.format(size=size)
