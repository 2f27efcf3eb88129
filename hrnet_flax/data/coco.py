"""COCO person keypoints: the top-down pose source (ground-truth persons, or a detector's person
boxes for evaluation), OKS non-maximum suppression, the official rescoring, and the COCO keypoint
AP evaluation through pycocotools.

Layout (`CocoKeypoints(root)`): `root/annotations/person_keypoints_{train2017,val2017}.json` and
the images in `root/train2017/`, `root/val2017/` (or the official code's `root/images/train2017/`,
`root/images/val2017/`); `annotation_files={split: path}` and `image_dirs={split: path}` name the
files of any COCO-format person keypoint set (the 17 COCO joints) instead. Splits: "train", "val".

Ground-truth instances follow the official HRNet loader: per image (annotation-file order), its
non-crowd annotations of the keypoint category, the box clipped to the image as
`x1 = max(0, x)`, `x2 = min(width - 1, x1 + max(0, w - 1))` (same for y) and kept when
`area > 0`, `x2 >= x1`, `y2 >= y1`, giving the box `(x1, y1, x2 - x1, y2 - y1)`; annotations whose
keypoint values are all 0 (nothing labelled) are dropped. With `detections` (a COCO detection
results JSON), the "val" split is the detector's person boxes with `score >= det_score_threshold`
(the official `score < thre` rejection), in file order, without joints.

Evaluation follows the official `evaluate`: each prediction's score becomes its box score times
the mean of its joint scores above `in_vis_threshold` (0.2), then OKS-NMS at 0.9 per image, then
pycocotools' COCOeval with `iouType="keypoints"`. The official passes, as each prediction's area,
the area of its crop box (`scale_w * scale_h * 200**2`); the area only matters for the NMS, since
COCOeval takes a detection's area from its keypoints.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hrnet_flax.data.images import load_rgb
from hrnet_flax.data.pose import PoseInstance, PoseSource

COCO_JOINTS = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
    "right_knee", "left_ankle", "right_ankle",
)  # fmt: skip
COCO_FLIP_PAIRS = ((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))
COCO_UPPER_BODY = tuple(range(11))  # nose to wrists
COCO_LOWER_BODY = tuple(range(11, 17))  # hips to ankles
# The person category's skeleton of the COCO annotation files, 0-based (the files are 1-based).
COCO_SKELETON = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8),
    (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
)  # fmt: skip
# Per-joint OKS constants of the COCO keypoint evaluation (pycocotools' `kpt_oks_sigmas`).
COCO_SIGMAS = np.array(
    [0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62, 1.07, 1.07, 0.87, 0.87, 0.89, 0.89],
    np.float64,
) / 10.0

SPLITS = {"train": "train2017", "val": "val2017"}
METRIC_NAMES = ("ap", "ap50", "ap75", "apm", "apl", "ar", "ar50", "ar75", "arm", "arl")
OKS_THRESHOLD = 0.9  # the official TEST.OKS_THRE
IN_VIS_THRESHOLD = 0.2  # the official TEST.IN_VIS_THRE


class CocoDataError(ValueError):
    """A COCO annotation or detection file that is readable but not what it must be."""


# ------------------------------------------------------------------ annotation files


def _read_json(path: str | os.PathLike, what: str) -> Any:
    """The parsed JSON of `path`; FileNotFoundError or CocoDataError naming the file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CocoDataError(f"{what} {path} is not valid JSON: {e}") from e


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _numbers(value: Any, length: int | None) -> bool:
    """Whether `value` is a list of finite numbers (of `length` items when given)."""
    return (
        isinstance(value, list)
        and (length is None or len(value) == length)
        and all(_is_number(v) for v in value)
    )


