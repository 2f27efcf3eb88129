"""The key table mirrors the model: same variable paths and shapes as `model.init`."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from hrnet_flax import create_model
from hrnet_flax.models.config import ARCHS
from hrnet_flax.weights.layouts import key_table


@pytest.mark.parametrize("arch", ["hrnet_w18_small", "hrnet_w18_small_v2", "se_hrnet_w18_c", "hrnet_w18"])
def test_table_matches_model_variables(arch):
    shapes = jax.eval_shape(create_model(arch, num_classes=7).init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
    flat = {
        "/".join(str(p.key) for p in path): tuple(x.shape) for path, x in jax.tree_util.tree_leaves_with_path(shapes)
    }
    table = {leaf.flax_key: leaf.shape for leaf in key_table(ARCHS[arch], 7, "flax")}
    assert table == flat
