"""The HRNet modules: variants, shapes, parameter counts, dtypes, BatchNorm modes, features."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hrnet_flax as hf
from hrnet_flax.models import info
from hrnet_flax.models.initialization import abstract_variables
from hrnet_flax.cli import main as cli_main

# PaddleClas's HRNet page (the seed document), "Parameters (M)" column.
SEED_PARAMS_M = {
    "hrnet_w18_c": 21.290,
    "hrnet_w30_c": 37.710,
    "hrnet_w32_c": 41.230,
    "hrnet_w40_c": 57.550,
    "hrnet_w44_c": 67.060,
    "hrnet_w48_c": 77.470,
    "hrnet_w64_c": 128.060,
}
WIDTH = {"hrnet_w18_small": 16, "hrnet_w18_small_v2": 18}

EXPECTED_NAMES = (
    ["hrnet_w18_small", "hrnet_w18_small_v2"]
    + [f"hrnet_w{w}" for w in (18, 30, 32, 40, 44, 48, 64)]
    + [f"hrnet_w{w}_c" for w in (18, 30, 32, 40, 44, 48, 64)]
    + [f"se_hrnet_w{w}_c" for w in (18, 30, 32, 40, 44, 48, 64)]
    + ["hrnet_w18_ssld", "hrnet_w48_ssld"]
)
SEGMENTATION_NAMES = ["hrnetv2_w18_small_seg", "hrnetv2_w18_small_v2_seg"] + [
    f"hrnetv2_w{w}_seg" for w in (18, 30, 32, 40, 44, 48, 64)
]
POSE_NAMES = ["pose_hrnet_w18_small", "pose_hrnet_w18_small_v2"] + [f"pose_hrnet_w{w}" for w in (18, 30, 32, 40, 44, 48, 64)]


# One variant of each family in the fast tier; the other widths repeat its checks (full suite).
FAMILY_FIRSTS = {"hrnet_w18_small", "hrnet_w18_small_v2", "hrnet_w18", "hrnet_w18_c", "se_hrnet_w18_c", "hrnet_w18_ssld"}


def families_first(names):
    return [n if n in FAMILY_FIRSTS else pytest.param(n, marks=pytest.mark.slow) for n in names]


def width_of(name: str) -> int:
    return WIDTH.get(name) or int(name.split("_w")[1].split("_")[0])


def abstract_output_and_variables(model, shape, **kwargs):
    """The output's and the variables' shapes from one trace (`init_with_output`; a full-width
    variant takes about a second per trace)."""
    init = lambda x: model.init_with_output(jax.random.key(0), x, **kwargs)  # noqa: E731
    return jax.eval_shape(init, jax.ShapeDtypeStruct(shape, jnp.float32))


def test_list_models_has_every_variant():
    assert sorted(EXPECTED_NAMES + SEGMENTATION_NAMES + POSE_NAMES) == hf.list_models()
    assert hf.list_models("*_seg") == sorted(SEGMENTATION_NAMES)
    assert hf.list_models("pose_*") == sorted(POSE_NAMES)
    assert hf.list_models("se_*") == sorted(n for n in EXPECTED_NAMES if n.startswith("se_"))


def test_names_are_case_insensitive_and_unknown_names_are_refused():
    assert hf.create_model("HRNet_W18_C").config == hf.create_model("hrnet_w18_c").config
    with pytest.raises(ValueError, match="unknown HRNet variant 'hrnet_w19'.*did you mean"):
        hf.create_model("hrnet_w19")
    with pytest.raises(TypeError, match="unknown option.*'colour'"):
        hf.create_model("hrnet_w18", colour="red")


@pytest.mark.parametrize("name", families_first(EXPECTED_NAMES))
def test_every_variant_builds_with_the_right_shapes(name):
    model = hf.create_model(name, num_classes=7)
    logits, variables = abstract_output_and_variables(model, (2, 224, 224, 3))
    assert set(variables) == {"params", "batch_stats"}
    chex.assert_shape(logits, (2, 7))
    assert logits.dtype == jnp.float32
    params = variables["params"]
    assert params["classifier"]["kernel"].shape == (2048, 7)
    c = width_of(name)
    assert params["transition1_0"]["conv"]["kernel"].shape[-1] == c
    assert params["transition3_3"]["conv"]["kernel"].shape[-1] == 8 * c
    assert ("bias" in params["final"]["conv"]) == (name.startswith("hrnet_w") and not name.endswith(("_c", "_ssld")))
    assert ("se" in params["layer1_0"]) == name.startswith("se_")


@pytest.mark.parametrize("name", sorted(SEED_PARAMS_M))
def test_parameter_counts_match_the_seed_table(name):
    counted = info.count(name).params / 1e6
    assert abs(counted - SEED_PARAMS_M[name]) < 0.01, (name, counted)


def test_info_counts_macs_from_the_model():
    w18 = info.count("hrnet_w18")
    assert w18.params == 21_299_004  # timm's hrnet_w18 (head convs with bias)
    assert 4.2e9 < w18.macs < 4.35e9 and w18.flops == 2 * w18.macs  # 4.28 G MACs (facts sheet)
    # MACs grow with pixels: a 448 input costs 4x (up to the pooled head) and the count is no constant.
    big = info.count("hrnet_w18", size=448)
    assert 3.9 < big.macs / w18.macs < 4.01
    assert info.count("hrnet_w64_c").macs > 6 * w18.macs


def test_info_cli_prints_the_table(capsys):
    assert cli_main(["info", "HRNet_W18_C", "hrnet_w18_small"]) == 0
    out = capsys.readouterr().out
    assert "| hrnet_w18_c | 21.295 | 4.28 | 8.57 |" in out
    assert "hrnet_w18_small" in out and "FLOPs = 2 x MACs" in out


def test_variables_structure():
    model = hf.create_model("hrnet_w18")
    v = abstract_variables(model, (1, 224, 224, 3))
    params, stats = v["params"], v["batch_stats"]
    assert set(params["conv1"]) == {"conv", "bn"}
    assert params["conv1"]["conv"]["kernel"].shape == (3, 3, 3, 64)  # HWIO
    assert set(stats["conv1"]["bn"]) == {"mean", "var"}
    assert set(params["layer1_0"]) == {"conv1", "conv2", "conv3", "downsample"}
    assert "downsample" not in params["layer1_1"]
    module = params["stage4_2"]
    assert module["fuse0_3"]["conv"]["kernel"].shape == (1, 1, 144, 18)
    assert module["fuse3_0_0"]["conv"]["kernel"].shape == (3, 3, 18, 18)
    assert module["fuse3_0_2"]["conv"]["kernel"].shape == (3, 3, 18, 144)
    assert module["branch3_3"]["conv2"]["conv"]["kernel"].shape == (3, 3, 144, 144)
    assert [k for k in params if k.startswith("stage")] == (
        ["stage2_0"] + [f"stage3_{m}" for m in range(4)] + [f"stage4_{m}" for m in range(3)]
    )
    # every BatchNorm has both statistics and both affine parameters
    bn_params = [p for p, _ in jax.tree_util.tree_flatten_with_path(params)[0] if p[-2].key == "bn"]
    bn_stats = [p for p, _ in jax.tree_util.tree_flatten_with_path(stats)[0]]
    assert len(bn_params) == len(bn_stats) > 300


@pytest.fixture(scope="module")
def small():
    model = hf.create_model("hrnet_w18_small", num_classes=10)
    variables = hf.init_variables(model, jax.random.key(0))
    images = jax.random.normal(jax.random.key(1), (4, 64, 64, 3))
    return model, variables, images


@pytest.fixture(scope="module")
def small_apply(small):
    """The small model's jitted inference, compiled once for the tests that share it."""
    return jax.jit(small[0].apply)


