"""Predictions for image files: top-k classes (evaluation preprocessing, softmax), label maps and
coloured overlays of a segmentation model, or the keypoints of people in given boxes (top-down pose
estimation) drawn as skeletons."""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from hrnet_flax.data.coco import COCO_FLIP_PAIRS, COCO_JOINTS, COCO_SKELETON
from hrnet_flax.data.images import UnreadableImageError, load_rgb
from hrnet_flax.data.sources import imagenet_class_names

__all__ = [
    "UnreadableImageError",
    "draw_poses",
    "estimate_poses",
    "joint_names",
    "load_rgb",
    "pose_files",
    "pose_options",
    "predict",
    "preprocess",
    "segment_files",
    "top_k",
]


def preprocess(images: Sequence[np.ndarray], spec: Any = "timm", *, size: int | None = None) -> np.ndarray:
    """float32 [N, S, S, 3]: the same evaluation preprocessing as `data.eval_dataset`."""
    from hrnet_flax.data.preprocess import eval_image, eval_spec, tf

    spec = eval_spec(spec, size=size)
    t = tf()
    return np.stack([eval_image(t.constant(image), spec).numpy() for image in images])


def top_k(logits: np.ndarray, k: int, names: Sequence[str] | None = None) -> list[list[tuple[str, float]]]:
    """Per row: the k most probable (class name, probability) pairs, best first."""
    logits = np.asarray(logits, np.float64)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    k = min(k, probs.shape[-1])
    order = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
    label = (lambda i: names[i]) if names is not None else (lambda i: f"class {i}")
    return [[(label(int(i)), float(p[i])) for i in row] for p, row in zip(probs, order)]


def predict(
    model: Any,
    variables: Any,
    paths: Sequence[str | os.PathLike],
    *,
    spec: Any = "timm",
    size: int | None = None,
    k: int = 5,
    names: Sequence[str] | None = None,
) -> list[list[tuple[str, float]]]:
    """Top-k (class name, probability) for each image file; an unreadable file raises
    `UnreadableImageError` naming it before any forward pass."""
    import jax

    images = [load_rgb(p) for p in paths]
    batch = preprocess(images, spec, size=size)
    logits = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, batch)
    num_classes = logits.shape[-1]
    if names is None and num_classes == 1000:
        names = imagenet_class_names()
    if names is not None and len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for a model with {num_classes} classes")
    return top_k(np.asarray(logits), k, names)


# ------------------------------------------------------------------ segmentation

# Cityscapes' own colours for its 19 training classes (road, sidewalk, ..., bicycle).
CITYSCAPES_PALETTE = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
)  # fmt: skip


def palette(num_classes: int) -> np.ndarray:
    """uint8 [256, 3] class colours: Cityscapes' for 19 classes, else PASCAL VOC's bit-interleaved
    palette (class 0 black); index 255 (the ignore label) is white."""
    colours = np.zeros((256, 3), np.uint8)
    if num_classes == len(CITYSCAPES_PALETTE):
        colours[: len(CITYSCAPES_PALETTE)] = CITYSCAPES_PALETTE
    else:
        for c in range(256):
            value, rgb = c, [0, 0, 0]
            for bit in range(8):
                for channel in range(3):
                    rgb[channel] |= ((value >> channel) & 1) << (7 - bit)
                value >>= 3
            colours[c] = rgb
    colours[255] = 255
    return colours


def _check_alpha(alpha: float) -> None:
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"overlay alpha must be in [0, 1]; got {alpha}")


def overlay(image: np.ndarray, labels: np.ndarray, num_classes: int, alpha: float = 0.5) -> np.ndarray:
    """uint8 RGB: `image` blended with the class colours of `labels` (opacity `alpha`)."""
    _check_alpha(alpha)
    colours = palette(num_classes)[labels].astype(np.float32)
    return np.clip(image.astype(np.float32) * (1 - alpha) + colours * alpha + 0.5, 0, 255).astype(np.uint8)


def _label_paths(path: str, out: str | None, many: bool) -> tuple[str, str]:
    stem = os.path.splitext(os.path.basename(path))[0]
    if out is None:
        labels = os.path.join(os.path.dirname(os.path.abspath(path)), f"{stem}_labels.png")
    elif many or os.path.isdir(out):
        os.makedirs(out, exist_ok=True)
        labels = os.path.join(out, f"{stem}_labels.png")
    else:
        labels = out
    return labels, os.path.splitext(labels)[0] + "_overlay.png"


