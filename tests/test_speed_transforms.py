"""Speed transforms compute the same function as the plain float32 model."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hrnet_flax as hf


def randomised(variables, seed=0):
    """Non-trivial BatchNorm statistics and affine parameters, so a wrong fold cannot pass."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(variables)
    rng = np.random.default_rng(seed)  # numpy: no small XLA program compiled per leaf shape
    out = []
    for path, x in leaves:
        name = path[-1].key
        if name in ("var", "scale"):
            x = jnp.asarray(rng.uniform(0.5, 1.0, x.shape), x.dtype)
        elif name in ("mean", "bias"):
            x = jnp.asarray(0.1 * rng.normal(size=x.shape), x.dtype)
        out.append(x)
    return jax.tree_util.tree_unflatten(treedef, out)


@pytest.mark.slow
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


@pytest.mark.slow
def test_remat_gives_the_same_loss_and_gradients():
    """In float64, like the explicit-gradient test in test_conv.py: at batch 2 and 32 px, BatchNorm over the
    1-pixel branches amplifies rounding, and once XLA fuses the recomputation differently (jaxlib 0.12 does;
    0.10 gives identical bits) float32 gradients of a few leaves moved by 3e-4 of their value."""
    with jax.enable_x64(True):
        images = jnp.asarray(np.random.default_rng(1).normal(size=(2, 32, 32, 3)), jnp.float64)
        labels = jnp.array([1, 3])
        results = []
        for remat in (False, True):
            model = hf.create_model("hrnet_w18_small", num_classes=5, remat=remat, dtype=jnp.float64, **TINY)
            variables = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), hf.init_variables(model, jax.random.key(0)))

            def loss_fn(params, model=model, variables=variables):
                logits, _ = model.apply(
                    {"params": params, "batch_stats": variables["batch_stats"]}, images, train=True, mutable=["batch_stats"]
                )
                log_p = jax.nn.log_softmax(logits.astype(jnp.float64))  # the model returns float32 logits
                return -jnp.take_along_axis(log_p, labels[:, None], 1).mean()

            results.append(jax.jit(jax.value_and_grad(loss_fn))(variables["params"]))
    (l0, g0), (l1, g1) = results
    assert l0.dtype == jnp.float64 and all(g.dtype == jnp.float64 for g in jax.tree.leaves(g1))
    np.testing.assert_allclose(l1, l0, rtol=1e-7)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), g0, g1)  # measured: 0 and 2.4e-15


@pytest.mark.slow
def test_scanned_model_matches_the_plain_model_and_its_layout_round_trips(tmp_path):
    name = "hrnet_w18_small_v2"  # 2 blocks per branch, stages of 1, 3 and 2 modules
    plain = hf.create_model(name, num_classes=10)
    scanned = hf.create_model(name, num_classes=10, scan=True)
    variables = randomised(hf.init_variables(plain, jax.random.key(0)))
    stacked = hf.stack_variables(variables)
    shapes = jax.eval_shape(scanned.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))
    assert jax.tree.map(jnp.shape, stacked) == jax.tree.map(jnp.shape, shapes)
    assert stacked["params"]["stage3"]["layer"]["branch0"]["layer"]["conv1"]["conv"]["kernel"].shape == (3, 2, 3, 3, 18, 18)
    assert hf.is_stacked(stacked) and not hf.is_stacked(variables)
    jax.tree.map(np.testing.assert_array_equal, hf.unstack_variables(stacked), variables)
    jax.tree.map(np.testing.assert_array_equal, hf.init_variables(scanned, jax.random.key(0)),
                 hf.stack_variables(hf.init_variables(plain, jax.random.key(0))))  # fmt: skip

    images = jax.random.normal(jax.random.key(1), (2, 64, 64, 3))
    want = jax.jit(lambda v, x: plain.apply(v, x, return_features=True))(variables, images)
    got = jax.jit(lambda v, x: scanned.apply(v, x, return_features=True))(stacked, images)
    folded_model = hf.create_model(name, num_classes=10, scan=True, fold_bn=True)
    folded = jax.jit(folded_model.apply)(hf.fold_batchnorm(stacked), images)
    for key in ("stem", "branch3", "hrnetv2", "logits"):
        scale = float(jnp.abs(want[key]).max())
        np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-5 * scale, err_msg=key)
    np.testing.assert_allclose(folded, want["logits"], rtol=1e-4, atol=1e-4 * float(jnp.abs(want["logits"]).max()))

    # checkpoints stay canonical: saved from stacked variables, loaded either way
    path = tmp_path / "w.safetensors"
    hf.save_checkpoint(path, stacked, arch=name, num_classes=10)
    model, loaded = hf.load_pretrained(str(path), scan=True)
    assert model.scan
    jax.tree.map(np.testing.assert_array_equal, loaded, stacked)
    _, loaded = hf.load_pretrained(str(path))
    jax.tree.map(np.testing.assert_array_equal, loaded, variables)

    del variables["params"]["stage3_1"]["branch2_1"]
    with pytest.raises(ValueError, match=r"cannot stack params/stage3/layer/branch2/layer/conv1/.*: copy \(1, 1\) of the repeated layer is missing"):
        hf.stack_variables(variables)


