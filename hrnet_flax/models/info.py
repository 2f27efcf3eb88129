"""Parameters and multiply-accumulates of each variant, counted from the model itself."""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from hrnet_flax.models.config import FAMILY
from hrnet_flax.models.registry import canonical_name, create_model, list_models

COUNTED = (
    "params: trainable parameters (BatchNorm running statistics excluded); MACs: multiply-accumulates "
    "of every convolution and dense layer for one {size} image (bias adds, BatchNorm, ReLU, "
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


@dataclasses.dataclass(frozen=True)
class Layer:
    """One convolution or dense layer as applied to one image: shapes without the batch axis."""

    kind: str  # "conv" or "dense"
    input_shape: tuple[int, ...]
    kernel_shape: tuple[int, ...]  # HWIO for convolutions, (in, out) for dense
    output_shape: tuple[int, ...]
    strides: tuple[int, ...]
    padding: tuple[tuple[int, int], ...]

    @property
    def macs(self) -> int:
        return math.prod(self.output_shape) * math.prod(self.kernel_shape[:-1])


Size = int | tuple[int, int]


def _hw(size: Size) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def layers(name: str, size: Size = 224, num_classes: int | None = None) -> tuple[list[Layer], int]:
    """Every convolution and dense layer of a variant for one image of `size` (a side, or (H, W)),
    in call order, and the number of trainable parameters (no compilation). `num_classes`: the
    head's default (1000, or 19 for segmenters) when None."""
    model = create_model(name, num_classes=num_classes)
    found = []

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        module = context.module
        if context.method_name == "__call__" and isinstance(module, (nn.Conv, nn.Dense)):
            kernel = module.get_variable("params", "kernel")
            conv = isinstance(module, nn.Conv)
            found.append(Layer(
                "conv" if conv else "dense", tuple(args[0].shape[1:]), tuple(kernel.shape), tuple(out.shape[1:]),
                tuple(module.strides) if conv else (), tuple(map(tuple, module.padding)) if conv else (),
            ))  # fmt: skip
        return out

    image = jax.ShapeDtypeStruct((1, *_hw(size), 3), jnp.float32)
    with nn.intercept_methods(interceptor):
        variables = jax.eval_shape(model.init, jax.random.key(0), image)
    return found, sum(math.prod(x.shape) for x in jax.tree.leaves(variables["params"]))


def count(name: str, size: Size = 224, num_classes: int | None = None) -> ModelInfo:
    """Parameters and conv/dense MACs of a variant for one image of `size` (no compilation)."""
    found, params = layers(name, size, num_classes)
    return ModelInfo(canonical_name(name), params, sum(layer.macs for layer in found))


def table(names: list[str] | None = None, size: Size = 224) -> str:
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
    h, w = _hw(size)
    return "\n".join(rows) + "\n\n" + COUNTED.format(size=f"{h}x{w}")
