"""Image preprocessing in TensorFlow: decoding, evaluation presets, training augmentation.

Evaluation follows how each published weight was measured (`EvalSpec`):

- style `paddle` (PaddleClas / OpenCV): short side to `resize_short` with both sides
  `round(side * resize_short / short)`, plain bilinear (cv2.INTER_LINEAR, no antialiasing),
  center crop at offset `(W - size) // 2`.
- style `timm` (timm / torchvision on PIL): short side to `floor(size / crop_pct)` (or
  `resize_short`), long side `int(short_new * long / short)`, antialiased bilinear or bicubic
  (PIL), center crop at offset `round((W - size) / 2)`.

Both references resize uint8 images, so the resized image is rounded to uint8 before the crop.
Then x / 255, (x - mean) / std, float32 HWC RGB.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = ("bilinear", "bicubic")


_TF: Any = None


def tf():
    """TensorFlow, imported quietly and kept off the GPU (JAX owns the accelerators)."""
    global _TF
    if _TF is None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        _load_triton_first()
        import tensorflow

        try:
            tensorflow.config.set_visible_devices([], "GPU")
        except RuntimeError:  # already initialised elsewhere: leave it
            pass
        _TF = tensorflow
    return _TF


def _load_triton_first() -> None:
    """Triton (installed with CUDA builds of PyTorch) segfaults when its LLVM library loads after
    TensorFlow's (seen with tensorflow-cpu 2.21 + triton 3.8); loaded first, both work."""
    import importlib.util
    import sys

    if "tensorflow" in sys.modules or importlib.util.find_spec("triton") is None:
        return
    try:
        import triton  # noqa: F401
    except Exception:  # a broken triton install only matters to PyTorch
        pass


def graph_fn(fn):
    """`fn` for `tf.data.Dataset.map` without AutoGraph (our functions use tf.cond explicitly)."""
    return tf().autograph.experimental.do_not_convert(fn)


@dataclasses.dataclass(frozen=True)
class EvalSpec:
    """Evaluation preprocessing: resize the short side, center crop `size`, normalise."""

    size: int = 224
    crop_pct: float | None = 0.875
    resize_short: int | None = None
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    style: str = "timm"

    def __post_init__(self) -> None:
        if self.style not in ("paddle", "timm"):
            raise ValueError(f"EvalSpec.style must be 'paddle' or 'timm', got {self.style!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"EvalSpec.interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}")
        if self.resize_short is None and not self.crop_pct:
            raise ValueError("EvalSpec needs resize_short or crop_pct")
        if self.size <= 0 or (self.resize_short is not None and self.resize_short < self.size):
            raise ValueError(f"EvalSpec: bad size {self.size} / resize_short {self.resize_short}")

    @property
    def short_side(self) -> int:
        """Short side length after the resize (before the center crop)."""
        if self.resize_short is not None:
            return int(self.resize_short)
        return int(math.floor(self.size / self.crop_pct))


PRESETS: dict[str, EvalSpec] = {
    "paddle": EvalSpec(size=224, crop_pct=None, resize_short=256, style="paddle"),
    "timm": EvalSpec(size=224, crop_pct=0.875),
    "timm_095": EvalSpec(size=224, crop_pct=0.95),
    "timm_bicubic": EvalSpec(size=224, crop_pct=0.875, interpolation="bicubic"),
    "timm_ssld_288": EvalSpec(size=288, crop_pct=1.0),
}


def eval_spec(spec: Any = "timm", *, size: int | None = None) -> EvalSpec:
    """An `EvalSpec` from a preset name (`PRESETS`), an `EvalSpec`, or a pretrained-registry entry
    (its `eval`).

    `size` changes the crop size, keeping the preset's crop fraction (any resolution).
    """
    if isinstance(spec, str):
        if spec not in PRESETS:
            raise ValueError(f"unknown preprocessing preset {spec!r} (presets: {', '.join(PRESETS)})")
        out = PRESETS[spec]
    else:
        out = getattr(spec, "eval", spec)  # a PretrainedWeight carries its EvalSpec as `eval`
        if not isinstance(out, EvalSpec):
            raise TypeError(
                f"cannot make an evaluation spec from {type(spec).__name__}: {spec!r} "
                "(give a preset name, an EvalSpec or a pretrained-registry entry)"
            )
    if size is not None and size != out.size:
        fraction = out.size / out.short_side
        out = dataclasses.replace(out, size=size, crop_pct=fraction, resize_short=None if out.style == "timm" else int(round(size / fraction)))
    return out