@pytest.mark.slow
@pytest.mark.parametrize("se", [False, True])
def test_scanned_model_trains_like_the_plain_model(se):
    """Scanned layers (stacked, keeping only conv outputs for the backward pass) give the plain
    model's loss, gradients and BatchNorm statistics; with SE blocks their squeeze-excite is
    recomputed in the backward pass too (branches widened so SE's C/16 squeeze is not empty)."""
    widen = 4 if se else 1
    tiny = dict(TINY, stages=tuple(s.__class__(s.num_modules, s.block, (2,) * len(s.num_blocks),
                                               tuple(widen * c for c in s.num_channels))
                                   for s in TINY["stages"]))  # fmt: skip
    images = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
    labels = jnp.array([1, 3])
    results = []
    for scan in (False, True):
        model = hf.create_model("hrnet_w18_small", num_classes=5, scan=scan, se=se, **tiny)
        variables = randomised(hf.init_variables(model.clone(scan=False), jax.random.key(0)))
        assert ("se" in variables["params"]["stage4_0"]["branch3_1"]) == se
        variables = hf.stack_variables(variables) if scan else variables

        def loss_fn(params, model=model, variables=variables):
            logits, new = model.apply(
                {"params": params, "batch_stats": variables["batch_stats"]}, images, train=True, mutable=["batch_stats"]
            )
            return -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1).mean(), new

        (loss, new), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(variables["params"])
        results.append((loss, hf.unstack_variables({"params": grads, **new})))
    (l0, g0), (l1, g1) = results
    np.testing.assert_allclose(l0, l1, rtol=1e-6)
    assert jax.tree.structure(g0) == jax.tree.structure(g1)  # gradients and new BatchNorm statistics
    # each leaf to 3e-4 of its own scale, floored where the batch of 2 at 1x1 leaves only rounding noise;
    # measured worst: 9.6e-5 to 1.0e-4 (a BatchNorm scale gradient, a sum that nearly cancels, added
    # in another order inside the loops), the same with XLA's or our convolution gradients
    floor = 1e-3 * max(float(np.abs(a).max()) for a in jax.tree.leaves(g0["params"]))
    errors = jax.tree.map(lambda a, b: float(np.abs(a - b).max() / max(np.abs(a).max(), floor)), g0, g1)
    assert max(jax.tree.leaves(errors)) < 3e-4, errors


def test_fast_cpu_flags_keep_the_users_choice(monkeypatch):
    from hrnet_flax.runtime import FAST_CPU_FLAGS, use_fast_cpu_flags

    monkeypatch.delenv("XLA_FLAGS", raising=False)
    monkeypatch.setenv("JAX_PLATFORMS", "cuda")  # another backend only: left untouched
    use_fast_cpu_flags()
    assert "XLA_FLAGS" not in os.environ
    monkeypatch.setenv("JAX_PLATFORMS", "cuda,cpu")
    use_fast_cpu_flags()
    assert sorted(os.environ["XLA_FLAGS"].split()) == sorted(f"--{k}={v}" for k, v in FAST_CPU_FLAGS.items())
    assert "--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_REDUCE" in os.environ["XLA_FLAGS"].split()

    mine = ["--xla_force_host_platform_device_count=2", "--xla_cpu_experimental_ynn_fusion_type="]
    monkeypatch.setenv("XLA_FLAGS", " ".join(mine))
    use_fast_cpu_flags()
    flags = os.environ["XLA_FLAGS"].split()
    assert flags[:2] == mine and "--xla_llvm_disable_expensive_passes=true" in flags
    assert [f for f in flags if f.startswith("--xla_cpu_experimental_ynn_fusion_type=")] == mine[1:]