def test_init_variables_matches_model_init_in_structure_and_distribution():
    model = hf.create_model("se_hrnet_w18_c", num_classes=5)
    fast = hf.init_variables(model, jax.random.key(0))
    slow_shapes = abstract_variables(model, (1, 32, 32, 3))
    assert jax.tree.structure(fast) == jax.tree.structure(slow_shapes)
    chex.assert_trees_all_equal_shapes_and_dtypes(fast, slow_shapes)
    params = fast["params"]
    kernel = params["stage4_0"]["branch3_0"]["conv1"]["conv"]["kernel"]  # 3x3, 144 -> 144
    assert abs(float(jnp.std(kernel)) - math.sqrt(2 / (9 * 144))) < 0.02 * math.sqrt(2 / (9 * 144))
    dense = params["classifier"]["kernel"]
    assert abs(float(jnp.std(dense)) - math.sqrt(1 / (3 * 2048))) < 0.05 * math.sqrt(1 / (3 * 2048))
    assert float(jnp.abs(params["layer1_0"]["se"]["squeeze"]["bias"]).max()) == 0.0
    assert bool((fast["batch_stats"]["conv1"]["bn"]["var"] == 1).all())
    assert bool((params["conv1"]["bn"]["scale"] == 1).all())


def test_init_variables_and_model_init_draw_from_the_same_distribution():
    model = hf.create_model("hrnet_w18_small", num_classes=10)
    slow = jax.jit(model.init)(jax.random.key(3), jnp.zeros((1, 32, 32, 3)))
    fast = hf.init_variables(model, jax.random.key(3))
    chex.assert_trees_all_equal_shapes_and_dtypes(fast, slow)
    # different keys give different weights; the same key the same weights
    chex.assert_trees_all_equal(fast, hf.init_variables(model, jax.random.key(3)))
    other = hf.init_variables(model, jax.random.key(4))
    assert not np.allclose(other["params"]["conv1"]["conv"]["kernel"], fast["params"]["conv1"]["conv"]["kernel"])
    for path in [("transition3_3", "conv", "kernel"), ("final", "conv", "kernel"), ("classifier", "kernel")]:
        a, b = fast["params"], slow["params"]
        for key in path:
            a, b = a[key], b[key]
        assert abs(float(jnp.std(a)) / float(jnp.std(b)) - 1) < 0.05, path
    chex.assert_trees_all_equal(fast["batch_stats"], slow["batch_stats"])


class ForwardVariantsTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_forward_with_and_without_jit(self):
        model = hf.create_model("hrnet_w18_small", num_classes=10)
        variables = hf.init_variables(model, jax.random.key(0))
        images = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
        logits = self.variant(model.apply)(variables, images)
        chex.assert_shape(logits, (2, 10))
        chex.assert_tree_all_finite(logits)


def test_float32_and_bfloat16_forward(small, small_apply):
    model, variables, images = small
    f32 = small_apply(variables, images)
    bf16_model = hf.create_model("hrnet_w18_small", num_classes=10, dtype=jnp.bfloat16)
    bf16 = jax.jit(bf16_model.apply)(variables, images)
    assert f32.dtype == bf16.dtype == jnp.float32  # logits come back in float32
    chex.assert_tree_all_finite(bf16)
    # bfloat16 keeps ~3 significant digits: same function, loosely
    centred32, centred16 = f32 - f32.mean(0), bf16 - bf16.mean(0)
    corr = np.corrcoef(np.ravel(centred32), np.ravel(centred16))[0, 1]
    assert corr > 0.98, corr
    # bfloat16 parameters trace too, and the logits still come back in float32
    bf16_params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), variables)
    both = hf.create_model("hrnet_w18_small", num_classes=10, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
    assert jax.eval_shape(both.apply, bf16_params, images).dtype == jnp.float32


def test_train_mode_uses_batch_statistics_and_updates_running_averages(small, small_apply):
    model, variables, images = small
    # give the running statistics values far from the batch's, so the two modes must differ
    stats = jax.tree.map(lambda x: x + 3.0, variables["batch_stats"])
    variables = {"params": variables["params"], "batch_stats": stats}
    train_fn = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))
    train_logits, updates = train_fn(variables, images)
    eval_logits = small_apply(variables, images)
    assert not np.allclose(train_logits, eval_logits, atol=1e-3)
    old = stats["conv1"]["bn"]["mean"]
    new = updates["batch_stats"]["conv1"]["bn"]["mean"]
    # new running mean = 0.9 * old + 0.1 * batch mean
    pre = jax.lax.conv_general_dilated(
        images, variables["params"]["conv1"]["conv"]["kernel"], (2, 2), ((1, 1), (1, 1)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    np.testing.assert_allclose(new, 0.9 * old + 0.1 * pre.mean((0, 1, 2)), rtol=1e-4, atol=1e-4)
    # in train mode the output of a sample depends on the rest of the batch; in eval mode it does not
    others = images.at[2:].set(2.0 * jax.random.normal(jax.random.key(2), images[2:].shape))  # same shape: no recompile
    other_train, _ = train_fn(variables, others)
    assert not np.allclose(other_train[:2], train_logits[:2], atol=1e-4)
    np.testing.assert_allclose(small_apply(variables, others)[:2], eval_logits[:2], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", families_first(["hrnet_w18", "hrnet_w32_c", "hrnet_w18_small"]))
@pytest.mark.parametrize("size", [(224, 224), (256, 320), (96, 160), (32, 32)])
def test_feature_strides_and_channels(name, size):
    h, w = size
    feats, _ = abstract_output_and_variables(hf.create_model(name), (2, h, w, 3), return_features=True)
    c = width_of(name)
    chex.assert_shape(feats["stem"], (2, h // 4, w // 4, 64))
    for b in range(4):
        chex.assert_shape(feats[f"branch{b}"], (2, h // 2 ** (b + 2), w // 2 ** (b + 2), c * 2**b))
        chex.assert_shape(feats[f"incre{b}"], (2, h // 2 ** (b + 2), w // 2 ** (b + 2), 128 * 2**b))
    chex.assert_shape(feats["hrnetv2"], (2, h // 4, w // 4, 15 * c))
    chex.assert_shape(feats["pre_logits"], (2, 2048))
    chex.assert_shape(feats["logits"], (2, 1000))


def test_features_only_model_has_no_classification_head(small):
    _, variables, images = small
    backbone = hf.create_model("hrnet_w18_small", features_only=True)
    shapes = abstract_variables(backbone, (1, 64, 64, 3))
    assert not {"classifier", "final", "downsamp0"} & set(shapes["params"])
    # the classifier's variables, minus the head, drive the backbone
    head = {"classifier", "final", "downsamp0", "downsamp1", "downsamp2"}
    sub = {col: {k: v for k, v in tree.items() if k not in head} for col, tree in variables.items()}
    feats = jax.jit(backbone.apply)(sub, images)
    assert set(feats) == {"stem", "hrnetv2"} | {f"branch{b}" for b in range(4)} | {f"incre{b}" for b in range(4)}
    full = jax.jit(lambda v, x: hf.create_model("hrnet_w18_small", num_classes=10).apply(v, x, return_features=True))
    ref = full(variables, images)
    for key, value in feats.items():
        np.testing.assert_allclose(value, ref[key], rtol=1e-5, atol=1e-5, err_msg=key)
    # the HRNetV2 map is branch 0 followed by the upsampled lower branches
    np.testing.assert_allclose(feats["hrnetv2"][..., :16], feats["branch0"], rtol=1e-6)
    up = jax.image.resize(feats["branch1"], feats["branch0"].shape[:3] + (32,), "bilinear")
    np.testing.assert_allclose(feats["hrnetv2"][..., 16:48], up, rtol=1e-5, atol=1e-6)


def test_num_classes_zero_returns_pooled_features(small):
    _, variables, images = small
    model = hf.create_model("hrnet_w18_small", num_classes=0)
    sub = {"params": {k: v for k, v in variables["params"].items() if k != "classifier"},
           "batch_stats": variables["batch_stats"]}
    pooled = jax.jit(model.apply)(sub, images)
    chex.assert_shape(pooled, (4, 2048))


@pytest.mark.parametrize("shape", [(1, 224, 200, 3), (1, 100, 100, 3), (1, 16, 32, 3)])
def test_bad_sizes_are_refused_clearly(shape):
    model = hf.create_model("hrnet_w18_small")
    with pytest.raises(ValueError) as err:
        jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct(shape, jnp.float32))
    message = str(err.value)
    assert f"{shape[1]}x{shape[2]}" in message and "multiples of 32" in message


def test_non_nhwc_input_is_refused():
    model = hf.create_model("hrnet_w18_small")
    with pytest.raises(ValueError, match=r"\(N, H, W, C\).*\(224, 224, 3\)"):
        jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((224, 224, 3), jnp.float32))


def test_upsample_nearest_is_a_repeat():
    from hrnet_flax.models.hrnet import upsample_nearest

    x = jnp.arange(2 * 3 * 4 * 5, dtype=jnp.float32).reshape(2, 3, 4, 5)
    want = np.repeat(np.repeat(np.asarray(x), 4, axis=1), 4, axis=2)
    np.testing.assert_array_equal(upsample_nearest(x, 4), want)


def test_forward_cli_runs(capsys):
    assert cli_main(["forward", "hrnet_w18_small", "--size", "64", "--batch-size", "2"]) == 0
    assert "logits (2, 1000) float32, finite=True" in capsys.readouterr().out
