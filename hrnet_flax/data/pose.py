"""Top-down pose data: person instances, the sources that hold them, and the batches for
training (augmented crops with heatmap targets) and exact evaluation (crops with their boxes).

A `PoseSource` gives each person of a split as a `PoseInstance`: the whole RGB image, the person
box (x, y, w, h) and the joints (K, 3: x, y, visibility). Crops follow the official
deep-high-resolution-net code: the box corrected to the crop's aspect ratio (width / height) and
enlarged 1.25x gives `center` and `scale` (in units of 200 pixels, `keypoints.PIXEL_STD`).

Training (`train_dataset`) is infinite, deterministic in `seed` and resumable like the other
pipelines (`batches.stream_indices`): a global stream of instances (epoch `e` a permutation seeded
by (seed, e)), step `s` is positions `[s*G, (s+1)*G)` with G the global batch, each process taking
its consecutive B; each instance's augmentation is seeded by (seed, its position), so
`start_step=s` gives exactly the batches of an uninterrupted run from step `s` on, whatever the
number of processes. Augmentation in the official order (`JointsDataset.__getitem__`): half body
(with probability `half_body_prob` when more than `half_body_min_joints` joints are labelled),
scale x clip(N(0,1) * f + 1, 1 - f, 1 + f), rotation clip(N(0,1) * r, -2r, 2r) with probability
`rotation_prob`, horizontal flip with probability 1/2 (joint pairs swapped, centre x -> width - 1 -
x), the affine crop of the image (bilinear, black outside the image) and of the labelled joints,
then the heatmap targets of the codec. Batches: `{"image": float32 (B, H, W, 3) ImageNet-normalised
RGB, "target": float32 (B, H/4, W/4, K), "target_weight": float32 (B, K), "mask": bool (B,)}`.

Evaluation (`eval_dataset`) gives every instance of a split once, in order, as an un-augmented crop:
`{"image", "mask", "crop_id" int32 (B,)}` with padding rows masked (crop id -1). Each process takes
a contiguous part and every process yields the same number of batches. The geometry stays on the
host in float64: `PoseEvalBatches.context` (a `PoseEvalContext`) holds the whole split's crop table,
indexed by crop id, identical on every process.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from hrnet_flax.data import keypoints as kp
from hrnet_flax.data.batches import Batch, default_workers, example_batches, pad_rows, prefetch, process_share
from hrnet_flax.data.images import UnreadableImageError
from hrnet_flax.data.segmentation import normalize

SIZE_MULTIPLE = 32  # HRNet downsamples 32x: crop sizes are multiples of it
HEATMAP_STRIDE = 4  # the pose head's heatmaps are a quarter of the crop


@dataclasses.dataclass
class PoseInstance:
    """One person in one image.

    `image` uint8 RGB (H, W, 3) (None from `PoseSource.annotation`); `box` (x, y, w, h) in pixels,
    the person box (ground truth or a detector's); `joints` float (K, 3): x, y in pixels and
    visibility (0 unlabelled, 1 labelled but occluded, 2 visible; None where the split has no
    ground truth); `image_id` and `score` (a detector's box score, 1 for ground-truth boxes) for
    evaluation; `area` the instance's segment area (COCO's OKS scale; 0 where unknown).
    """

    image: np.ndarray | None
    box: np.ndarray
    joints: np.ndarray | None
    image_id: int = 0
    score: float = 1.0
    area: float = 0.0


class PoseSource:
    """Person instances by split and index (COCO, the embedded figures, ...)."""

    num_joints: int = 17
    flip_pairs: tuple[tuple[int, int], ...] = ()  # joint pairs a horizontal flip swaps
    joint_names: tuple[str, ...] = ()
    upper_body: tuple[int, ...] = ()  # joints of the upper body, for the half-body augmentation

    def num_examples(self, split: str) -> int:
        raise NotImplementedError

    def load(self, split: str, index: int) -> PoseInstance:
        raise NotImplementedError

    def annotation(self, split: str, index: int) -> PoseInstance:
        """Instance `index` of `split` without its image (`image` None), for the evaluation crop
        table. This default loads the instance; sources that keep annotations apart from the
        images override it so that building the table decodes no image."""
        return dataclasses.replace(self.load(split, index), image=None)

    def name(self, split: str, index: int) -> str:
        """A name of instance `index` for messages."""
        return f"{split}[{index}]"


# ------------------------------------------------------------------ checks


def check_image_size(image_size: Sequence[int]) -> tuple[int, int]:
    """`(H, W)` of a crop: both positive multiples of 32."""
    try:
        size = tuple(int(s) for s in image_size)
    except (TypeError, ValueError) as e:
        raise ValueError(f"image_size {image_size!r} must be (H, W)") from e
    if len(size) != 2 or min(size) <= 0 or size[0] % SIZE_MULTIPLE or size[1] % SIZE_MULTIPLE:
        raise ValueError(f"image_size {tuple(image_size)} must be (H, W), both positive multiples of {SIZE_MULTIPLE}")
    return size  # type: ignore[return-value]


def heatmap_size_of(image_size: Sequence[int]) -> tuple[int, int]:
    """`(h, w)` of the heatmaps of crops of `image_size` (a quarter)."""
    h, w = check_image_size(image_size)
    return h // HEATMAP_STRIDE, w // HEATMAP_STRIDE


def check_source(source: Any) -> PoseSource:
    """`source` if its joint metadata are consistent: a positive `num_joints`, `flip_pairs` and
    `upper_body` within range."""
    for attr in ("num_examples", "load", "num_joints", "flip_pairs", "upper_body"):
        if not hasattr(source, attr):
            raise ValueError(f"{source!r} is not a PoseSource: it has no {attr!r}")
    k = source.num_joints
    if not isinstance(k, (int, np.integer)) or k <= 0:
        raise ValueError(f"{source!r} has num_joints {k!r}; it must be a positive integer")
    for pair in source.flip_pairs:
        if len(pair) != 2 or not all(0 <= int(i) < k for i in pair):
            raise ValueError(f"{source!r} has flip pair {tuple(pair)}; pairs are two joint indices below {k}")
    bad = [i for i in source.upper_body if not 0 <= int(i) < k]
    if bad:
        raise ValueError(f"{source!r} has upper_body joints {bad} out of range for {k} joints")
    return source


def _name(source: Any, split: str, index: int) -> str:
    try:
        return source.name(split, index)
    except Exception:  # a name is only for the message
        return f"{split}[{index}]"


def check_instance(
    instance: Any, source: Any, split: str, index: int, *, need_image: bool = True, need_joints: bool = False
) -> PoseInstance:
    """`instance` with `box` float64 (4,) and `joints` float64 (K, 3) (or None), checked: a finite box
    with a positive width or height, joints of shape (num_joints, 3) and finite, a uint8 (H, W, 3)
    image where `need_image`, joints where `need_joints`. Errors name the split and index."""
    name = f"pose instance {_name(source, split, index)} of {source!r}"
    if not isinstance(instance, PoseInstance):
        raise ValueError(f"{name}: load returned {type(instance).__name__}, not a PoseInstance")
    box = np.asarray(instance.box, np.float64).reshape(-1)
    # One side may be 0 (COCO keeps such clipped boxes): the crop widens it to the crop's aspect.
    if box.shape != (4,) or not np.all(np.isfinite(box)) or min(box[2:]) < 0 or max(box[2:]) <= 0:
        raise ValueError(
            f"{name}: box {np.asarray(instance.box).tolist()} must be (x, y, w, h), finite, with a positive "
            "width or height and neither negative"
        )
    joints = instance.joints
    if joints is not None:
        joints = np.asarray(joints, np.float64)
        if joints.shape != (source.num_joints, 3):
            raise ValueError(f"{name}: joints have shape {joints.shape}, expected ({source.num_joints}, 3) (x, y, visibility)")
        if not np.all(np.isfinite(joints)):
            raise ValueError(f"{name}: joints contain non-finite values")
    elif need_joints:
        raise ValueError(f"{name} has no joints; every training instance needs them")
    image = instance.image
    if need_image:
        if image is None:
            raise ValueError(f"{name} has no image")
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
            raise ValueError(f"{name}: image must be uint8 RGB (H, W, 3), got {image.dtype} {image.shape}")
    return dataclasses.replace(instance, image=image, box=box, joints=joints)


def _aspect_ratio(aspect_ratio: float | None, image_size: tuple[int, int]) -> float:
    ratio = image_size[1] / image_size[0] if aspect_ratio is None else float(aspect_ratio)
    if not (math.isfinite(ratio) and ratio > 0):
        raise ValueError(f"aspect_ratio must be positive (crop width / height), got {aspect_ratio}")
    return ratio


def crop_matrix(center: np.ndarray, scale: np.ndarray, rotation: float, image_size: Sequence[int], codec: str) -> np.ndarray:
    """(2, 3) image-to-crop affine of the codec: `crop_transform` (msra) or `udp_transform` (udp)."""
    if kp.check_codec(codec) == "udp":
        return kp.udp_transform(center, scale, rotation, image_size)
    return kp.crop_transform(center, scale, rotation, image_size)


def encode_heatmaps(
    joints: np.ndarray, image_size: Sequence[int], heatmap_size: Sequence[int], sigma: float, codec: str
) -> tuple[np.ndarray, np.ndarray]:
    """`(target (h, w, K), weight (K,))` of crop joints under the codec (`msra_heatmaps` or `udp_heatmaps`)."""
    encode = kp.udp_heatmaps if kp.check_codec(codec) == "udp" else kp.msra_heatmaps
    return encode(joints, image_size, heatmap_size, sigma)


# ------------------------------------------------------------------ training


@dataclasses.dataclass(frozen=True)
class PoseAugmentation:
    """The training transform of one instance (see the module doc); `__call__(instance, rng)`."""

    image_size: tuple[int, int] = (256, 192)
    sigma: float = 2.0
    codec: str = "msra"
    scale_factor: float = 0.35
    rotation_factor: float = 45.0
    rotation_prob: float = 0.6
    flip: bool = True
    half_body_prob: float = 0.3
    half_body_min_joints: int = 8
    aspect_ratio: float | None = None
    flip_pairs: tuple[tuple[int, int], ...] = ()
    upper_body: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        check_image_size(self.image_size)
        kp.check_codec(self.codec)
        _aspect_ratio(self.aspect_ratio, self.image_size)
        if not self.sigma > 0:
            raise ValueError(f"sigma must be positive, got {self.sigma}")
        if not 0 <= self.scale_factor < 1:
            raise ValueError(f"scale_factor must be in [0, 1), got {self.scale_factor}")
        if not self.rotation_factor >= 0:
            raise ValueError(f"rotation_factor must be >= 0 (degrees), got {self.rotation_factor}")
        for name in ("rotation_prob", "half_body_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be a probability in [0, 1], got {getattr(self, name)}")

    def __call__(self, instance: PoseInstance, rng: np.random.Generator) -> dict[str, Any]:
        """`{"image" float32 (H, W, 3) normalised, "target" (H/4, W/4, K), "target_weight" (K,),
        "joints" float64 (K, 3) in crop pixels, "center", "scale", "rotation", "flipped"}` of a
        checked instance (joints required). Draws from `rng`, in order: the half-body choice and
        its upper/lower draw, the scale, the rotation choice and angle, the flip."""
        size = tuple(self.image_size)
        aspect = _aspect_ratio(self.aspect_ratio, size)
        joints = np.array(instance.joints, np.float64)
        labelled = joints[:, 2] > 0
        center, scale = kp.box_to_center_scale(instance.box, aspect)
        if labelled.sum() > self.half_body_min_joints and rng.random() < self.half_body_prob:
            half = kp.half_body_box(joints, self.upper_body, aspect, rng)
            if half is not None:
                center, scale = half
        f = self.scale_factor
        scale = scale * np.clip(rng.standard_normal() * f + 1, 1 - f, 1 + f)
        rotation = 0.0
        if rng.random() <= self.rotation_prob:
            r = self.rotation_factor
            rotation = float(np.clip(rng.standard_normal() * r, -2 * r, 2 * r))
        image = instance.image
        flipped = bool(self.flip and rng.random() <= 0.5)
        if flipped:
            width = image.shape[1]
            image = image[:, ::-1]
            joints = kp.flip_joints(joints, width, self.flip_pairs)
            labelled = joints[:, 2] > 0
            center = np.array([width - center[0] - 1, center[1]])
        matrix = crop_matrix(center, scale, rotation, size, self.codec)
        crop = kp.warp_image(image, matrix, size)
        joints[labelled, :2] = kp.transform_points(joints[labelled, :2], matrix)
        target, weight = encode_heatmaps(joints, size, heatmap_size_of(size), self.sigma, self.codec)
        return {
            "image": normalize(crop),
            "target": target,
            "target_weight": weight,
            "joints": joints,
            "center": center,
            "scale": scale,
            "rotation": rotation,
            "flipped": flipped,
        }


def train_dataset(
    source: PoseSource,
    *,
    batch_size_per_process: int,
    image_size: Sequence[int] = (256, 192),
    sigma: float = 2.0,
    codec: str = "msra",
    scale_factor: float = 0.35,
    rotation_factor: float = 45.0,
    rotation_prob: float = 0.6,
    flip: bool = True,
    half_body_prob: float = 0.3,
    half_body_min_joints: int = 8,
    aspect_ratio: float | None = None,
    seed: int = 0,
    start_step: int = 0,
    split: str = "train",
    process_index: int | None = None,
    process_count: int | None = None,
    workers: int | None = None,
) -> Iterator[Batch]:
    """Infinite training batches of augmented crops with heatmap targets (see the module doc); the
    first is step `start_step`. `aspect_ratio` (crop width / height) defaults to the crop's."""
    if batch_size_per_process <= 0:
        raise ValueError(f"batch_size_per_process must be positive, got {batch_size_per_process}")
    if start_step < 0:
        raise ValueError(f"start_step must be >= 0, got {start_step}")
    source = check_source(source)
    augment = PoseAugmentation(
        image_size=check_image_size(image_size), sigma=float(sigma), codec=codec, scale_factor=float(scale_factor),
        rotation_factor=float(rotation_factor), rotation_prob=float(rotation_prob), flip=bool(flip),
        half_body_prob=float(half_body_prob), half_body_min_joints=int(half_body_min_joints),
        aspect_ratio=aspect_ratio, flip_pairs=tuple(tuple(int(i) for i in p) for p in source.flip_pairs),
        upper_body=tuple(int(i) for i in source.upper_body),
    )  # fmt: skip
    p, count = process_share(process_index, process_count)
    n = source.num_examples(split)
    if n == 0:
        raise ValueError(f"split {split!r} of {source!r} has no instances")

    def example(index: int, position: int) -> dict[str, np.ndarray]:
        instance = check_instance(source.load(split, index), source, split, index, need_joints=True)
        row = augment(instance, np.random.default_rng([seed, 4, position]))
        return {key: row[key] for key in ("image", "target", "target_weight")}

    return example_batches(
        example, n, seed=seed, start_step=start_step, batch_size=batch_size_per_process, process_index=p,
        process_count=count, workers=workers, name="pose-data",
    )  # fmt: skip


# ------------------------------------------------------------------ evaluation


@dataclasses.dataclass(frozen=True, eq=False)
class PoseEvalContext:
    """The crop table of a whole evaluation split, indexed by crop id (float64 on the host).

    `center`, `scale` (N, 2): the crops (scale in units of `keypoints.PIXEL_STD` pixels); `score`
    (N,): box scores; `image_id` (N,) int64; `area` (N,); `box` (N, 4) x, y, w, h; `joints`
    (N, K, 3) ground truth, or None where the split has none; `image_size` and `heatmap_size`
    (h, w); `codec` of the crops and heatmaps; `num_joints`; `flip_pairs`; `split`; and `source`,
    the source object itself (for an evaluator's ground truth).
    """

    center: np.ndarray
    scale: np.ndarray
    score: np.ndarray
    image_id: np.ndarray
    area: np.ndarray
    box: np.ndarray
    joints: np.ndarray | None
    image_size: tuple[int, int]
    heatmap_size: tuple[int, int]
    codec: str
    num_joints: int
    flip_pairs: tuple[tuple[int, int], ...]
    split: str
    source: Any

    def __len__(self) -> int:
        return len(self.center)


def eval_context(
    source: PoseSource, split: str, image_size: Sequence[int] = (256, 192), codec: str = "msra", aspect_ratio: float | None = None
) -> PoseEvalContext:
    """The `PoseEvalContext` of every instance of `split` (read through `source.annotation`)."""
    source = check_source(source)
    size = check_image_size(image_size)
    kp.check_codec(codec)
    aspect = _aspect_ratio(aspect_ratio, size)
    n = source.num_examples(split)
    if n == 0:
        raise ValueError(f"split {split!r} of {source!r} has no instances")
    center, scale = np.zeros((n, 2)), np.zeros((n, 2))
    score, area, box = np.zeros(n), np.zeros(n), np.zeros((n, 4))
    image_id = np.zeros(n, np.int64)
    joints: list[np.ndarray | None] = []
    annotation = getattr(source, "annotation", None) or source.load  # (a duck-typed source may lack it)
    for i in range(n):
        instance = check_instance(annotation(split, i), source, split, i, need_image=False)
        box[i] = instance.box
        center[i], scale[i] = kp.box_to_center_scale(instance.box, aspect)
        score[i], area[i], image_id[i] = float(instance.score), float(instance.area), int(instance.image_id)
        joints.append(instance.joints)
    labelled = [j is not None for j in joints]
    if any(labelled) and not all(labelled):
        first = labelled.index(not labelled[0])
        raise ValueError(
            f"split {split!r} of {source!r} mixes instances with and without joints "
            f"({_name(source, split, 0)} {'has' if labelled[0] else 'lacks'} them, {_name(source, split, first)} "
            f"{'has' if labelled[first] else 'lacks'} them)"
        )
    return PoseEvalContext(
        center=center, scale=scale, score=score, image_id=image_id, area=area, box=box,
        joints=np.stack(joints) if all(labelled) else None, image_size=size, heatmap_size=heatmap_size_of(size),
        codec=codec, num_joints=int(source.num_joints),
        flip_pairs=tuple(tuple(int(i) for i in p) for p in source.flip_pairs), split=split, source=source,
    )  # fmt: skip


class PoseEvalBatches:
    """Every instance of a split once, in order, as un-augmented crops in padded+masked batches
    (iterable): `{"image" float32 (B, H, W, 3), "mask" bool (B,), "crop_id" int32 (B,)}`, crop ids
    indexing `context` (-1 on padding rows).

    Each process takes a contiguous part; `num_examples`: this process's, `total_examples`: all;
    `len()`: batches (equal on every process). After iterating, `unreadable` lists the images that
    could not be decoded (those crops are skipped, not predicted).
    """

    def __init__(
        self,
        source: PoseSource,
        split: str = "val",
        *,
        batch_size_per_process: int,
        image_size: Sequence[int] = (256, 192),
        codec: str = "msra",
        aspect_ratio: float | None = None,
        process_index: int | None = None,
        process_count: int | None = None,
        workers: int | None = None,
    ):
        if batch_size_per_process <= 0:
            raise ValueError(f"batch_size_per_process must be positive, got {batch_size_per_process}")
        self.source = check_source(source)
        self.split = split
        self.batch_size = batch_size_per_process
        self.workers = workers or default_workers()
        self.process_index, self.process_count = process_share(process_index, process_count)
        self.context = eval_context(self.source, split, image_size, codec, aspect_ratio)
        self.total_examples = len(self.context)
        self._indices = np.array_split(np.arange(self.total_examples), self.process_count)[self.process_index]
        self.num_examples = len(self._indices)
        self.num_batches = math.ceil(math.ceil(self.total_examples / self.process_count) / self.batch_size)
        self.unreadable: list[str] = []

    def __len__(self) -> int:
        return self.num_batches

    def crop(self, index: int) -> np.ndarray | str:
        """float32 (H, W, 3) normalised crop of instance `index` (its image's name if unreadable)."""
        try:
            instance = self.source.load(self.split, index)
        except UnreadableImageError as e:
            return e.path
        instance = check_instance(instance, self.source, self.split, index)
        ctx = self.context
        matrix = crop_matrix(ctx.center[index], ctx.scale[index], 0.0, ctx.image_size, ctx.codec)
        return normalize(kp.warp_image(instance.image, matrix, ctx.image_size))

    def _batch(self, images: list[np.ndarray], ids: list[int]) -> Batch:
        h, w = self.context.image_size
        batch = pad_rows(
            {
                "image": np.stack(images) if images else np.zeros((0, h, w, 3), np.float32),
                "crop_id": np.asarray(ids, np.int32),
            },
            self.batch_size,
        )
        batch["crop_id"][~batch["mask"]] = -1
        return batch

    def __iter__(self) -> Iterator[Batch]:
        self.unreadable = []
        jobs = (lambda i=int(i): (i, self.crop(i)) for i in self._indices)
        images: list[np.ndarray] = []
        ids: list[int] = []
        produced = 0
        for index, result in prefetch(jobs, self.workers, ahead=self.batch_size + self.workers, name="pose-data"):
            if isinstance(result, str):
                self.unreadable.append(result)
                continue
            images.append(result)
            ids.append(index)
            if len(images) == self.batch_size:
                produced += 1
                yield self._batch(images, ids)
                images, ids = [], []
        if images:
            produced += 1
            yield self._batch(images, ids)
        for _ in range(produced, self.num_batches):  # a shorter part (or skipped images): pad
            yield self._batch([], [])


def eval_dataset(
    source: PoseSource,
    split: str = "val",
    *,
    batch_size_per_process: int,
    image_size: Sequence[int] = (256, 192),
    codec: str = "msra",
    aspect_ratio: float | None = None,
    process_index: int | None = None,
    process_count: int | None = None,
    workers: int | None = None,
) -> PoseEvalBatches:
    """Finite, padded+masked evaluation crops of every instance of `split`: a `PoseEvalBatches`."""
    return PoseEvalBatches(
        source, split, batch_size_per_process=batch_size_per_process, image_size=image_size, codec=codec,
        aspect_ratio=aspect_ratio, process_index=process_index, process_count=process_count, workers=workers,
    )  # fmt: skip