def segment_files(
    model: Any,
    variables: Any,
    paths: Sequence[str | os.PathLike],
    task: Any,
    out: str | None = None,
    *,
    alpha: float = 0.5,
) -> list[tuple[str, str, list[tuple[int, float]]]]:
    """Segment image files with `task`'s inference (`tasks.segmentation.Segmentation`: scales, flip,
    window, stride, align_corners). Writes each label map as a palette PNG (pixel value = class)
    and an overlay PNG; returns `(labels path, overlay path, [(class, share of the pixels)] largest
    first)` per image. Every file is read, and given a label map path of its own, before any is
    segmented: an unreadable file, or two images that would write the same label map, fail first."""
    from PIL import Image

    from hrnet_flax.data.segmentation import normalize
    from hrnet_flax.tasks.segmentation import segment

    _check_alpha(alpha)
    if model.num_classes > 255:  # 8-bit palette PNGs; 255 is the ignore colour
        raise ValueError(f"label maps are 8-bit palette PNGs (at most 255 classes); the model has {model.num_classes}")
    images = [load_rgb(p) for p in paths]
    targets = [_label_paths(str(path), out, len(paths) > 1) for path in paths]
    first: dict[str, str] = {}
    for path, (labels_path, _) in zip(paths, targets):
        if first.setdefault(os.path.abspath(labels_path), str(path)) != str(path):
            raise ValueError(f"{first[os.path.abspath(labels_path)]} and {path} would both be written to {labels_path}")
    results = []
    colours = palette(model.num_classes)
    for path, image, (labels_path, overlay_path) in zip(paths, images, targets):
        labels = np.asarray(
            segment(
                model, variables, normalize(image), scales=task.scales, flip=task.flip, window=task.window,
                stride=task.stride, align_corners=task.align_corners,
            )  # fmt: skip
        )
        picture = Image.fromarray(labels.astype(np.uint8), mode="P")
        picture.putpalette(colours.reshape(-1).tolist())
        picture.save(labels_path)
        Image.fromarray(overlay(image, labels, model.num_classes, alpha)).save(overlay_path)
        counts = np.bincount(labels.reshape(-1), minlength=model.num_classes)
        order = np.argsort(-counts, kind="stable")
        areas = [(int(c), float(counts[c]) / labels.size) for c in order if counts[c]]
        results.append((labels_path, overlay_path, areas))
    return results


# ------------------------------------------------------------------ pose

DEFAULT_POSE_SIZE = (256, 192)  # the official COCO person crop (H, W)
# `draw_poses` colours: limbs and joints of the person's left side, right side, and the middle.
POSE_COLOURS = {"left": (255, 128, 0), "right": (0, 160, 255), "middle": (255, 0, 255)}


def pose_options(spec: Any) -> dict[str, Any]:
    """The `estimate_poses` keyword arguments of a registered weight's `PoseSpec`: its crop size,
    codec, flip test (pairs, heatmap shift) and normalisation."""
    mean, std = spec.normalization(pixel_max=1.0)
    return {
        "input_size": tuple(int(s) for s in spec.input_size),
        "codec": spec.codec,
        "flip_pairs": tuple(tuple(int(j) for j in pair) for pair in spec.flip_pairs),
        "flip_test": bool(spec.flip_test),
        "shift_heatmap": bool(spec.shift_heatmap),
        "mean": tuple(mean),
        "std": tuple(std),
    }


def _check_rgb(image: Any, what: str) -> np.ndarray:
    picture = np.asarray(image)
    if picture.dtype != np.uint8 or picture.ndim != 3 or picture.shape[2] != 3 or 0 in picture.shape:
        raise ValueError(f"{what} needs a uint8 RGB image (H, W, 3); got {picture.dtype} of shape {picture.shape}")
    return picture


def _check_pose_model(model: Any) -> int:
    """The joint count of a pose model; anything else is refused."""
    head = getattr(getattr(model, "config", None), "head", None)
    if head != "pose":
        kind = f"a {head} model" if head else f"a {type(model).__name__}"
        raise ValueError(f"pose estimation needs a pose model (pose_hrnet_w*, one heatmap per joint); got {kind}")
    return int(model.num_classes)