@pytest.mark.slow
def test_scanned_layers_keep_only_their_convolution_outputs(monkeypatch):
    """`model.repeated` stacks only convolution outputs for the backward pass (`SCAN_SAVES`) and
    recomputes BatchNorm and ReLU: less memory than stacking everything, the same gradients."""
    from hrnet_flax.models import hrnet as model_lib

    model = hf.create_model("hrnet_w18_small_v2", num_classes=5, scan=True)  # 2 blocks per branch
    variables = randomised(hf.init_variables(model, jax.random.key(0)))
    images = jax.random.normal(jax.random.key(1), (4, 64, 64, 3))

    def loss_fn(params):
        logits, _ = model.apply(
            {"params": params, "batch_stats": variables["batch_stats"]}, images, train=True, mutable=["batch_stats"]
        )
        return jnp.sum(jax.nn.log_softmax(logits)[:, 0])

    def compiled():  # a new function each time, so JAX traces again under the current policy
        return jax.jit(lambda p: jax.grad(loss_fn)(p)).lower(variables["params"]).compile()

    lean = compiled()
    monkeypatch.setattr(model_lib, "SCAN_SAVES", jax.checkpoint_policies.everything_saveable)
    full = compiled()
    lean_mb, full_mb = (c.memory_analysis().temp_size_in_bytes / 2**20 for c in (lean, full))
    assert lean_mb < 0.8 * full_mb, (lean_mb, full_mb)
    g_lean, g_full = lean(variables["params"]), full(variables["params"])
    scale = max(float(jnp.abs(g).max()) for g in jax.tree.leaves(g_full))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * scale), g_lean, g_full)


def ynn_fusions_with_convolutions(hlo: str) -> int:
    """How many of XLA:CPU's YNNPACK fusions in compiled HLO text contain a convolution."""
    bodies = {}
    for block in hlo.split("\n\n"):
        header = block.strip().split(" ", 1)[0]
        bodies[header.lstrip("%")] = block
    called = [line.split("calls=%", 1)[1].split(",", 1)[0] for line in hlo.splitlines() if '"__ynn_fusion"' in line]
    return sum(" convolution(" in bodies[name] for name in called)


@pytest.mark.slow
def test_inference_head_convolutions_stay_out_of_ynnpack_fusions(monkeypatch):
    """The classifier's global pool is a matrix product (`model.global_average_pool`): as a
    reduction, XLA:CPU's YNNPACK fusion (`FAST_CPU_FLAGS`) took in the head's convolutions."""
    from hrnet_flax.models import hrnet as model_lib

    x = jax.random.normal(jax.random.key(1), (2, 3, 7, 5)) + 2.0
    np.testing.assert_allclose(model_lib.global_average_pool(x), jnp.mean(x, axis=(1, 2)), rtol=1e-6)
    half = x.astype(jnp.bfloat16)  # summed in float32 like jnp.mean, not scaled by a rounded 1/21
    assert model_lib.global_average_pool(half).dtype == jnp.bfloat16
    np.testing.assert_array_equal(model_lib.global_average_pool(half), jnp.mean(half, axis=(1, 2)))
    model = hf.create_model("hrnet_w18_small", num_classes=10, fold_bn=True, scan=True)
    variables = hf.fold_batchnorm(hf.init_variables(model.clone(fold_bn=False), jax.random.key(0)))  # stacked
    images = jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.float32)

    def hlo():  # a new function each time, so JAX traces again with the current pool
        return jax.jit(lambda v, x: model.apply(v, x)).lower(variables, images).compile().as_text()

    assert ynn_fusions_with_convolutions(hlo()) == 0
    monkeypatch.setattr(model_lib, "global_average_pool", lambda y: jnp.mean(y, axis=(1, 2)))
    assert ynn_fusions_with_convolutions(hlo()) > 0  # the check sees the problem it guards against
