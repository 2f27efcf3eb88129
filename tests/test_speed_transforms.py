"""Speed transforms compute the same function as the plain float32 model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hrnet_flax as hf


def randomised(variables, seed=0):
    """Non-trivial BatchNorm statistics and affine parameters, so a wrong fold cannot pass."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(variables)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    out = []
    for (path, x), k in zip(leaves, keys):
        name = path[-1].key
        if name in ("var", "scale"):
            x = jax.random.uniform(k, x.shape, x.dtype, 0.5, 1.0)
        elif name in ("mean", "bias"):
            x = 0.1 * jax.random.normal(k, x.shape, x.dtype)
        out.append(x)
    return jax.tree_util.tree_unflatten(treedef, out)


@pytest.mark.parametrize("se", [False, True])
def test_folded_batchnorm_matches_the_plain_model(se):
    name = "hrnet_w18_small"
    model = hf.create_model(name, num_classes=10, se=se)
    variables = randomised(hf.init_variables(model, jax.random.key(0)))
    images = jax.random.normal(jax.random.key(1), (2, 64, 64, 3))
    want = jax.jit(lambda v, x: model.apply(v, x, return_features=True))(variables, images)
    folded_model = hf.create_model(name, num_classes=10, se=se, fold_bn=True)
    folded = hf.fold_batchnorm(variables)
    assert "batch_stats" not in folded and "bn" not in folded["params"]["conv1"]
    assert jax.tree.structure(folded) == jax.tree.structure(
        jax.eval_shape(folded_model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))
    )
    got = jax.jit(lambda v, x: folded_model.apply(v, x, return_features=True))(folded, images)
    for key in ("branch3", "hrnetv2", "logits"):
        scale = float(jnp.abs(want[key]).max())
        np.testing.assert_allclose(got[key], want[key], rtol=1e-4, atol=1e-4 * scale, err_msg=key)
    with pytest.raises(ValueError, match="fold_bn"):
        folded_model.apply(folded, images, train=True)


# A tiny HRNet (one block per branch, narrow head) keeps the two backward compilations cheap.
TINY = dict(
    stages=(
        hf.StageConfig(1, "bottleneck", (1,), (8,)),
        hf.StageConfig(1, "basic", (1, 1), (4, 8)),
        hf.StageConfig(2, "basic", (1, 1, 1), (4, 8, 16)),
        hf.StageConfig(1, "basic", (1, 1, 1, 1), (4, 8, 16, 32)),
    ),
    head_channels=(8, 16, 32, 64),
    num_features=128,
    stem_width=16,
)


def test_remat_gives_the_same_loss_and_gradients():
    images = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
    labels = jnp.array([1, 3])
    results = []
    for remat in (False, True):
        model = hf.create_model("hrnet_w18_small", num_classes=5, remat=remat, **TINY)
        variables = hf.init_variables(model, jax.random.key(0))

        def loss_fn(params, model=model, variables=variables):
            logits, _ = model.apply(
                {"params": params, "batch_stats": variables["batch_stats"]}, images, train=True, mutable=["batch_stats"]
            )
            return -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1).mean()

        results.append(jax.jit(jax.value_and_grad(loss_fn))(variables["params"]))
    (l0, g0), (l1, g1) = results
    np.testing.assert_allclose(l0, l1, rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), g0, g1)