def check_keypoint_annotations(data: Any, path: str, num_joints: int = len(COCO_JOINTS)) -> dict[str, Any]:
    """The keypoint category (the file's first category, as the official loader takes it) of a
    parsed COCO keypoint annotation file, after checking the fields that loading and COCOeval read.

    Fills the optional `iscrowd` (0) and `num_keypoints` (the labelled joints) in place. Raises
    `CocoDataError` naming `path` and the image or annotation id at fault.
    """
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "annotations", "categories")):
        found = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise CocoDataError(
            f"{path} is not a COCO keypoints annotation file: expected a JSON object with the lists "
            f"'images', 'annotations' and 'categories' (found {found})"
        )
    categories = data["categories"]
    if not categories or not isinstance(categories[0], dict) or "id" not in categories[0]:
        raise CocoDataError(f"{path} is not a COCO keypoints annotation file: 'categories' has no category with an 'id'")
    category = categories[0]
    names = category.get("keypoints")
    if not isinstance(names, list):
        raise CocoDataError(
            f"{path} is not a COCO keypoints annotation file: its category {category.get('name', category['id'])!r} "
            "has no 'keypoints' list (a detection or instance annotation file?)"
        )
    if len(names) != num_joints:
        raise CocoDataError(
            f"{path}: category {category.get('name', category['id'])!r} names {len(names)} keypoints; "
            f"expected {num_joints}"
        )
    image_ids = set()
    for i, image in enumerate(data["images"]):
        if not isinstance(image, dict) or "id" not in image:
            raise CocoDataError(f"{path}: images[{i}] has no 'id'")
        if not isinstance(image["id"], int) or isinstance(image["id"], bool):
            raise CocoDataError(f"{path}: images[{i}] 'id' must be an integer, got {image['id']!r}")
        image_ids.add(image["id"])
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or "id" not in ann:
            raise CocoDataError(f"{path}: annotations[{i}] has no 'id'")
        where = f"{path}: annotation id {ann['id']}"
        for key in ("image_id", "category_id"):
            if key not in ann:
                raise CocoDataError(f"{where} has no '{key}'")
        if ann["image_id"] not in image_ids:
            raise CocoDataError(f"{where} refers to image_id {ann['image_id']!r}, which is not in 'images'")
        if ann["category_id"] != category["id"]:
            continue  # other categories are neither loaded nor evaluated
        if "keypoints" not in ann:
            raise CocoDataError(f"{where} has no 'keypoints'")
        if not _numbers(ann["keypoints"], None):
            raise CocoDataError(f"{where}: 'keypoints' must be a list of numbers")
        if len(ann["keypoints"]) != 3 * num_joints:
            raise CocoDataError(
                f"{where}: 'keypoints' has {len(ann['keypoints'])} values; expected 3 x {num_joints} = "
                f"{3 * num_joints} (x, y, visibility per joint)"
            )
        if not _numbers(ann.get("bbox"), 4):
            raise CocoDataError(f"{where}: 'bbox' must be [x, y, w, h] (4 numbers), got {ann.get('bbox')!r}")
        if not _is_number(ann.get("area")):
            raise CocoDataError(f"{where}: 'area' must be a number, got {ann.get('area')!r}")
        ann.setdefault("iscrowd", 0)
        if "num_keypoints" not in ann:
            ann["num_keypoints"] = int(sum(1 for v in ann["keypoints"][2::3] if v > 0))
    return category


