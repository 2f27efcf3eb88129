"""HRNet as a Flax NNX module: the Linen network (`hrnet_flax.models.hrnet`) behind NNX's Linen
bridge (`flax.nnx.bridge.ToNNX`), so that the network is defined once.

`create_model` and `load_pretrained` give an `HRNet` (`nnx.Module`) whose parameters are
`nnx.Param` and whose BatchNorm running statistics are `nnx.BatchStat`, holding the same values
as the Linen `{"params", "batch_stats"}`: `nnx.Optimizer(model, tx, wrt=nnx.Param)` trains the
parameters; `model.train()` / `model.eval()` switch BatchNorm between batch and running
statistics. `linen_variables` gives the Linen variables back (for `save_checkpoint` and exports).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from flax.traverse_util import flatten_dict

from hrnet_flax.models import hrnet as linen_hrnet
from hrnet_flax.models.config import HRNetConfig
from hrnet_flax.models.initialization import init_variables
from hrnet_flax.models.registry import create_model as create_linen_model
from hrnet_flax.models.stacking import model_variables

# The (H, W) of the shape-only trace that lays out the variables (HRNet's variables do not depend
# on it): ImageNet's 224x224, a multiple of 32 that every head takes.
DEFAULT_INPUT_SIZE = (224, 224)
COLLECTIONS = {nnx.Param: "params", nnx.BatchStat: "batch_stats"}


class HRNet(nnx.Module):
    """An HRNet classifier, segmenter or pose network (`hrnet_flax.create_model`) as an NNX module.

    `model(images)` runs inference with the running BatchNorm statistics; after `model.train()`
    (or `nnx.view(model, use_running_average=False)`) it normalises with the batch's statistics
    and updates the running ones in place, as `nnx.BatchNorm` does; `model.eval()` switches back.
    `model(images, return_features=True)` returns the Linen model's feature dict.

    `linen` is the wrapped Linen module (`config`, `num_classes` are its); `net` the
    `nnx.bridge.ToNNX` holding the variables, under the Linen names (`net.conv1["conv"]["kernel"]`).
    """

    def __init__(
        self, model: linen_hrnet.HRNet, variables: Mapping[str, Any], *, input_size: tuple[int, int] | None = None
    ):
        """`model` holding `variables` (`{"params", "batch_stats"}`, canonical or stacked);
        `input_size`: the (H, W) of the shape-only trace that lays them out (any size the model takes)."""
        if not isinstance(model, linen_hrnet.HRNet):
            raise TypeError(
                f"expected an hrnet_flax HRNet Linen module (hrnet_flax.create_model); got {type(model).__name__}"
            )
        self.linen = model
        self.use_running_average = True
        self.net = _bridge(model, variables, input_size or DEFAULT_INPUT_SIZE)

    @property
    def config(self) -> HRNetConfig:
        return self.linen.config

    @property
    def num_classes(self) -> int:
        return self.linen.num_classes

    def set_view(self, use_running_average: bool | None = None) -> None:
        """For `nnx.view`: `use_running_average=False` trains BatchNorm, True evaluates."""
        if use_running_average is not None:
            self.use_running_average = use_running_average

    def __call__(self, images: jax.Array, *, return_features: bool = False) -> Any:
        """The Linen model's output for NHWC `images` (logits, heatmaps, or the feature dict)."""
        if self.use_running_average:
            return self.net(images, train=False, return_features=return_features, mutable=False)
        # The Linen apply on the NNX values, then the new statistics written into the existing
        # `nnx.BatchStat`s: `ToNNX` would put new Variable objects in their place.
        variables = {
            "params": nnx.to_pure_dict(nnx.state(self.net, nnx.Param)),
            "batch_stats": nnx.to_pure_dict(nnx.state(self.net, nnx.BatchStat)),
        }
        out, updates = self.linen.apply(
            variables, images, train=True, return_features=return_features, mutable=["batch_stats"]
        )
        new_stats = flatten_dict(updates["batch_stats"])
        for path, variable in nnx.iter_graph(self.net):
            if isinstance(variable, nnx.BatchStat):
                variable.set_value(new_stats[tuple(path)])
        return out