def _check_normalization(mean: Sequence[float] | None, std: Sequence[float] | None) -> tuple[np.ndarray, np.ndarray]:
    from hrnet_flax.data.preprocess import IMAGENET_MEAN, IMAGENET_STD

    values = []
    for name, given, default in (("mean", mean, IMAGENET_MEAN), ("std", std, IMAGENET_STD)):
        v = np.asarray(default if given is None else given, np.float64)
        if v.shape != (3,) or not np.all(np.isfinite(v)) or (name == "std" and np.any(v <= 0)):
            raise ValueError(f"{name} must be three finite numbers (R, G, B; std positive) for pixels in [0, 1]; got {given!r}")
        values.append(v)
    return values[0], values[1]


def _format_box(box: np.ndarray) -> str:
    return "(" + ", ".join(f"{float(v):g}" for v in box) + ")"


def _check_boxes(boxes: Any, height: int, width: int, where: str = "") -> np.ndarray:
    """float64 (M, 4) person boxes x, y, w, h within a `width` x `height` image; None: the whole
    image, (-0.5, -0.5, W, H) (pixel centres are at integers, so the pixels span -0.5 .. W - 0.5)."""
    if boxes is None:
        return np.array([[-0.5, -0.5, width, height]], np.float64)
    try:
        b = np.asarray(boxes, np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}boxes must be numbers, (M, 4) x, y, w, h per person; got {boxes!r}") from e
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"{where}boxes must have shape (M, 4), x, y, w, h per person; got shape {b.shape}")
    for i, box in enumerate(b):
        x, y, w, h = box
        if not np.all(np.isfinite(box)):
            raise ValueError(f"{where}box {i} (x, y, w, h) = {_format_box(box)} is not finite")
        if w <= 0 or h <= 0:
            raise ValueError(f"{where}box {i} (x, y, w, h) = {_format_box(box)} has zero area: width and height must be positive")
        if x >= width - 0.5 or y >= height - 0.5 or x + w <= -0.5 or y + h <= -0.5:
            raise ValueError(
                f"{where}box {i} (x, y, w, h) = {_format_box(box)} lies outside the image ({width} wide, {height} high)"
            )
    return b


@functools.lru_cache(maxsize=8)
def _pose_fn(model: Any, task: Any, heatmap_size: tuple[int, int]):
    """The jitted `(coords in heatmap pixels, peak values)` of normalised crops, one per model and
    task (the flip test and the codec)."""
    import jax

    from hrnet_flax.tasks.pose import decode

    @jax.jit
    def run(variables, crops):
        heatmaps = task.infer(model, variables, crops)
        if tuple(heatmaps.shape[1:3]) != heatmap_size or heatmaps.shape[3] != task.num_joints:
            raise ValueError(
                f"the model returned heatmaps {tuple(heatmaps.shape[1:])} for crops {tuple(crops.shape[1:3])}; "
                f"expected {(*heatmap_size, task.num_joints)} (a quarter of the crop, one per joint)"
            )
        return decode(heatmaps, task.codec)

    return run


