"""Semantic segmentation: the official HRNetV2 losses, an exact confusion matrix, and test-time inference.

Batches are `{"image": float32 [B, H, W, 3], "label": int32 [B, H, W], "mask": bool [B]}`; label
pixels equal to `ignore_label` count for nothing, nor do rows whose `mask` is False. The model
returns per-pixel logits at a lower resolution (HRNetV2: H/4 x W/4); every loss and metric first
resizes them bilinearly to the label size, as the official code does (`F.interpolate`, the model's
`align_corners` flag).

Losses follow HRNet-Semantic-Segmentation's `lib/core/criterion.py`:
- `CrossEntropy`: PyTorch's `cross_entropy(weight=, ignore_index=)`, i.e. with class weights the
  weight-normalised mean `sum(w_y * nll) / sum(w_y)` over the counted pixels;
- `OhemCrossEntropy`: p = softmax probability of the true class on counted pixels, sorted;
  threshold = max(p_sorted[min(keep, n - 1)], ohem_threshold); the loss is the UNWEIGHTED mean of
  the class-weighted pixel losses `w_y * nll` over the pixels with p < threshold.
Where the official code returns NaN (no pixel counted, or none kept), the loss here is 0.

mIoU is computed as mmsegmentation does: IoU_c = tp / (tp + fp + fn), averaged over the classes
with tp + fp + fn > 0. The official HRNet code divides by all K classes instead (an absent class
counts as IoU 0); the two agree whenever every class occurs in the ground truth or the
predictions, as on the full Cityscapes validation split.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hrnet_flax.models.hrnet import SIZE_MULTIPLE, size_multiple
from hrnet_flax.models.resize import resize_bilinear
from hrnet_flax.tasks.base import Task


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """The image size at `scale`: each side `int(scale * side + 0.5)` (at least 1), the rounding of
    the official `multi_scale_aug`."""
    return max(1, int(scale * height + 0.5)), max(1, int(scale * width + 0.5))


def _pad_bottom_right(x: jax.Array, height: int, width: int) -> jax.Array:
    """NHWC `x` zero-padded at the bottom and right to (height, width)."""
    return jnp.pad(x, ((0, 0), (0, height - x.shape[1]), (0, width - x.shape[2]), (0, 0)))


def _log_resize(log_scores: jax.Array, size: tuple[int, int], align_corners: bool) -> jax.Array:
    """`log(resize_bilinear(exp(log_scores)))`: the official code resizes exp(logits); computed here
    with each image's maximum taken out first (exact algebra, no overflow in float32; a pixel
    whose every class lies more than ~87 below the image's maximum underflows to -inf)."""
    if tuple(log_scores.shape[1:3]) == tuple(size):
        return log_scores
    top = jax.lax.stop_gradient(jnp.max(log_scores, axis=(1, 2, 3), keepdims=True))
    return jnp.log(resize_bilinear(jnp.exp(log_scores - top), size, align_corners)) + top


def _view_logits(model: Any, variables: Any, x: jax.Array, *, flip: bool, align_corners: bool) -> jax.Array:
    """Logits for `x` resized to its size; with `flip`, the mean of those of `x` and of its mirror
    image (mirrored back), as the official `inference` does. One forward pass over 1 or 2 x B images."""
    batch = jnp.concatenate([x, x[:, :, ::-1]]) if flip else x
    logits = model.apply(variables, batch, train=False).astype(jnp.float32)
    logits = resize_bilinear(logits, x.shape[1:3], align_corners)
    if flip:
        n = x.shape[0]
        logits = 0.5 * (logits[:n] + logits[n:, :, ::-1])
    return logits


def window_layout(
    height: int, width: int, window: tuple[int, int], stride: tuple[int, int]
) -> tuple[np.ndarray, tuple[int, int]]:
    """Top-left corners (n, 2) of the sliding windows over an image of (height, width), and the
    padded size they cover, as the official `multi_scale_inference`: an image smaller than the
    window is padded to it; rows = ceil((H - h) / stride_h) + 1 windows per column (likewise
    across), the last ones padded at the border."""
    h = max(height, window[0])
    w = max(width, window[1])
    rows = math.ceil((h - window[0]) / stride[0]) + 1
    cols = math.ceil((w - window[1]) / stride[1]) + 1
    corners = np.array([(r * stride[0], c * stride[1]) for r in range(rows) for c in range(cols)], np.int32)
    return corners, ((rows - 1) * stride[0] + window[0], (cols - 1) * stride[1] + window[1])


