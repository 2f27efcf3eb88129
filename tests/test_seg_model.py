"""The segmentation models: PyTorch-exact resizing, the HRNetV2 head, shapes, fields and errors.
Parity of whole models with reference implementations is in test_seg_weights.py."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hrnet_flax as hf
from hrnet_flax.models.initialization import init_variables
from hrnet_flax.models.resize import resize_bilinear, resize_nearest
from hrnet_flax.models.stacking import stack_variables

SIZES = [(20, 28), (3, 4), (5, 7), (9, 13), (1, 1), (10, 3)]


@pytest.mark.parametrize("align_corners", [False, True])
def test_bilinear_resize_is_pytorchs_in_float64(align_corners):
    """Up, down, identity and mixed sizes, both sample grids: exact to float64 rounding (PyTorch runs
    its float64 interpolation in float64)."""
    import torch
    import torch.nn.functional as F

    x = np.random.default_rng(0).normal(size=(2, 5, 7, 3))
    with jax.enable_x64(True):
        for size in SIZES:
            ref = F.interpolate(torch.tensor(x).permute(0, 3, 1, 2), size=size, mode="bilinear", align_corners=align_corners)
            ours = np.asarray(resize_bilinear(jnp.asarray(x), size, align_corners))
            assert ours.dtype == np.float64
            np.testing.assert_allclose(ours, ref.permute(0, 2, 3, 1).numpy(), rtol=0, atol=1e-14, err_msg=str(size))


def test_nearest_resize_is_pytorchs_and_never_interpolates():
    import torch
    import torch.nn.functional as F

    labels = np.random.default_rng(1).integers(0, 19, size=(1, 5, 7, 1)).astype(np.int32)
    for size in SIZES:
        ref = F.interpolate(torch.tensor(labels, dtype=torch.float32).permute(0, 3, 1, 2), size=size, mode="nearest")
        ours = np.asarray(resize_nearest(jnp.asarray(labels), size))
        assert ours.dtype == np.int32
        np.testing.assert_array_equal(ours, ref.permute(0, 2, 3, 1).numpy().astype(np.int32), err_msg=str(size))


def test_resize_refuses_bad_shapes():
    with pytest.raises(ValueError, match="NHWC"):
        resize_bilinear(jnp.zeros((4, 4, 3)), (8, 8))
    with pytest.raises(ValueError, match="positive"):
        resize_bilinear(jnp.zeros((1, 4, 4, 3)), (0, 8))


@pytest.fixture(scope="module")
def small():
    """hrnetv2_w18_small_seg (5 classes), its variables, a 64x96 batch and, compiled once, its
    features and logits."""
    model = hf.create_model("hrnetv2_w18_small_seg", num_classes=5)
    variables = init_variables(model, jax.random.key(0), (1, 64, 96, 3))
    images = jax.random.normal(jax.random.key(1), (2, 64, 96, 3))
    feats = jax.jit(lambda v, x: model.apply(v, x, return_features=True))(variables, images)
    return model, variables, images, feats


def scanned_logits(variables, images, **overrides):
    """The scanned model's logits (it compiles in a fraction of the plain model's time)."""
    model = hf.create_model("hrnetv2_w18_small_seg", num_classes=5, scan=True, **overrides)
    return np.asarray(jax.jit(model.apply)(stack_variables(variables), images))


def test_segmenter_returns_stride_4_logits_for_non_square_images(small):
    model, variables, images, feats = small
    logits = feats["logits"]
    chex.assert_shape(logits, (2, 16, 24, 5))
    assert logits.dtype == jnp.float32 and bool(jnp.isfinite(logits).all())
    assert set(feats) == {"stem", "hrnetv2", "logits"} | {f"branch{b}" for b in range(4)}
    chex.assert_shape(feats["hrnetv2"], (2, 16, 24, 16 + 32 + 64 + 128))
    # the concatenation is the branches resized with the model's own bilinear resize
    np.testing.assert_allclose(feats["hrnetv2"][..., 16:48], resize_bilinear(feats["branch1"], (16, 24)), rtol=1e-5, atol=1e-6)
    only = jax.eval_shape(hf.create_model("hrnetv2_w18_small_seg", features_only=True).apply, variables, images)
    assert set(only) == set(feats) - {"logits"}


def test_segmenter_has_the_official_head_and_no_classification_head(small):
    _, variables, _, _ = small
    params = variables["params"]
    assert params["seg_head"]["conv"]["kernel"].shape == (1, 1, 240, 240)
    assert params["seg_head"]["conv"]["bias"].shape == (240,)  # the official `last_layer.0` has a bias
    assert params["seg_classifier"]["kernel"].shape == (1, 1, 240, 5)
    assert not {"incre0", "downsamp0", "final", "classifier"} & set(params)
    std = float(np.std(params["seg_classifier"]["kernel"]))
    assert 0.008 < std < 0.012  # normal(0, 0.01), mmsegmentation's conv_seg init


def test_scanned_segmenter_equals_the_plain_one(small):
    _, variables, images, feats = small
    np.testing.assert_allclose(scanned_logits(variables, images), feats["logits"], rtol=1e-5, atol=1e-5)


def test_fuse_upsampling_and_align_corners_are_fields_that_change_the_output(small):
    _, variables, images, feats = small
    base = np.asarray(feats["logits"])
    for overrides in ({"align_corners": True}, {"upsample": "nearest"}):
        other = hf.create_model("hrnetv2_w18_small_seg", num_classes=5, **overrides)
        assert getattr(other.config, next(iter(overrides))) == next(iter(overrides.values()))
        assert np.abs(scanned_logits(variables, images, **overrides) - base).max() > 1e-3, overrides


def test_every_width_has_a_segmenter_with_19_classes_by_default():
    for name in hf.list_models("*_seg"):
        model = hf.create_model(name)
        assert model.num_classes == 19 and model.config.head == "segmentation"
        assert (model.config.upsample, model.config.align_corners) == ("bilinear", False)
        backbone = hf.create_model(name.replace("hrnetv2", "hrnet").removesuffix("_seg")).config
        assert backbone.stages == model.config.stages
    assert hf.create_model("hrnet_w18").num_classes == 1000


def test_bad_fields_are_refused():
    with pytest.raises(ValueError, match="unknown head 'detection'"):
        hf.create_model("hrnetv2_w18_seg", head="detection")
    with pytest.raises(ValueError, match="unknown upsample 'cubic'"):
        hf.create_model("hrnetv2_w18_seg", upsample="cubic")
    model = hf.create_model("hrnetv2_w18_small_seg", num_classes=0)
    with pytest.raises(ValueError, match="num_classes > 0"):
        jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))


def test_parameter_counts_match_the_published_table():
    """HRNet-Semantic-Segmentation's README: W48 65.8M, W18-Small-v1 1.5M, W18-Small-v2 3.9M (19 classes;
    the figures are truncated to one decimal: ours are 65.859M, 1.541M, 3.940M)."""
    from hrnet_flax.models import info

    published = {"hrnetv2_w48_seg": 65.8, "hrnetv2_w18_small_seg": 1.5, "hrnetv2_w18_small_v2_seg": 3.9}
    for name, millions in published.items():
        assert millions <= info.count(name, 64).params / 1e6 < millions + 0.1, name