def estimate_poses(
    model: Any,
    variables: Any,
    image: np.ndarray,
    boxes: Any = None,
    *,
    input_size: Sequence[int] = DEFAULT_POSE_SIZE,
    codec: str = "msra",
    flip_pairs: Sequence[Sequence[int]] | None = None,
    flip_test: bool = True,
    shift_heatmap: bool = True,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    batch_size: int = 16,
) -> np.ndarray:
    """(M, K, 3) float64 keypoints, image x, y and heatmap peak value, of the M people in `boxes`
    ((M, 4) x, y, w, h; None: the whole image as one box) of a uint8 RGB image (H, W, 3), as the
    official top-down test: each box widened to the crop's aspect ratio and enlarged 1.25x, the
    crop of `input_size` (H, W, multiples of 32) under `codec`'s affine ("msra" or "udp"),
    normalised as (x / 255 - mean) / std (ImageNet statistics by default), the model's heatmaps
    (with `flip_test`, averaged with the flipped crop's; `flip_pairs` default to COCO's for 17
    joints), decoded by the codec and mapped back to the image. `variables` may be canonical or
    stacked; crops run `batch_size` at a time."""
    import jax

    from hrnet_flax.data import keypoints as kp
    from hrnet_flax.data.pose import check_image_size, crop_matrix, heatmap_size_of
    from hrnet_flax.data.segmentation import normalize
    from hrnet_flax.models.stacking import model_variables
    from hrnet_flax.tasks.pose import Pose

    num_joints = _check_pose_model(model)
    picture = _check_rgb(image, "estimate_poses")
    size = check_image_size(input_size)
    if flip_pairs is None:
        flip_pairs = COCO_FLIP_PAIRS if num_joints == len(COCO_JOINTS) else ()
        if flip_test and not flip_pairs:
            raise ValueError(
                f"the flip test of a {num_joints}-joint model needs flip_pairs (the joints a horizontal flip "
                "swaps); pass them, or flip_test=False"
            )
    task = Pose(
        num_joints=num_joints, codec=codec, flip_pairs=tuple(tuple(p) for p in flip_pairs), flip_test=bool(flip_test),
        shift_heatmap=bool(shift_heatmap),
    )  # fmt: skip
    mean_, std_ = _check_normalization(mean, std)
    if not (isinstance(batch_size, (int, np.integer)) and batch_size > 0):
        raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")
    b = _check_boxes(boxes, *picture.shape[:2])
    if not len(b):
        return np.zeros((0, num_joints, 3), np.float64)
    aspect = size[1] / size[0]
    center, scale = (np.stack(v) for v in zip(*(kp.box_to_center_scale(box, aspect) for box in b)))
    crops = np.stack(
        [normalize(kp.warp_image(picture, crop_matrix(c, s, 0.0, size, codec), size), mean_, std_) for c, s in zip(center, scale)]
    )
    heatmap_size = heatmap_size_of(size)
    run = _pose_fn(model, task, heatmap_size)
    params = model_variables(model, variables)
    coords, peaks = [], []
    for start in range(0, len(crops), batch_size):
        chunk = crops[start : start + batch_size]
        rows = min(batch_size, 1 << (len(chunk) - 1).bit_length())  # few batch shapes: few compilations
        padded = np.concatenate([chunk, np.zeros((rows - len(chunk), *chunk.shape[1:]), np.float32)])
        xy, values = jax.device_get(run(params, padded))
        coords.append(np.asarray(xy, np.float64)[: len(chunk)])
        peaks.append(np.asarray(values, np.float64)[: len(chunk)])
    xy = kp.heatmap_to_image(np.concatenate(coords), center, scale, heatmap_size, size, codec)
    return np.concatenate([xy, np.concatenate(peaks)[..., None]], axis=-1)


def _joint_sides(num_joints: int, flip_pairs: Sequence[Sequence[int]]) -> list[str]:
    """"left" for the first joint of each (left, right) pair, "right" for the second, else "middle"."""
    sides = ["middle"] * num_joints
    for pair in flip_pairs:
        if len(pair) != 2 or not all(0 <= int(j) < num_joints for j in pair):
            raise ValueError(
                f"flip pair {tuple(pair)} is not two joint indices below {num_joints}; pass the (left, right) "
                "pairs of this joint set as flip_pairs="
            )
        sides[int(pair[0])], sides[int(pair[1])] = "left", "right"
    return sides


