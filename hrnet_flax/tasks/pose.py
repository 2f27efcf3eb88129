"""Top-down human pose estimation: heatmap regression, decoding, and PCK / COCO keypoint AP.

The model returns one heatmap per joint at a quarter of the crop size (B, h, w, K). Training
regresses Gaussian targets with the official loss; evaluation runs the model (and, with
`flip_test`, the flipped crop, whose heatmaps are flipped back, their joint channels swapped and,
with `shift_heatmap`, moved one pixel right), decodes each joint on the device (`decode_msra` or
`decode_udp`), and keeps one row per crop: its id, heatmap coordinates and peak values. On the
host `summarize` maps every crop back to its image in float64 (the crop table of
`data.pose.PoseEvalContext`), checks that every crop was scored exactly once, and measures PCK
where the split has ground-truth joints and COCO keypoint AP (pycocotools, the official rescoring
and OKS-NMS) where the source is COCO.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hrnet_flax.data import keypoints as kp
from hrnet_flax.tasks.base import Task

COCO_METRICS = ("ap", "ap50", "ap75", "apm", "apl", "ar", "ar50", "ar75", "arm", "arl")


def heatmap_loss(heatmaps: jax.Array, target: jax.Array, weight: jax.Array, mask: jax.Array) -> jax.Array:
    """The official `JointsMSELoss` with target weights: 0.5 x the mean over rows, joints and
    pixels of ((pred - target) x weight)^2, over the unmasked rows."""
    rows = mask.astype(jnp.float32)
    w = (weight * rows[:, None])[:, None, None, :]
    squared = jnp.square((heatmaps.astype(jnp.float32) - target) * w)
    per_row = np.prod(heatmaps.shape[1:])
    return 0.5 * jnp.sum(squared) / (jnp.maximum(jnp.sum(rows), 1.0) * per_row)


def pck(pred: np.ndarray, joints: np.ndarray, boxes: np.ndarray, threshold: float = 0.1) -> tuple[int, int]:
    """(correct, counted): over the labelled joints (visibility > 0) of `joints` (N, K, 3), how many
    predictions `pred` (N, K, 2) lie within `threshold` x max(box w, h) of the truth (boxes (N, 4)
    x, y, w, h)."""
    pred, joints, boxes = (np.asarray(x, np.float64) for x in (pred, joints, boxes))
    if joints.ndim != 3 or joints.shape[-1] != 3:
        raise ValueError(f"pck: joints must be (N, K, 3), got shape {joints.shape}")
    if pred.shape != joints.shape[:2] + (2,):
        raise ValueError(f"pck: pred must be (N, K, 2) = {joints.shape[:2] + (2,)} like joints, got shape {pred.shape}")
    if boxes.shape != (joints.shape[0], 4):
        raise ValueError(f"pck: boxes must be (N, 4) = {(joints.shape[0], 4)}, got shape {boxes.shape}")
    if not (np.isfinite(threshold) and threshold > 0):
        raise ValueError(f"pck: threshold must be positive, got {threshold!r}")
    counted = joints[..., 2] > 0
    distance = np.linalg.norm(pred - joints[..., :2], axis=-1)
    limit = threshold * np.max(boxes[:, 2:], axis=-1)
    correct = counted & (distance <= limit[:, None])
    return int(correct.sum()), int(counted.sum())


def infer_heatmaps(
    model: Any,
    variables: Any,
    images: jax.Array,
    *,
    flip_pairs: tuple[tuple[int, int], ...] = (),
    flip_test: bool = False,
    shift_heatmap: bool = True,
) -> jax.Array:
    """Heatmaps (B, h, w, K) of crops `images`; with `flip_test` the mean with the flipped crop's,
    flipped back (`keypoints.flip_heatmaps`), as the official test."""
    heatmaps = model.apply(variables, images, train=False)
    if flip_test:
        flipped = model.apply(variables, images[:, :, ::-1], train=False)
        heatmaps = 0.5 * (heatmaps + kp.flip_heatmaps(flipped, flip_pairs, shift_heatmap))
    return heatmaps


def decode(heatmaps: jax.Array, codec: str = "msra") -> tuple[jax.Array, jax.Array]:
    """`(coords (B, K, 2) in heatmap pixels, peak values (B, K))` by the codec's decoding."""
    kp.check_codec(codec)
    return kp.decode_msra(heatmaps) if codec == "msra" else kp.decode_udp(heatmaps)