def decode_rgb(encoded):
    """Encoded JPEG/PNG/GIF/BMP bytes -> uint8 [H, W, 3] RGB (grey, CMYK and alpha handled).

    JPEGs use the accurate integer IDCT, like PIL and OpenCV.
    """
    t = tf()
    image = t.cond(
        t.io.is_jpeg(encoded),
        lambda: t.io.decode_jpeg(encoded, channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: t.io.decode_image(encoded, channels=3, expand_animations=False, dtype=t.uint8),
    )
    image.set_shape([None, None, 3])
    return image


def _resize_uint8(image, height, width, interpolation: str, antialias: bool):
    t = tf()
    out = t.image.resize(t.cast(image, t.float32), t.stack([height, width]), method=interpolation, antialias=antialias)
    return t.clip_by_value(t.round(out), 0.0, 255.0)


def normalize(image, mean, std):
    """uint8-valued RGB -> (x / 255 - mean) / std, float32."""
    t = tf()
    image = t.cast(image, t.float32) / 255.0
    return (image - t.constant(mean, t.float32)) / t.constant(std, t.float32)


def eval_image(image, spec: EvalSpec):
    """uint8 [H, W, 3] -> float32 [size, size, 3]: resize, center crop, normalise (see module doc)."""
    t = tf()
    shape = t.shape(image)
    h, w = t.cast(shape[0], t.float64), t.cast(shape[1], t.float64)
    short = t.minimum(h, w)
    target = t.constant(spec.short_side, t.float64)
    if spec.style == "paddle":
        scale = target / short
        new_h, new_w = t.round(h * scale), t.round(w * scale)  # Python's round: half to even, like tf.round
        antialias = False
    else:
        new_h = t.where(h <= w, target, t.floor(target * h / w))
        new_w = t.where(h <= w, t.floor(target * w / h), target)
        antialias = True
    new_h, new_w = t.cast(new_h, t.int32), t.cast(new_w, t.int32)
    resized = _resize_uint8(image, new_h, new_w, spec.interpolation, antialias)
    size = spec.size
    if spec.style == "paddle":
        top, left = (new_h - size) // 2, (new_w - size) // 2
    else:
        top = t.cast(t.round(t.cast(new_h - size, t.float64) / 2.0), t.int32)
        left = t.cast(t.round(t.cast(new_w - size, t.float64) / 2.0), t.int32)
    t.debugging.assert_greater_equal(t.minimum(new_h, new_w), size, message="resized image smaller than the crop")
    crop = resized[top : top + size, left : left + size]
    crop = t.ensure_shape(crop, [size, size, 3])
    return normalize(crop, spec.mean, spec.std)


def random_crop_window(height, width, seed, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), attempts: int = 10):
    """A random-resized-crop window [top, left, h, w] (int32) for an image of `height` x `width`.

    Like torchvision's RandomResizedCrop: area fraction uniform in `scale`, aspect ratio
    log-uniform in `ratio`, the first of `attempts` draws that fits; else a center crop
    with the aspect ratio clamped to `ratio`. Stateless: the same `seed` gives the same window.
    """
    t = tf()
    h, w = t.cast(height, t.float32), t.cast(width, t.float32)
    draws = t.random.stateless_uniform([4, attempts], seed=seed)
    area = h * w * (scale[0] + (scale[1] - scale[0]) * draws[0])
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * draws[1]
    aspect = t.exp(log_r)
    cw = t.round(t.sqrt(area * aspect))
    ch = t.round(t.sqrt(area / aspect))
    ok = (cw > 0) & (ch > 0) & (cw <= w) & (ch <= h)
    first = t.argmax(t.cast(ok, t.int32))
    found = t.reduce_any(ok)
    cw_i, ch_i = t.gather(cw, first), t.gather(ch, first)
    top_i = t.floor(t.gather(draws[2], first) * (h - ch_i + 1))
    left_i = t.floor(t.gather(draws[3], first) * (w - cw_i + 1))
    # fallback: center crop with the aspect ratio clamped to `ratio`
    in_ratio = w / h
    fw = t.where(in_ratio < ratio[0], w, t.where(in_ratio > ratio[1], t.round(h * ratio[1]), w))
    fh = t.where(in_ratio < ratio[0], t.round(w / ratio[0]), h)
    ch_f, cw_f = t.where(found, ch_i, fh), t.where(found, cw_i, fw)
    top_f = t.where(found, top_i, t.floor((h - fh) / 2))
    left_f = t.where(found, left_i, t.floor((w - fw) / 2))
    return t.cast(t.stack([top_f, left_f, ch_f, cw_f]), t.int32)


def train_image(encoded, seed, image_size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD, flip: bool = True):
    """Encoded bytes -> float32 [image_size, image_size, 3]: random resized crop (decoded fused
    with the crop for JPEGs), bilinear resize, random horizontal flip, normalise."""
    t = tf()
    seeds = t.random.experimental.stateless_split(seed, 2)

    def jpeg():
        shape = t.io.extract_jpeg_shape(encoded)
        window = random_crop_window(shape[0], shape[1], seeds[0])
        crop = t.io.decode_and_crop_jpeg(encoded, window, channels=3, dct_method="INTEGER_ACCURATE")
        crop.set_shape([None, None, 3])
        return crop

    def other():
        image = decode_rgb(encoded)
        shape = t.shape(image)
        top, left, h, w = t.unstack(random_crop_window(shape[0], shape[1], seeds[0]))
        return image[top : top + h, left : left + w]

    crop = t.cond(t.io.is_jpeg(encoded), jpeg, other)
    image = _resize_uint8(crop, image_size, image_size, "bilinear", antialias=False)
    if flip:
        do_flip = t.random.stateless_uniform([], seed=seeds[1]) < 0.5
        image = t.cond(do_flip, lambda: t.reverse(image, axis=[1]), lambda: image)
    image = t.ensure_shape(image, [image_size, image_size, 3])
    return normalize(image, mean, std)