def draw_poses(
    image: np.ndarray,
    poses: np.ndarray,
    skeleton: Sequence[Sequence[int]] = COCO_SKELETON,
    score_threshold: float = 0.2,
    *,
    flip_pairs: Sequence[Sequence[int]] = COCO_FLIP_PAIRS,
    radius: int | None = None,
    thickness: int | None = None,
) -> np.ndarray:
    """uint8 RGB copy of `image` with `poses` (M, K, 3: x, y, score) drawn: `skeleton`'s limbs
    (joint index pairs) as lines, joints as dots of `radius` (default about 1% of the image's
    longer side); the person's left limbs and joints in one colour, the right ones in another and
    the middle in a third (`POSE_COLOURS`; sides from the (left, right) `flip_pairs`). Joints
    scoring under `score_threshold`, and limbs touching them, are not drawn."""
    from PIL import Image, ImageDraw

    picture = _check_rgb(image, "draw_poses")
    p = np.asarray(poses, np.float64)
    if p.ndim != 3 or p.shape[-1] != 3:
        raise ValueError(f"poses must have shape (M, K, 3) (x, y, score per joint); got shape {p.shape}")
    num_joints = p.shape[1]
    limbs = [tuple(int(j) for j in limb) for limb in skeleton]
    for limb in limbs:
        if len(limb) != 2 or not all(0 <= j < num_joints for j in limb):
            raise ValueError(f"skeleton limb {limb} is not two joint indices below {num_joints} (the poses' joints)")
    if not math.isfinite(score_threshold):
        raise ValueError(f"score_threshold must be a finite number; got {score_threshold!r}")
    sides = _joint_sides(num_joints, flip_pairs)
    longer = max(picture.shape[:2])
    radius = max(2, round(longer / 100)) if radius is None else int(radius)
    thickness = max(1, round(longer / 200)) if thickness is None else int(thickness)
    if radius < 0 or thickness < 1:
        raise ValueError(f"radius must be >= 0 and thickness >= 1; got {radius} and {thickness}")
    canvas = Image.fromarray(np.ascontiguousarray(picture))
    draw = ImageDraw.Draw(canvas)
    limit = 16.0 * longer  # far outside anyway; keeps Pillow's integer coordinates in range
    for person in p:
        shown = np.isfinite(person).all(axis=-1) & (person[:, 2] >= score_threshold)
        xy = np.clip(np.nan_to_num(person[:, :2]), -limit, limit)
        for a, b in limbs:
            if shown[a] and shown[b]:
                named = {sides[a], sides[b]} - {"middle"}
                side = named.pop() if len(named) == 1 else "middle"
                draw.line([tuple(xy[a]), tuple(xy[b])], fill=POSE_COLOURS[side], width=thickness)
        for k in np.flatnonzero(shown):
            x, y = xy[k]
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=POSE_COLOURS[sides[k]])
    return np.asarray(canvas, np.uint8)


def _pose_path(path: str, out: str | None, many: bool) -> str:
    stem = os.path.splitext(os.path.basename(path))[0]
    if out is None:
        return os.path.join(os.path.dirname(os.path.abspath(path)), f"{stem}_pose.png")
    if many or os.path.isdir(out):
        os.makedirs(out, exist_ok=True)
        return os.path.join(out, f"{stem}_pose.png")
    return out


def pose_files(
    model: Any,
    variables: Any,
    paths: Sequence[str | os.PathLike],
    *,
    boxes: Any = None,
    out: str | None = None,
    score_threshold: float = 0.2,
    **options: Any,
) -> list[tuple[str, np.ndarray]]:
    """Keypoints of the people in image files (`estimate_poses` with `options`: input_size, codec,
    flip_pairs, flip_test, shift_heatmap, mean, std, batch_size), in `boxes` ((M, 4) x, y, w, h, the
    same for every image; None: each whole image). Writes each image with its skeletons drawn
    (`draw_poses`, COCO's skeleton for 17 joints, else joints only) to `out` (one image), into the
    folder `out` (several images, or an existing folder) as `<stem>_pose.png`, or by default beside
    the image; returns `(drawn path, poses (M, K, 3))` per image. Every file is read, its boxes
    checked and its output path chosen before any pose is estimated: an unreadable file, a box off
    an image or two images that would write the same file fail first."""
    from PIL import Image

    num_joints = _check_pose_model(model)
    images = [load_rgb(p) for p in paths]
    for path, image in zip(paths, images):
        _check_boxes(boxes, *image.shape[:2], where=f"{path}: ")
    targets = [_pose_path(str(path), out, len(paths) > 1) for path in paths]
    first: dict[str, str] = {}
    for path, target in zip(paths, targets):
        if first.setdefault(os.path.abspath(target), str(path)) != str(path):
            raise ValueError(f"{first[os.path.abspath(target)]} and {path} would both be written to {target}")
    coco = num_joints == len(COCO_JOINTS)
    pairs = options.get("flip_pairs")
    pairs = (COCO_FLIP_PAIRS if coco else ()) if pairs is None else pairs
    skeleton = COCO_SKELETON if coco else ()
    results = []
    for image, target in zip(images, targets):
        poses = estimate_poses(model, variables, image, boxes, **options)
        drawn = draw_poses(image, poses, skeleton, score_threshold, flip_pairs=pairs)
        Image.fromarray(drawn).save(target)
        results.append((target, poses))
    return results


def joint_names(num_joints: int) -> tuple[str, ...]:
    """COCO's joint names for 17 joints, else `joint 0`, `joint 1`, ..."""
    return COCO_JOINTS if num_joints == len(COCO_JOINTS) else tuple(f"joint {k}" for k in range(num_joints))