def _windowed_log_scores(
    model: Any,
    variables: Any,
    x: jax.Array,
    *,
    window: tuple[int, int],
    stride: tuple[int, int],
    flip: bool,
    align_corners: bool,
) -> jax.Array:
    """log of the count-averaged exp(logits) of overlapping windows, at the size of `x`.

    Windows run one at a time (`lax.scan`, static shapes); their exp-logits are accumulated in log
    space (`logaddexp`), which is the official sum of exp(logits) without overflow."""
    n, height, width, _ = x.shape
    corners, (ph, pw) = window_layout(height, width, window, stride)
    padded = _pad_bottom_right(x, ph, pw)
    count = np.zeros((ph, pw), np.float32)
    for top, left in corners:
        count[top : top + window[0], left : left + window[1]] += 1

    num_classes = jax.eval_shape(
        lambda v, c: model.apply(v, c, train=False), variables, jax.ShapeDtypeStruct((n, *window, x.shape[3]), x.dtype)
    ).shape[-1]

    def body(acc: jax.Array, corner: jax.Array) -> tuple[jax.Array, None]:
        start = (0, corner[0], corner[1], 0)
        crop = jax.lax.dynamic_slice(padded, start, (n, *window, x.shape[3]))
        logits = _view_logits(model, variables, crop, flip=flip, align_corners=align_corners)
        old = jax.lax.dynamic_slice(acc, start, logits.shape)
        return jax.lax.dynamic_update_slice(acc, jnp.logaddexp(old, logits), start), None

    empty = jnp.full((n, ph, pw, num_classes), -jnp.inf, jnp.float32)  # log(0): nothing summed yet
    acc, _ = jax.lax.scan(body, empty, jnp.asarray(corners))
    return (acc - jnp.log(count)[None, :, :, None])[:, :height, :width]


def infer_scores(
    model: Any,
    variables: Any,
    images: jax.Array,
    *,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    window: tuple[int, int] | None = None,
    stride: tuple[int, int] | None = None,
    align_corners: bool = False,
) -> jax.Array:
    """Per-pixel class scores (B, H, W, K) at the size of `images` (B, H, W, 3), the log of the
    official `multi_scale_inference` score map (same argmax; logits themselves with one scale 1.0,
    no flip and no window).

    For each scale s: the images are resized bilinearly (half-pixel sampling, as the official
    cv2.INTER_LINEAR) to `scaled_size`; then either the whole image (zero-padded at the
    bottom/right to multiples of 32 for a model with nearest-neighbour fusion; as it is with
    bilinear fusion, which takes any size), or sliding windows (`window`, `stride`: default 2/3 of the
    window, zero-padded at the border, overlaps averaged) run through the model; with `flip` the
    logits of the mirrored input are averaged in. The logits are resized (bilinear,
    `align_corners`) to the model's input size, cropped to the scaled image, exponentiated,
    resized to (H, W) and summed over scales. Everything is static-shaped and jittable.

    The official code pads windows with the normalised value of a black pixel; here padding is 0
    (the mean colour), so predictions near padded borders may differ slightly.
    """
    if images.ndim != 4:
        raise ValueError(f"infer_scores expects images (B, H, W, C); got shape {tuple(images.shape)}")
    height, width = images.shape[1:3]
    if window is not None and stride is None:
        stride = (int(window[0] * 2 / 3), int(window[1] * 2 / 3))
    total = None
    config = getattr(model, "config", None)  # any other model is padded to multiples of 32
    multiple = SIZE_MULTIPLE if config is None else size_multiple(config)
    for scale in scales:
        size = scaled_size(height, width, scale)
        x = resize_bilinear(images.astype(jnp.float32), size, align_corners=False)
        if window is None:
            padded = _pad_bottom_right(x, _round_up(size[0], multiple), _round_up(size[1], multiple))
            scores = _view_logits(model, variables, padded, flip=flip, align_corners=align_corners)[:, : size[0], : size[1]]
        else:
            scores = _windowed_log_scores(
                model, variables, x, window=tuple(window), stride=tuple(stride), flip=flip, align_corners=align_corners
            )
        scores = _log_resize(scores, (height, width), align_corners)
        total = scores if total is None else jnp.logaddexp(total, scores)
    return total


@functools.lru_cache(maxsize=8)
def _segment_fn(model: Any, scales: tuple[float, ...], flip: bool, window, stride, align_corners: bool):
    @jax.jit
    def run(variables, image):
        scores = infer_scores(
            model, variables, image[None], scales=scales, flip=flip, window=window, stride=stride, align_corners=align_corners
        )
        return jnp.argmax(scores[0], axis=-1).astype(jnp.int32)

    return run