def _bridge(model: linen_hrnet.HRNet, variables: Mapping[str, Any], input_size: tuple[int, int]) -> nnx.Module:
    """`nnx.bridge.ToNNX(model)` holding `variables`: the layout comes from a shape-only
    `lazy_init`, then each variable takes its value, checked against it."""
    if not isinstance(variables, Mapping) or "params" not in variables:
        raise ValueError(
            f"variables must be a mapping with 'params' (and 'batch_stats'), as hrnet_flax.init_variables "
            f"returns; got {type(variables).__name__}"
            + (f" with keys {sorted(variables)}" if isinstance(variables, Mapping) else "")
        )
    sample = (1, *input_size, 3)
    net = nnx.eval_shape(
        lambda: nnx.bridge.lazy_init(nnx.bridge.ToNNX(model), jnp.zeros(sample, jnp.float32), rngs=jax.random.key(0))
    )
    given = {"/".join(path): value for path, value in flatten_dict(model_variables(model, dict(variables))).items()}
    slots = {}
    for path, variable in nnx.iter_graph(net):
        if isinstance(variable, nnx.Variable):
            slots["/".join((COLLECTIONS[type(variable)], *path))] = variable
    missing, extra = sorted(set(slots) - set(given)), sorted(set(given) - set(slots))
    if missing or extra:
        found = (("missing", missing), ("unexpected", extra))
        parts = [f"{len(keys)} {what}, e.g. {', '.join(keys[:3])}" for what, keys in found if keys]
        raise ValueError(f"the variables do not fit {_describe(model)}: {'; '.join(parts)}")
    for key, variable in slots.items():
        value = jnp.asarray(given[key])
        if value.shape != variable.shape:
            raise ValueError(f"variable {key} has shape {value.shape}; {_describe(model)} needs {variable.shape}")
        variable.set_value(value)
    return net


def _describe(model: linen_hrnet.HRNet) -> str:
    head = model.config.head
    outputs = "joints" if head == "pose" else "classes"
    return f"the {head} HRNet with {model.num_classes} {outputs}" + (" (scan=True)" if model.scan else "")


def _init_key(rngs: nnx.Rngs | int | jax.Array) -> jax.Array:
    if isinstance(rngs, nnx.Rngs):
        return rngs.params()
    if isinstance(rngs, int) and not isinstance(rngs, bool):
        return jax.random.key(rngs)
    if isinstance(rngs, jax.Array) and jnp.issubdtype(rngs.dtype, jax.dtypes.prng_key):
        return rngs
    raise TypeError(f"rngs must be an nnx.Rngs, an int seed or a jax.random.key; got {rngs!r}")


def create_model(
    name: str, *, rngs: nnx.Rngs | int | jax.Array = 0, input_size: tuple[int, int] | None = None, **kwargs: Any
) -> HRNet:
    """A freshly initialised `HRNet` for a named variant; `kwargs` as `hrnet_flax.create_model`
    (`num_classes`, `dtype`, `scan`, ...).

    The variables are `hrnet_flax.init_variables(hrnet_flax.create_model(name, **kwargs), key)`
    with `key = jax.random.key(rngs)` for an int seed, the next key of the `params` stream
    (`rngs.params()`) for an `nnx.Rngs`, or the key itself: the same key gives the Linen model's
    weights. `input_size`: the (H, W) of the shape-only trace (default 224x224; the values do not
    depend on it).
    """
    model = create_linen_model(name, **kwargs)
    size = tuple(input_size or DEFAULT_INPUT_SIZE)
    variables = init_variables(model, _init_key(rngs), (1, *size, 3))
    return HRNet(model, variables, input_size=size)


def from_linen(model: linen_hrnet.HRNet, variables: Mapping[str, Any]) -> HRNet:
    """The `HRNet` of a Linen HRNet and its `{"params", "batch_stats"}` (canonical or stacked)."""
    return HRNet(model, variables)


def load_pretrained(source: str, **kwargs: Any) -> HRNet:
    """`hrnet_flax.load_pretrained(source, **kwargs)` as an `HRNet`: a file, URL or registered name."""
    from hrnet_flax.weights.pretrained import load_pretrained as load_linen

    return from_linen(*load_linen(source, **kwargs))


def linen_variables(module: HRNet) -> dict[str, Any]:
    """The Linen variables of `module`: `{"params", "batch_stats"}` (`params` only for a `fold_bn`
    model), in the layout `module.linen.apply` takes (stacked for `scan=True`), current values."""
    if not isinstance(module, HRNet):
        raise TypeError(f"expected an hrnet_flax.nnx.HRNet; got {type(module).__name__}")
    out = {"params": nnx.to_pure_dict(nnx.state(module.net, nnx.Param))}
    stats = nnx.to_pure_dict(nnx.state(module.net, nnx.BatchStat))
    if stats:
        out["batch_stats"] = stats
    return out
