"""Helpers shared by the converter tests: random reference weights and logit comparison."""

from __future__ import annotations

import numpy as np

from hrnet_flax.models.config import ARCHS
from hrnet_flax.weights.convert import ref_shape
from hrnet_flax.weights.layouts import key_table

TOLERANCE = 1e-4


def assert_logits_match(ours: np.ndarray, ref: np.ndarray, what: str, tolerance: float = TOLERANCE) -> None:
    """Relative max error < `tolerance` (1e-4; float64 comparisons pass a tighter one), both raw
    and after removing the per-class batch mean (so a model whose output ignores its input cannot
    pass). Any layout with the batch first works (NC logits, NHWC segmentation logits).

    Random weights can make the logits mostly a common offset. Float32 rounding of that offset
    then shows up amplified in the centred part: with random PaddleClas W18 weights the part that
    depends on the input is 0.55% of the logits' scale, and PaddleClas' own float32 logits are
    1.4e-4 (centred) from its float64 ones. So the centred bound is relaxed in proportion where that
    part is under 2% of the scale.
    """
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, f"{what}: shapes {ours.shape} vs {ref.shape}"
    err = np.abs(ours - ref).max() / np.abs(ref).max()
    oc, rc = ours - ours.mean(0), ref - ref.mean(0)
    dependence = np.abs(rc).max() / np.abs(ref).max()
    assert dependence > 1e-3, f"{what}: reference logits barely depend on the input"
    err_c = np.abs(oc - rc).max() / np.abs(rc).max()
    tolerance_c = tolerance * max(1.0, 0.02 / dependence)
    assert err < tolerance and err_c < tolerance_c, (
        f"{what}: relative error {err:.2e}, centred {err_c:.2e} (bound {tolerance_c:.1e}; "
        f"the input-dependent part is {dependence:.2%} of the logits)"
    )


def randomize_torch_bn(model, seed: int = 0) -> None:
    """Non-trivial BatchNorm statistics and affine parameters, and random conv biases."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                n = mod.num_features
                mod.running_mean.copy_(torch.randn(n, generator=gen) * 0.2)
                mod.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.5)
                mod.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                mod.bias.copy_(torch.randn(n, generator=gen) * 0.2)
            elif isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear)) and mod.bias is not None:
                mod.bias.copy_(torch.randn(mod.bias.shape, generator=gen) * 0.1)


def synthetic_state_dict(
    arch: str, layout: str, num_classes: int = 1000, seed: int = 0, zeros: bool = False
) -> dict[str, np.ndarray]:
    """Random arrays (or zeros, where only keys and shapes matter: W64's 128 M normal draws take
    seconds) with every key and shape of `arch` in `layout` (no framework needed)."""
    table = key_table(ARCHS[arch], num_classes, layout)
    if zeros:
        return {leaf.key: np.zeros(ref_shape(leaf), np.float32) for leaf in table}
    rng = np.random.default_rng(seed)
    return {leaf.key: rng.normal(size=ref_shape(leaf)).astype(np.float32) for leaf in table}


def images(batch: int = 2, size: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(batch, size, size, 3)).astype(np.float32)


def calibrated(variables: dict, seed: int = 0) -> dict:
    """Flax variables with non-trivial BatchNorm: running means N(0, 0.1), variances U(0.5, 1.5),
    scales U(0.5, 1.5), shifts N(0, 0.1); everything else as given."""
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(seed)

    def draw(path, x):
        name, in_bn = path[-1].key, any(getattr(k, "key", None) == "bn" for k in path)
        if name in ("var", "scale") and in_bn:
            return jnp.asarray(rng.uniform(0.5, 1.5, x.shape), x.dtype)
        if name in ("mean", "bias") and in_bn:
            return jnp.asarray(rng.normal(0.0, 0.1, x.shape), x.dtype)
        return x

    return jax.tree_util.tree_map_with_path(draw, variables)