def _load_annotations(path: str | os.PathLike, num_joints: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(parsed file, keypoint category) of a COCO keypoint annotation file, checked."""
    data = _read_json(path, "COCO keypoint annotation file")
    category = check_keypoint_annotations(data, os.fspath(path), num_joints)
    return data, category


def _clean_box(bbox: Sequence[float], width: float, height: float) -> list[float] | None:
    """The official `clean_bbox` (x1, y1, x2 - x1, y2 - y1) of a box clipped to a width x height
    image, or None where the official loader drops the box."""
    x, y, w, h = bbox
    x1, y1 = max(0.0, x), max(0.0, y)
    x2 = min(width - 1.0, x1 + max(0.0, w - 1.0))
    y2 = min(height - 1.0, y1 + max(0.0, h - 1.0))
    if x2 >= x1 and y2 >= y1:
        return [x1, y1, x2 - x1, y2 - y1]
    return None


# ------------------------------------------------------------------ the source


class _Split:
    """The instances of one split, as arrays; `load` adds the decoded image."""

    def __init__(
        self,
        paths: list[str],
        boxes: list,
        joints: list | None,
        image_ids: list,
        scores: list,
        areas: list,
        ids: list | None,
    ):
        self.paths = paths
        self.boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        self.joints = None if joints is None else np.asarray(joints, np.float64).reshape(len(paths), -1, 3)
        self.image_ids = np.asarray(image_ids, np.int64)
        self.scores = np.asarray(scores, np.float64)
        self.areas = np.asarray(areas, np.float64)
        self.annotation_ids = ids  # ground-truth annotation ids; None for detections


class CocoKeypoints(PoseSource):
    """COCO person keypoints (17 joints) for top-down pose estimation; see the module docstring.

    Annotation and detection files are read on the first use of their split. `load(split, i)`
    decodes the image then (`UnreadableImageError`, a ValueError naming the path, when the file is
    missing or broken).
    """

    kind = "coco"
    num_joints = len(COCO_JOINTS)
    joint_names = COCO_JOINTS
    flip_pairs = COCO_FLIP_PAIRS
    upper_body = COCO_UPPER_BODY

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        *,
        detections: str | os.PathLike | list | None = None,
        det_score_threshold: float = 0.0,
        annotation_files: Mapping[str, str | os.PathLike] | None = None,
        image_dirs: Mapping[str, str | os.PathLike] | None = None,
    ):
        self.root = None if root is None else os.fspath(root)
        for name, given in (("annotation_files", annotation_files), ("image_dirs", image_dirs)):
            unknown = set(given or ()) - set(SPLITS)
            if unknown:
                raise ValueError(f"{name} has unknown split(s) {sorted(unknown)}; the splits are {sorted(SPLITS)}")
        self._annotation_files = {k: os.fspath(v) for k, v in (annotation_files or {}).items()}
        self._image_dirs = {k: os.fspath(v) for k, v in (image_dirs or {}).items()}
        if self.root is None:
            for split in SPLITS:
                if (split in self._annotation_files) != (split in self._image_dirs):
                    raise ValueError(
                        f"without root, split {split!r} needs both annotation_files[{split!r}] and image_dirs[{split!r}]"
                    )
            if not self._annotation_files:
                raise ValueError("CocoKeypoints needs root or annotation_files and image_dirs")
        if not _is_number(det_score_threshold):
            raise ValueError(f"det_score_threshold must be a finite number, got {det_score_threshold!r}")
        self.detections = detections if detections is None or isinstance(detections, list) else os.fspath(detections)
        self.det_score_threshold = float(det_score_threshold)
        self._splits: dict[str, _Split] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        if self.detections is None:
            return f"CocoKeypoints({self.root!r})"
        detections = self.detections if isinstance(self.detections, str) else "<list>"
        return f"CocoKeypoints({self.root!r}, detections={detections!r})"

    # paths

    def _check_split(self, split: str) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown COCO keypoints split {split!r}; the splits are {sorted(SPLITS)}")

    def annotation_file(self, split: str) -> str:
        """Path of the split's keypoint annotation file (the ground truth of `evaluate_keypoints`)."""
        self._check_split(split)
        if split in self._annotation_files:
            return self._annotation_files[split]
        if self.root is None:
            raise ValueError(f"no annotation file for split {split!r}: give root or annotation_files[{split!r}]")
        return os.path.join(self.root, "annotations", f"person_keypoints_{SPLITS[split]}.json")

    def image_dir(self, split: str) -> str:
        """Folder of the split's images: `image_dirs[split]`, else `root/<split>2017` or, where only it
        exists, the official `root/images/<split>2017`."""
        self._check_split(split)
        if split in self._image_dirs:
            return self._image_dirs[split]
        if self.root is None:
            raise ValueError(f"no image folder for split {split!r}: give root or image_dirs[{split!r}]")
        plain = os.path.join(self.root, SPLITS[split])
        official = os.path.join(self.root, "images", SPLITS[split])
        return official if not os.path.isdir(plain) and os.path.isdir(official) else plain

    # instances

    def _split(self, split: str) -> _Split:
        self._check_split(split)
        with self._lock:
            if split not in self._splits:
                data, category = _load_annotations(self.annotation_file(split), self.num_joints)
                if split == "val" and self.detections is not None:
                    self._splits[split] = self._detection_instances(data, category)
                else:
                    self._splits[split] = self._ground_truth_instances(split, data, category)
            return self._splits[split]

    def _image_path(self, image_dir: str, image: dict[str, Any]) -> str:
        name = image.get("file_name")
        return os.path.join(image_dir, name if isinstance(name, str) else "%012d.jpg" % image["id"])

    def _ground_truth_instances(self, split: str, data: dict[str, Any], category: dict[str, Any]) -> _Split:
        path = self.annotation_file(split)
        image_dir = self.image_dir(split)
        by_image: dict[Any, list[dict[str, Any]]] = {}
        for ann in data["annotations"]:
            by_image.setdefault(ann["image_id"], []).append(ann)
        paths, boxes, joints, image_ids, scores, areas, ids = [], [], [], [], [], [], []
        for image in data["images"]:
            anns = [a for a in by_image.get(image["id"], ()) if a["category_id"] == category["id"] and not a["iscrowd"]]
            if not anns:
                continue
            width, height = image.get("width"), image.get("height")
            if not (_is_number(width) and _is_number(height) and width > 0 and height > 0):
                raise CocoDataError(f"{path}: image id {image['id']} needs a positive 'width' and 'height'")
            for ann in anns:
                x, y, w, h = ann["bbox"]
                if ann["area"] > 0 and w > 0 and h > 0 and (x >= width or y >= height or x + w <= 0 or y + h <= 0):
                    raise CocoDataError(
                        f"{path}: annotation id {ann['id']} has bbox {ann['bbox']} entirely outside its image "
                        f"(id {image['id']}, {width}x{height})"
                    )
                box = _clean_box(ann["bbox"], width, height)
                if box is None or not ann["area"] > 0:
                    continue
                if box[2] == 0 and box[3] == 0:
                    continue  # a one-pixel box: no crop can be made of it
                if max(ann["keypoints"]) == 0:
                    continue  # no labelled joint
                paths.append(self._image_path(image_dir, image))
                boxes.append(box)
                joints.append(ann["keypoints"])
                image_ids.append(image["id"])
                scores.append(1.0)
                areas.append(ann["area"])
                ids.append(ann["id"])
        return _Split(paths, boxes, joints, image_ids, scores, areas, ids)

    def _detection_instances(self, data: dict[str, Any], category: dict[str, Any]) -> _Split:
        if isinstance(self.detections, list):
            source, results = "detections", self.detections
        else:
            source, results = self.detections, _read_json(self.detections, "detection results file")
        if not isinstance(results, list):
            raise CocoDataError(
                f"{source} is not a COCO detection results file: expected a JSON list of "
                f"{{image_id, category_id, bbox, score}} objects, got a {type(results).__name__}"
            )
        images = {image["id"]: image for image in data["images"]}
        image_dir = self.image_dir("val")
        unknown = []
        paths, boxes, image_ids, scores = [], [], [], []
        for i, det in enumerate(results):
            if not isinstance(det, dict) or not all(k in det for k in ("image_id", "category_id", "bbox", "score")):
                found = sorted(det) if isinstance(det, dict) else type(det).__name__
                raise CocoDataError(
                    f"{source}: detection [{i}] must be an object with image_id, category_id, bbox and score (found {found})"
                )
            if not _numbers(det["bbox"], 4):
                raise CocoDataError(f"{source}: detection [{i}] 'bbox' must be [x, y, w, h] (4 numbers), got {det['bbox']!r}")
            if not _is_number(det["score"]):
                raise CocoDataError(f"{source}: detection [{i}] 'score' must be a number, got {det['score']!r}")
            for key in ("image_id", "category_id"):
                if not isinstance(det[key], int) or isinstance(det[key], bool):
                    raise CocoDataError(f"{source}: detection [{i}] '{key}' must be an integer, got {det[key]!r}")
            if det["image_id"] not in images:
                unknown.append(det["image_id"])
                continue
            if det["category_id"] != category["id"] or det["score"] < self.det_score_threshold:
                continue
            w, h = det["bbox"][2:]
            if w < 0 or h < 0 or (w == 0 and h == 0):
                raise CocoDataError(f"{source}: detection [{i}] has an empty or negative box {det['bbox']}")
            paths.append(self._image_path(image_dir, images[det["image_id"]]))
            boxes.append(det["bbox"])
            image_ids.append(det["image_id"])
            scores.append(det["score"])
        if unknown:
            shown = ", ".join(repr(v) for v in sorted(set(unknown), key=repr)[:5])
            raise CocoDataError(
                f"{source}: {len(unknown)} detection(s) refer to image ids not in {self.annotation_file('val')} "
                f"({shown}{', ...' if len(set(unknown)) > 5 else ''}); is it the detection file of another image set?"
            )
        return _Split(paths, boxes, None, image_ids, scores, [0.0] * len(paths), None)

    def num_examples(self, split: str) -> int:
        return len(self._split(split).paths)

    def _index(self, split: str, index: int) -> tuple[_Split, int]:
        instances = self._split(split)
        n = len(instances.paths)
        if not -n <= index < n:
            raise IndexError(f"{split} index {index} out of range for {n} instances")
        return instances, index % n

    def image_path(self, split: str, index: int) -> str:
        """The image file of instance `index`."""
        instances, index = self._index(split, index)
        return instances.paths[index]

    def name(self, split: str, index: int) -> str:
        """A name of instance `index` for messages: its image file and annotation id."""
        instances, index = self._index(split, index)
        if instances.annotation_ids is None:
            return f"{instances.paths[index]} (detection {index})"
        return f"{instances.paths[index]} (annotation id {instances.annotation_ids[index]})"

    def load(self, split: str, index: int) -> PoseInstance:
        instance = self.annotation(split, index)
        instance.image = load_rgb(self.image_path(split, index))
        return instance

    def annotation(self, split: str, index: int) -> PoseInstance:
        """Instance `index` of `split` without reading its image (`image` None)."""
        instances, index = self._index(split, index)
        joints = None if instances.joints is None else instances.joints[index].copy()
        return PoseInstance(
            image=None,
            box=instances.boxes[index].copy(),
            joints=joints,
            image_id=int(instances.image_ids[index]),
            score=float(instances.scores[index]),
            area=float(instances.areas[index]),
        )


# ------------------------------------------------------------------ OKS-NMS and rescoring


def _check_predictions(
    keypoints: Any, sigmas: Any, **per_instance: Any
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """float64 keypoints (N, K, 3), sigmas (K,) and the (N,) arrays, shapes checked."""
    keypoints = np.asarray(keypoints, np.float64)
    sigmas = np.asarray(sigmas, np.float64)
    if sigmas.ndim != 1 or not len(sigmas):
        raise ValueError(f"sigmas must be a 1-D array of per-joint constants, got shape {sigmas.shape}")
    if keypoints.ndim != 3 or keypoints.shape[1:] != (len(sigmas), 3):
        raise ValueError(f"keypoints must be (N, {len(sigmas)}, 3) (x, y, score per joint), got shape {keypoints.shape}")
    if not np.isfinite(keypoints).all():
        raise ValueError("keypoints hold NaN or infinite values")
    arrays = {}
    for name, value in per_instance.items():
        array = np.asarray(value)
        if array.shape != (len(keypoints),):
            raise ValueError(f"{name} must be ({len(keypoints)},), one per prediction, got shape {array.shape}")
        arrays[name] = array
    return keypoints, sigmas, arrays


def _oks_one(
    g: np.ndarray,
    d: np.ndarray,
    area_g: float,
    areas_d: np.ndarray,
    sigmas: np.ndarray,
    in_vis_threshold: float | None,
) -> np.ndarray:
    """The official `oks_iou` of keypoints g (K, 3) with each of d (M, K, 3)."""
    variances = (sigmas * 2) ** 2
    dx = d[:, :, 0] - g[:, 0]
    dy = d[:, :, 1] - g[:, 1]
    e = (dx**2 + dy**2) / variances / ((area_g + areas_d[:, None]) / 2 + np.spacing(1)) / 2
    if in_vis_threshold is None:
        return np.exp(-e).mean(axis=1)
    # The official selects joints with `list(vg > t) and list(vd > t)`, which is the second list:
    # only the other instance's joint scores count.
    mask = d[:, :, 2] > in_vis_threshold
    count = mask.sum(axis=1)
    total = np.where(mask, np.exp(-e), 0.0).sum(axis=1)
    return np.where(count > 0, total / np.maximum(count, 1), 0.0)


def oks_nms(
    keypoints: np.ndarray,
    scores: np.ndarray,
    areas: np.ndarray,
    threshold: float = OKS_THRESHOLD,
    sigmas: np.ndarray = COCO_SIGMAS,
    in_vis_threshold: float | None = None,
) -> np.ndarray:
    """Indices (int, best first) of the poses the official greedy OKS-NMS keeps: the highest score
    is kept and every remaining pose whose OKS with it exceeds `threshold` is removed, repeatedly.

    `keypoints` (N, K, 3): x, y and a joint score; `areas` (N,) the OKS scale of each pose. OKS
    between poses a and b is the mean over joints of `exp(-d^2 / (2 (2 sigma)^2 (area_a + area_b) / 2))`;
    with `in_vis_threshold`, only the joints whose score in b exceeds it (the official's
    selection; 0 when none).
    """
    keypoints, sigmas, arrays = _check_predictions(keypoints, sigmas, scores=scores, areas=areas)
    scores, areas = arrays["scores"].astype(np.float64), arrays["areas"].astype(np.float64)
    order = scores.argsort()[::-1]
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        oks = _oks_one(keypoints[i], keypoints[rest], areas[i], areas[rest], sigmas, in_vis_threshold)
        order = rest[oks <= threshold]
    return np.asarray(keep, np.intp)


def _rescore(
    keypoints: np.ndarray,
    image_ids: np.ndarray,
    box_scores: np.ndarray,
    areas: np.ndarray,
    oks_threshold: float,
    in_vis_threshold: float,
    sigmas: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    joint_scores = keypoints[:, :, 2]
    valid = joint_scores > in_vis_threshold
    count = valid.sum(axis=1)
    mean = np.where(count > 0, np.where(valid, joint_scores, 0.0).sum(axis=1) / np.maximum(count, 1), 0.0)
    scores = mean * box_scores
    groups: dict[Any, list[int]] = {}
    for i, image_id in enumerate(image_ids.tolist()):
        groups.setdefault(image_id, []).append(i)
    kept = []
    for members in groups.values():
        members = np.asarray(members, np.intp)
        keep = oks_nms(keypoints[members], scores[members], areas[members], oks_threshold, sigmas)
        kept.extend(members[keep].tolist())
    return np.asarray(kept, np.intp), scores


def rescore(
    keypoints: np.ndarray,
    image_ids: np.ndarray,
    box_scores: np.ndarray,
    areas: np.ndarray,
    *,
    oks_threshold: float = OKS_THRESHOLD,
    in_vis_threshold: float = IN_VIS_THRESHOLD,
    sigmas: np.ndarray = COCO_SIGMAS,
) -> tuple[np.ndarray, np.ndarray]:
    """`(kept, scores)`: the official evaluation's rescoring and per-image OKS-NMS.

    `scores` (N,) float64: each box score times the mean of its joint scores above
    `in_vis_threshold` (0 where none is). `kept`: indices of the poses OKS-NMS (`oks_threshold`,
    on the new scores and `areas`) keeps in each image, images in order of first appearance, each
    image's best first (the order of the official result file).
    """
    keypoints, sigmas, arrays = _check_predictions(
        keypoints, sigmas, image_ids=image_ids, box_scores=box_scores, areas=areas
    )
    return _rescore(
        keypoints,
        arrays["image_ids"],
        arrays["box_scores"].astype(np.float64),
        arrays["areas"].astype(np.float64),
        oks_threshold,
        in_vis_threshold,
        sigmas,
    )


# ------------------------------------------------------------------ evaluation


def evaluate_keypoints(
    keypoints: np.ndarray,
    image_ids: np.ndarray,
    box_scores: np.ndarray,
    areas: np.ndarray,
    annotation_file: str | os.PathLike,
    *,
    rescore: bool = True,
    oks_threshold: float = OKS_THRESHOLD,
    in_vis_threshold: float = IN_VIS_THRESHOLD,
    sigmas: np.ndarray = COCO_SIGMAS,
) -> dict[str, float]:
    """COCO keypoint AP and AR, in percent, of pose predictions against `annotation_file`:
    `{"ap", "ap50", "ap75", "apm", "apl", "ar", "ar50", "ar75", "arm", "arl"}` (NaN where COCOeval
    has nothing to measure, e.g. no medium persons).

    `keypoints` (N, K, 3): x, y in image pixels and the joint score; `image_ids` (N,) the images'
    COCO ids; `box_scores` (N,) the person boxes' scores; `areas` (N,) the OKS-NMS scale of each
    pose (the official: crop box area). With `rescore` (the official evaluation), scores are
    rescored and OKS-NMS'd as `rescore`; without, every prediction counts with its box score.
    Every image of the annotation file is evaluated, with or without predictions.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    keypoints, sigmas, arrays = _check_predictions(
        keypoints, sigmas, image_ids=image_ids, box_scores=box_scores, areas=areas
    )
    if not len(keypoints):
        raise ValueError("no pose predictions to evaluate (keypoints has 0 rows); COCOeval needs at least one")
    ids, box_scores_ = arrays["image_ids"], arrays["box_scores"].astype(np.float64)
    if not np.issubdtype(ids.dtype, np.integer):
        if not (np.issubdtype(ids.dtype, np.floating) and np.all(ids == np.round(ids))):
            raise ValueError(f"image_ids must be integer COCO image ids, got dtype {ids.dtype}")
        ids = ids.astype(np.int64)
    if not np.isfinite(box_scores_).all():
        raise ValueError("box_scores hold NaN or infinite values")
    path = os.fspath(annotation_file)
    data, category = _load_annotations(path, len(sigmas))
    known = {image["id"] for image in data["images"]}
    unknown = sorted({int(i) for i in ids.tolist()} - known)
    if unknown:
        shown = ", ".join(str(i) for i in unknown[:5]) + (", ..." if len(unknown) > 5 else "")
        raise ValueError(f"predictions for {len(unknown)} image id(s) not in {path}: {shown}")
    if rescore:
        kept, scores = _rescore(
            keypoints, ids, box_scores_, arrays["areas"].astype(np.float64), oks_threshold, in_vis_threshold, sigmas
        )
    else:
        kept, scores = np.arange(len(keypoints)), box_scores_
    results = [
        {
            "image_id": int(ids[i]),
            "category_id": category["id"],
            "keypoints": keypoints[i].reshape(-1).tolist(),
            "score": float(scores[i]),
        }
        for i in kept.tolist()
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = data
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(results)
        coco_eval = COCOeval(coco_gt, coco_dt, iouType="keypoints")
        coco_eval.params.kpt_oks_sigmas = sigmas
        coco_eval.params.catIds = [category["id"]]  # other categories have no keypoints
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    stats = np.asarray(coco_eval.stats, np.float64)
    return {name: (float(v) * 100.0 if v >= 0 else float("nan")) for name, v in zip(METRIC_NAMES, stats)}