def segment(
    model: Any,
    variables: Any,
    image: np.ndarray,
    *,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    window: tuple[int, int] | None = None,
    stride: tuple[int, int] | None = None,
    align_corners: bool | None = None,
) -> np.ndarray:
    """The label map int32 [H, W] of one normalised float32 image [H, W, 3], any size.

    Test-time settings as `infer_scores` (which pads each scaled image to a size the model takes,
    if it needs to, and crops the prediction back). `align_corners`: None takes the model's (`model.config.align_corners`).
    `variables` may be canonical or stacked.
    """
    from hrnet_flax.models.stacking import model_variables

    image = np.asarray(image, np.float32)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"segment expects one normalised image [H, W, 3]; got shape {image.shape}")
    if align_corners is None:
        config = getattr(model, "config", None)
        if config is None or not hasattr(config, "align_corners"):
            raise ValueError(f"segment: {type(model).__name__} has no config.align_corners; pass align_corners=")
        align_corners = config.align_corners
    _check_test_settings(scales, window, stride)
    run = _segment_fn(
        model,
        tuple(float(s) for s in scales),
        bool(flip),
        None if window is None else tuple(window),
        None if stride is None else tuple(stride),
        bool(align_corners),
    )
    return np.asarray(run(model_variables(model, variables), image))


def _check_test_settings(scales: Sequence[float], window, stride) -> None:
    if not len(scales) or min(scales) <= 0:
        raise ValueError(f"test scales {tuple(scales)} must be positive (at least one)")
    if window is not None:
        if len(window) != 2 or min(window) <= 0 or window[0] % SIZE_MULTIPLE or window[1] % SIZE_MULTIPLE:
            raise ValueError(f"sliding window {tuple(window)} must be (H, W), positive multiples of {SIZE_MULTIPLE}")
        if stride is not None and (len(stride) != 2 or not (0 < stride[0] <= window[0] and 0 < stride[1] <= window[1])):
            raise ValueError(f"sliding-window stride {tuple(stride)} must be (H, W) with 0 < stride <= window {tuple(window)}")
    elif stride is not None:
        raise ValueError(f"a sliding-window stride {tuple(stride)} was given without a window")


def iou_metrics(confusion: np.ndarray) -> dict[str, Any]:
    """mIoU (%), per-class IoU (%, None for classes absent from truth and prediction), pixel
    accuracy (%) and mean class accuracy (%, over classes present in the truth) of a confusion
    matrix (rows truth, columns prediction)."""
    confusion = np.asarray(confusion, np.int64)
    tp = np.diag(confusion).astype(np.float64)
    truth = confusion.sum(1).astype(np.float64)
    union = truth + confusion.sum(0) - tp
    iou = np.divide(tp, union, out=np.full_like(tp, np.nan), where=union > 0)
    recall = np.divide(tp, truth, out=np.full_like(tp, np.nan), where=truth > 0)
    pixels = truth.sum()
    return {
        "miou": 100.0 * float(np.nanmean(iou)) if (union > 0).any() else 0.0,
        "iou": [None if np.isnan(v) else 100.0 * float(v) for v in iou],
        "pixel_accuracy": 100.0 * float(tp.sum() / pixels) if pixels else 0.0,
        "mean_accuracy": 100.0 * float(np.nanmean(recall)) if (truth > 0).any() else 0.0,
    }


