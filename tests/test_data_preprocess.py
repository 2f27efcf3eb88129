"""Evaluation presets against independent references (OpenCV for PaddleClas, timm's own
transform for timm), decoding of every image kind, and the random-resized-crop sampler."""

import cv2
import numpy as np
import pytest
import timm.data
from data_support import MEAN, STD, encode, photo
from PIL import Image

from hrnet_flax.data import preprocess
from hrnet_flax.data.preprocess import EvalSpec, decode_rgb, eval_image, eval_spec, random_crop_window, tf, train_image

SHAPES = [(97, 130), (131, 75), (40, 50), (73, 73)]


def _levels(ours: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Absolute difference in uint8 levels of two normalised images."""
    return np.abs(ours - ref) * 255.0 * STD


@pytest.mark.parametrize("shape", SHAPES)
def test_paddle_style_matches_opencv(shape):
    h, w = shape
    img = photo(np.random.default_rng(h * w), h, w)
    ours = eval_image(tf().constant(img), EvalSpec(size=64, crop_pct=None, resize_short=73, style="paddle")).numpy()
    scale = 73 / min(h, w)
    nh, nw = int(round(h * scale)), int(round(w * scale))
    resized = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
    top, left = (nh - 64) // 2, (nw - 64) // 2
    ref = (resized[top : top + 64, left : left + 64] / 255.0 - MEAN) / STD
    d = _levels(ours, ref)
    assert d.max() <= 1.01 and d.mean() < 0.3, (d.max(), d.mean())


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("crop_pct,interpolation", [(0.875, "bilinear"), (0.95, "bicubic"), (1.0, "bilinear")])
def test_timm_style_matches_timm_transform(shape, crop_pct, interpolation):
    h, w = shape
    img = photo(np.random.default_rng(h + w), h, w)
    ours = eval_image(tf().constant(img), EvalSpec(size=64, crop_pct=crop_pct, interpolation=interpolation)).numpy()
    transform = timm.data.create_transform(
        input_size=(3, 64, 64), crop_pct=crop_pct, interpolation=interpolation, is_training=False
    )
    ref = transform(Image.fromarray(img)).permute(1, 2, 0).numpy()
    d = _levels(ours, ref)
    assert d.max() <= 3.01 and d.mean() < 0.3, (d.max(), d.mean())


def test_presets_and_registry_specs():
    from hrnet_flax.weights.pretrained import get_pretrained

    assert preprocess.PRESETS["paddle"].short_side == 256 and preprocess.PRESETS["paddle"].style == "paddle"
    assert eval_spec("timm").short_side == 256 and eval_spec("timm_095").short_side == 235  # floor(224/0.95)
    paddle = eval_spec(get_pretrained("hrnet_w18_c.paddle_in1k"))
    assert (paddle.style, paddle.resize_short, paddle.size) == ("paddle", 256, 224)
    aug = eval_spec(get_pretrained("hrnet_w18.ms_aug_in1k"))
    assert (aug.style, aug.short_side, aug.interpolation) == ("timm", 235, "bilinear")
    ssld = get_pretrained("hrnet_w18_ssld.paddle_in1k")
    assert eval_spec(ssld.test_eval).short_side == 288
    # any resolution: the crop fraction is kept
    assert eval_spec("timm", size=288).short_side == int(288 / 0.875)
    assert eval_spec("paddle", size=320).resize_short == round(320 * 256 / 224)
    with pytest.raises(ValueError, match="unknown preprocessing preset 'nope'"):
        eval_spec("nope")
    with pytest.raises(ValueError, match="interpolation"):
        EvalSpec(interpolation="nearest")
    with pytest.raises(TypeError, match="cannot make an evaluation spec from dict"):
        eval_spec({"size": 224})


@pytest.mark.parametrize("fmt,mode", [("JPEG", None), ("JPEG", "L"), ("JPEG", "CMYK"), ("PNG", "RGBA"), ("PNG", "P"), ("BMP", None)])
def test_decode_any_kind_to_rgb_like_pil(fmt, mode):
    rng = np.random.default_rng(3)
    img = photo(rng, 37, 53)
    if mode == "RGBA":
        img = np.dstack([img, rng.integers(0, 256, img.shape[:2], np.uint8)])
    data = encode(img, fmt, mode)
    ours = decode_rgb(tf().constant(data)).numpy()
    with Image.open(__import__("io").BytesIO(data)) as im:
        ref = np.asarray(im.convert("RGB"))
    assert ours.shape == (37, 53, 3) and ours.dtype == np.uint8
    assert np.abs(ours.astype(int) - ref).max() <= 1
    if mode == "L":
        assert (ours[..., 0] == ours[..., 1]).all() and (ours[..., 1] == ours[..., 2]).all()
    if mode == "RGBA":
        assert (ours == img[..., :3]).all()


def test_corrupt_bytes_raise():
    t = tf()
    with pytest.raises(t.errors.InvalidArgumentError):
        decode_rgb(t.constant(b"\xff\xd8\xff\xe0 not a jpeg"))


def test_random_crop_window_statistics():
    windows = np.stack([random_crop_window(120, 200, np.array([5, i])).numpy() for i in range(300)])
    top, left, h, w = windows.T
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 120).all() and (left + w <= 200).all()
    area = h * w / (120 * 200)
    assert area.min() >= 0.075 and area.max() <= 1.0 and area.std() > 0.15
    ratio = w / h
    assert ratio.min() >= 0.74 and ratio.max() <= 1.35
    assert len({tuple(x) for x in windows}) > 250  # they vary with the seed
    again = random_crop_window(120, 200, np.array([5, 7])).numpy()
    assert (again == windows[7]).all()  # stateless: same seed, same window
    # a very wide image: no draw fits, so a center crop clamped to ratio 4/3
    top, left, h, w = random_crop_window(4, 400, np.array([0, 0]), scale=(0.9, 1.0)).numpy()
    assert (h, w) == (4, round(4 * 4 / 3)) and left == (400 - w) // 2


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_train_image_deterministic_and_normalised(fmt):
    data = tf().constant(encode(photo(np.random.default_rng(9), 70, 90), fmt))
    a = train_image(data, np.array([1, 2]), 32).numpy()
    b = train_image(data, np.array([1, 2]), 32).numpy()
    c = train_image(data, np.array([1, 3]), 32).numpy()
    assert a.shape == (32, 32, 3) and a.dtype == np.float32
    assert (a == b).all() and not np.allclose(a, c)
    assert -2.2 < a.min() and a.max() < 2.7  # normalised range of [0, 255]


def test_fused_jpeg_decode_crop_matches_decode_then_crop():
    t = tf()
    img = photo(np.random.default_rng(4), 83, 121)
    data = t.constant(encode(img, "JPEG"))
    seed = np.array([11, 12])
    ours = train_image(data, seed, 32, flip=False).numpy()
    full = decode_rgb(data)
    top, left, h, w = random_crop_window(83, 121, t.random.experimental.stateless_split(seed, 2)[0]).numpy()
    crop = t.cast(full[top : top + h, left : left + w], t.float32)
    ref = t.clip_by_value(t.round(t.image.resize(crop, [32, 32], method="bilinear")), 0, 255).numpy()
    d = _levels(ours, (ref / 255.0 - MEAN) / STD)
    assert d.max() <= 2.01 and d.mean() < 0.2