@dataclasses.dataclass(frozen=True)
class Pose(Task):
    """Heatmap regression of `num_joints` joints; the model returns heatmaps (B, h, w, K).

    `codec` ("msra" or "udp") decodes heatmaps; `flip_test`, `flip_pairs` and `shift_heatmap` set
    the test-time flip; `pck_threshold` the PCK distance as a fraction of the box's longer side.
    """

    num_joints: int = 17
    codec: str = "msra"
    flip_pairs: tuple[tuple[int, int], ...] = ()
    flip_test: bool = True
    shift_heatmap: bool = True
    pck_threshold: float = 0.1
    name = "pose"
    main_metric = ""  # AP needs the whole split (COCOeval): no running value
    row_keys = ("crop_id", "coords", "maxvals")

    def __post_init__(self):
        object.__setattr__(self, "flip_pairs", tuple(tuple(int(j) for j in p) for p in self.flip_pairs))
        if self.num_joints <= 0:
            raise ValueError(f"Pose: num_joints={self.num_joints} must be positive")
        kp.check_codec(self.codec)
        for pair in self.flip_pairs:
            if len(pair) != 2 or not all(0 <= j < self.num_joints for j in pair):
                raise ValueError(f"Pose: flip pair {pair} is not two joint indices in [0, {self.num_joints})")
        if self.flip_test and not self.flip_pairs:
            raise ValueError("Pose: flip_test needs the dataset's flip_pairs (which joints a flip swaps)")
        if not 0 < self.pck_threshold:
            raise ValueError(f"Pose: pck_threshold={self.pck_threshold} must be positive")

    @classmethod
    def from_config(cls, config: Any) -> Pose:
        """From a `TrainConfig`: joints `num_classes`, the dataset's flip pairs, `pose_codec`,
        `eval_flip` (flip test) and `pose_shift_heatmap`."""
        source = pose_source(config)
        return cls(
            num_joints=config.num_classes,
            codec=config.pose_codec,
            flip_pairs=tuple(source.flip_pairs),
            flip_test=config.eval_flip,
            shift_heatmap=config.pose_shift_heatmap,
            pck_threshold=config.pck_threshold,
        )

    # --- on the device -------------------------------------------------------------------------

    def loss(self, outputs, batch):
        """The official heatmap MSE with target weights; no further metrics."""
        self._check_joints(outputs.shape[-1])
        return heatmap_loss(outputs, batch["target"], batch["target_weight"], batch["mask"]), {}

    def infer(self, model, variables, images):
        return infer_heatmaps(
            model, variables, images, flip_pairs=self.flip_pairs, flip_test=self.flip_test, shift_heatmap=self.shift_heatmap
        )

    def eval_sums(self, outputs, batch):
        """Per crop (`row_keys`): its id, the decoded heatmap coordinates and peak values; and the
        crop count."""
        self._check_joints(outputs.shape[-1])
        coords, maxvals = decode(outputs, self.codec)
        return {
            "crop_id": batch["crop_id"].astype(jnp.int32),
            "coords": coords.astype(jnp.float32),
            "maxvals": maxvals.astype(jnp.float32),
            "count": jnp.sum(batch["mask"], dtype=jnp.int32),
        }

    def _check_joints(self, channels: int) -> None:
        if channels != self.num_joints:
            raise ValueError(
                f"the model predicts {channels} heatmaps but the task has {self.num_joints} joints: "
                "use a model whose joint count (num_classes) is the dataset's"
            )

    # --- on the host ---------------------------------------------------------------------------

    def keypoints(self, sums: Mapping[str, Any], context: Any) -> tuple[np.ndarray, np.ndarray]:
        """`(crop ids (n,), keypoints (n, K, 3))`: the scored crops of `context` in crop order, with
        float64 image coordinates and peak values. Every crop must have been scored exactly once,
        except the `sums["unreadable"]` ones whose image could not be read."""
        if context is None:
            raise ValueError("pose evaluation needs the batches' crop table (`PoseEvalBatches.context`)")
        ids = np.asarray(sums["crop_id"], np.int64)
        n = len(context)
        inside = (ids >= 0) & (ids < n)
        seen = np.bincount(ids[inside], minlength=n)
        skipped = int(sums.get("unreadable", 0))
        missing, repeated = int((seen == 0).sum()), int((seen > 1).sum())
        if missing != skipped or repeated or not inside.all():
            raise ValueError(
                f"pose evaluation scored {len(ids)} crops for {n}: each crop id must come exactly once "
                f"(missing {missing}, of which {skipped} had an unreadable image; repeated {repeated}; "
                f"out of range {int((~inside).sum())})"
            )
        order = np.argsort(ids)
        ids = ids[order]
        coords = np.asarray(sums["coords"], np.float64)[order]
        if coords.shape[1] != context.num_joints:
            raise ValueError(f"the model predicts {coords.shape[1]} joints but the dataset has {context.num_joints}")
        xy = kp.heatmap_to_image(
            coords, context.center[ids], context.scale[ids], context.heatmap_size, context.image_size, self.codec
        )
        return ids, np.concatenate([xy, np.asarray(sums["maxvals"], np.float64)[order][..., None]], axis=-1)

    def summarize(self, sums: Mapping[str, Any], context: Any = None) -> dict[str, Any]:
        """`pck` (%) where the split has ground-truth joints, COCO AP/AR (%) where the source is a
        COCO keypoint set (`annotation_file`; persons whose image was unreadable count as missed),
        and the scored crop count."""
        ids, points = self.keypoints(sums, context)
        metrics: dict[str, Any] = {"count": len(points)}
        if context.joints is not None:
            correct, counted = pck(points[..., :2], context.joints[ids], context.box[ids], self.pck_threshold)
            metrics.update(pck=100.0 * correct / max(counted, 1), pck_joints=counted)
        annotation_file = getattr(context.source, "annotation_file", None)
        if annotation_file is not None:
            from hrnet_flax.data.coco import evaluate_keypoints

            areas = np.prod(context.scale[ids] * kp.PIXEL_STD, axis=-1)  # the official OKS-NMS scale: the crop box
            metrics.update(
                evaluate_keypoints(
                    points, context.image_id[ids], context.score[ids], areas, annotation_file(context.split)
                )
            )
        return metrics

    def describe(self, metrics: Mapping[str, Any]) -> str:
        parts = []
        if "ap" in metrics:
            parts.append(f"AP {metrics['ap']:.1f}, AP50 {metrics['ap50']:.1f}, AR {metrics['ar']:.1f}")
        if "pck" in metrics:
            parts.append(f"PCK@{self.pck_threshold:g} {metrics['pck']:.2f}%")
        return ", ".join(parts) or f"{metrics['count']} crops"

    # --- data ----------------------------------------------------------------------------------

    def resolve(self, config: Any) -> Any:
        """Checks `num_classes` against the dataset's joints; counts `train_examples` when it is None."""
        source = pose_source(config)
        if config.num_classes != source.num_joints:
            raise ValueError(
                f"config.num_classes={config.num_classes} but the dataset {config.dataset} has {source.num_joints} joints"
            )
        if config.train_examples is not None:
            return config
        return dataclasses.replace(config, train_examples=source.num_examples("train"))

    def datasets(self, config, *, train_batch, eval_batch, start_step):
        from hrnet_flax.data import pose as pose_data

        source = pose_source(config)
        size = tuple(config.crop_size)
        train = pose_data.train_dataset(
            source,
            batch_size_per_process=train_batch,
            image_size=size,
            sigma=config.pose_sigma,
            codec=config.pose_codec,
            scale_factor=config.pose_scale_factor,
            rotation_factor=config.pose_rotation_factor,
            rotation_prob=config.pose_rotation_prob,
            flip=config.pose_flip,
            half_body_prob=config.pose_half_body_prob,
            seed=config.seed,
            start_step=start_step,
        )
        return train, lambda: pose_data.eval_dataset(
            source, "val", batch_size_per_process=eval_batch, image_size=size, codec=config.pose_codec
        )


def pose_source(config: Any) -> Any:
    """The pose source of `config.dataset`: "figures" (the embedded demo, at `crop_size`) or
    "coco:<root>" (COCO keypoints; val boxes from `pose_detections` where set)."""
    return source_of(config.dataset, tuple(config.crop_size), config.pose_detections)


@functools.lru_cache(maxsize=4)
def source_of(dataset: str, crop_size: tuple[int, ...], detections: str | None = None) -> Any:
    """The pose source named `dataset`: "figures" (drawn at `crop_size`) or "coco:<root>" (val
    boxes from the `detections` file where given); built once per arguments."""
    if dataset == "figures":
        from hrnet_flax.data.figures import FiguresSource

        return FiguresSource(crop_size)
    if dataset.startswith("coco:"):
        from hrnet_flax.data.coco import CocoKeypoints

        return CocoKeypoints(dataset[len("coco:") :], detections=detections)
    if dataset == "coco":
        raise ValueError("config.dataset='coco': give the COCO folder, coco:<root> (with annotations/ and the images)")
    raise ValueError(
        f"config.dataset={dataset!r} is no pose dataset: use 'figures' (the embedded demo) or "
        "'coco:<root>' (a folder with annotations/person_keypoints_{train,val}2017.json and the images)"
    )