@dataclasses.dataclass(frozen=True)
class Segmentation(Task):
    """Per-pixel classification into `num_classes`; the model returns logits (B, h, w, K).

    `class_weights`, `ohem*` and `align_corners` shape the training loss; `scales`, `flip`,
    `window` and `stride` the test-time inference (`infer`) that evaluation runs.
    """

    num_classes: int
    ignore_label: int = 255
    class_weights: tuple[float, ...] | None = None
    ohem: bool = False
    ohem_threshold: float = 0.9
    ohem_keep: int = 131072
    align_corners: bool = False
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    window: tuple[int, int] | None = None
    stride: tuple[int, int] | None = None
    name = "segmentation"
    main_metric = "miou"

    def __post_init__(self):
        for key in ("class_weights", "scales", "window", "stride"):  # hashable, for jit caches
            value = getattr(self, key)
            if value is not None:
                object.__setattr__(self, key, tuple(value))
        if self.num_classes <= 0:
            raise ValueError(f"Segmentation: num_classes={self.num_classes} must be positive")
        if 0 <= self.ignore_label < self.num_classes:
            raise ValueError(f"Segmentation: ignore_label={self.ignore_label} is a class index ({self.num_classes} classes)")
        if self.class_weights is not None:
            if len(self.class_weights) != self.num_classes:
                raise ValueError(f"Segmentation: {len(self.class_weights)} class_weights for {self.num_classes} classes")
            if min(self.class_weights) < 0:
                raise ValueError(f"Segmentation: class_weights {self.class_weights} must be non-negative")
        if self.ohem_keep < 1:
            raise ValueError(f"Segmentation: ohem_keep={self.ohem_keep} must be at least 1")
        if not 0.0 < self.ohem_threshold <= 1.0:
            raise ValueError(f"Segmentation: ohem_threshold={self.ohem_threshold} must be in (0, 1]")
        _check_test_settings(self.scales, self.window, self.stride)

    @classmethod
    def from_config(cls, config: Any) -> Segmentation:
        """From a `TrainConfig`; `align_corners` from `model_overrides`, else the model's own."""
        align = config.model_overrides.get("align_corners")
        if align is None:
            from hrnet_flax.models.registry import get_config

            align = get_config(config.model).align_corners
        return cls(
            num_classes=config.num_classes,
            ignore_label=config.ignore_label,
            class_weights=None if config.class_weights is None else tuple(config.class_weights),
            ohem=config.ohem,
            ohem_threshold=config.ohem_threshold,
            ohem_keep=config.ohem_keep,
            align_corners=bool(align),
            scales=tuple(config.eval_scales),
            flip=config.eval_flip,
            window=None if config.eval_window is None else tuple(config.eval_window),
            stride=None if config.eval_stride is None else tuple(config.eval_stride),
        )

    # --- on the device -------------------------------------------------------------------------

    def _at_label_size(self, outputs: jax.Array, labels: jax.Array) -> jax.Array:
        return resize_bilinear(outputs.astype(jnp.float32), labels.shape[1:3], self.align_corners)

    def _counted(self, batch: Mapping[str, jax.Array]) -> jax.Array:
        """Pixels that count: a class label (not the ignore label) in an unmasked row."""
        labels = batch["label"]
        in_range = (labels >= 0) & (labels < self.num_classes) & (labels != self.ignore_label)
        return in_range & batch["mask"][:, None, None]

    def loss(self, outputs, batch):
        """Cross-entropy (or OHEM cross-entropy) of the logits resized to the label size; metrics:
        the pixel accuracy of the counted pixels."""
        labels = batch["label"]
        logits = self._at_label_size(outputs, labels)
        counted = self._counted(batch)
        target = jnp.where(counted, labels, 0)
        nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), target[..., None], axis=-1)[..., 0]
        weight = jnp.ones_like(nll) if self.class_weights is None else jnp.asarray(self.class_weights, jnp.float32)[target]
        weighted = weight * nll
        if self.ohem:
            kept = counted & self._ohem_kept(nll, counted)
            n = jnp.sum(kept)
            loss = jnp.sum(jnp.where(kept, weighted, 0.0)) / jnp.maximum(n, 1)
        else:
            total_weight = jnp.sum(jnp.where(counted, weight, 0.0))
            loss = jnp.sum(jnp.where(counted, weighted, 0.0)) / jnp.where(total_weight > 0, total_weight, 1.0)
        n_counted = jnp.maximum(jnp.sum(counted), 1)
        accuracy = jnp.sum(counted & (jnp.argmax(logits, -1) == labels)) / n_counted
        return loss, {"pixel_accuracy": accuracy}

    def _ohem_kept(self, nll: jax.Array, counted: jax.Array) -> jax.Array:
        """Pixels whose true-class probability is below max(k-th smallest, ohem_threshold), with
        k = min(ohem_keep, counted - 1) (0-based), as the official `OhemCrossEntropy`."""
        prob = jax.lax.stop_gradient(jnp.exp(-nll))
        flat = jnp.where(counted, prob, jnp.inf).reshape(-1)
        smallest = -jax.lax.top_k(-flat, min(self.ohem_keep + 1, flat.size))[0]  # ascending
        k = jnp.clip(jnp.minimum(self.ohem_keep, jnp.sum(counted) - 1), 0, smallest.size - 1)
        threshold = jnp.maximum(smallest[k], self.ohem_threshold)
        return prob < threshold

    def infer(self, model, variables, images):
        """Scores (B, H, W, K) at the input size with this task's test-time settings (`infer_scores`)."""
        return infer_scores(
            model,
            variables,
            images,
            scales=self.scales,
            flip=self.flip,
            window=self.window,
            stride=self.stride,
            align_corners=self.align_corners,
        )

    def eval_sums(self, outputs, batch):
        """The K x K confusion matrix (rows truth, columns argmax of the scores resized to the label
        size) over the counted pixels, the image count, the summed cross-entropy of the scores'
        softmax over those pixels, and the count of label pixels neither a class nor ignored."""
        labels = batch["label"]
        k = self.num_classes
        scores = self._at_label_size(outputs, labels)
        counted = self._counted(batch)
        predicted = jnp.argmax(scores, -1)
        index = jnp.where(counted, labels * k + predicted, k * k).reshape(-1)
        confusion = jnp.bincount(index, length=k * k + 1)[: k * k].reshape(k, k).astype(jnp.int32)
        target = jnp.where(counted, labels, 0)
        nll = -jnp.take_along_axis(jax.nn.log_softmax(scores), target[..., None], axis=-1)[..., 0]
        stray = batch["mask"][:, None, None] & (labels != self.ignore_label) & ~counted
        return {
            "confusion": confusion,
            "count": jnp.sum(batch["mask"], dtype=jnp.int32),
            "loss_sum": jnp.sum(jnp.where(counted, nll, 0.0)),
            "bad_labels": jnp.sum(stray, dtype=jnp.int32),
        }

    # --- on the host ---------------------------------------------------------------------------

    def summarize(self, sums: Mapping[str, Any], context: Any = None) -> dict[str, Any]:
        """`iou_metrics` of the summed confusion matrix, the image count and the mean pixel loss."""
        bad = int(sums.get("bad_labels", 0))
        if bad:
            raise ValueError(
                f"{bad} label pixels are neither a class in [0, {self.num_classes}) nor the ignore label "
                f"{self.ignore_label}: check num_classes and ignore_label against the dataset"
            )
        confusion = np.asarray(sums["confusion"], np.int64)
        pixels = int(confusion.sum())
        return {
            **iou_metrics(confusion),
            "count": int(sums["count"]),
            "loss": float(sums["loss_sum"]) / max(pixels, 1),
        }

    def describe(self, metrics: Mapping[str, Any]) -> str:
        return f"mIoU {metrics['miou']:.2f}%, pixel acc {metrics['pixel_accuracy']:.1f}%"

    # --- data ----------------------------------------------------------------------------------

    def resolve(self, config: Any) -> Any:
        """Checks `num_classes` against the dataset's; counts `train_examples` when it is None."""
        if config.dataset == "canvases":
            from hrnet_flax.data import canvases

            _canvas_size(config)
            classes = canvases.NUM_CLASSES
            count = lambda: canvases.split_size("train")  # noqa: E731
        else:
            source = _source(config)
            classes = source.num_classes
            count = lambda: source.num_examples("train")  # noqa: E731
        if config.num_classes != classes:
            raise ValueError(f"config.num_classes={config.num_classes} but the dataset {config.dataset} has {classes} classes")
        if config.train_examples is not None:
            return config
        return dataclasses.replace(config, train_examples=count())

    def datasets(self, config, *, train_batch, eval_batch, start_step):
        if config.dataset == "canvases":
            from hrnet_flax.data import canvases

            size = _canvas_size(config)
            train = canvases.train_dataset(
                batch_size_per_process=train_batch, image_size=size, seed=config.seed, start_step=start_step
            )
            return train, lambda: canvases.eval_dataset(batch_size_per_process=eval_batch, image_size=size)
        from hrnet_flax.data import segmentation as seg_data

        source = _source(config)
        train = seg_data.train_dataset(
            source,
            batch_size_per_process=train_batch,
            crop_size=tuple(config.crop_size),
            base_size=config.base_size,
            scale_range=tuple(config.scale_range),
            ignore_label=config.ignore_label,
            seed=config.seed,
            start_step=start_step,
        )
        return train, lambda: seg_data.eval_dataset(
            source, batch_size_per_process=eval_batch, ignore_label=config.ignore_label
        )


def _source(config: Any) -> Any:
    """The segmentation source of `config.dataset` (a folder without classes.txt takes num_classes)."""
    from hrnet_flax.data import segmentation as seg_data

    return seg_data.segmentation_source(config.dataset, manual_dir=config.manual_dir, num_classes=config.num_classes)


def _canvas_size(config: Any) -> int:
    """The side of the square demo canvases: `config.crop_size` (S, S)."""
    height, width = config.crop_size
    if height != width:
        raise ValueError(f"config.crop_size={tuple(config.crop_size)}: the canvases dataset is square, use (S, S)")
    return int(height)
