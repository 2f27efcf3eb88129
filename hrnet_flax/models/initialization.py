"""Fast variable initialisation: the same distributions as `model.init`, in one random draw.

`model.init` traces the whole forward pass and compiles one random-number kernel per parameter,
which takes XLA on a CPU 30-60 s for an HRNet. `init_variables` takes the variable tree from a
shape-only trace and fills every convolution and dense kernel from a single normal draw, scaled
by the initializer the module declares (`CONV_INIT`, `DENSE_INIT`, and for the output convolutions
`HEAD_INITS`); biases and BatchNorm start at 0 (means, shifts) or 1 (scales, variances), as in
`model.init`.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hrnet_flax.models.hrnet import CONV_INIT, DENSE_INIT, POSE_HEAD_INIT, SEG_CLASSIFIER_INIT
from hrnet_flax.models.stacking import model_variables

ONES = ("scale", "var")
HEAD_INITS = {"seg_classifier": SEG_CLASSIFIER_INIT, "pose_head": POSE_HEAD_INIT}  # plain output convs


@functools.lru_cache(maxsize=32)
def abstract_variables(model: Any, image_shape: tuple[int, ...]) -> dict:
    """The variables' shapes and dtypes, from a shape-only trace of `model.init` (0.4-1.5 s for an
    HRNet on a CPU); kept per model and image shape (modules are frozen dataclasses, equal when
    their fields are)."""
    return jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct(image_shape, jnp.float32))


def init_variables(model: Any, rng: jax.Array, image_shape: tuple[int, ...] = (1, 32, 32, 3)) -> dict:
    """Variables for an `HRNet` ({"params", "batch_stats"}), without compiling its forward pass;
    a scanned model gets the same draw as the plain one, stacked."""
    abstract = abstract_variables(model.clone(scan=False), tuple(image_shape))
    leaves, treedef = jax.tree_util.tree_flatten_with_path(abstract)
    stds = []
    for path, leaf in leaves:
        name = path[-1].key
        if name == "kernel":
            init = DENSE_INIT if leaf.ndim == 2 else CONV_INIT
            for k in path:
                init = HEAD_INITS.get(getattr(k, "key", None), init)
            stds.append(init.std(leaf.shape))
        else:
            stds.append(None)
    total = sum(math.prod(leaf.shape) for (_, leaf), std in zip(leaves, stds) if std is not None)
    draw = np.asarray(jax.jit(jax.random.normal, static_argnums=1)(rng, (total,)))
    out, offset = [], 0
    for (path, leaf), std in zip(leaves, stds):
        if std is None:
            value = np.full(leaf.shape, 1.0 if path[-1].key in ONES else 0.0, np.float32)
        else:
            size = math.prod(leaf.shape)
            value = draw[offset : offset + size].reshape(leaf.shape) * np.float32(std)
            offset += size
        out.append(jnp.asarray(value, leaf.dtype))
    return model_variables(model, jax.tree_util.tree_unflatten(treedef, out))
