"""The embedded stick-figure pose demo: format, determinism, splits, geometry (joints inside the
image, left joints on the image's right, a mirror-symmetric pose distribution), the drawing, PCK
against a direct loop, and the mean-pose baseline the demo must beat."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hrnet_flax.data import figures
from hrnet_flax.data.figures import FiguresSource, joint_box, segment_coverage
from hrnet_flax.data.pose import PoseInstance, PoseSource
from hrnet_flax.tasks.pose import pck

COCO_JOINTS = [
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
    "right_knee", "left_ankle", "right_ankle",
]  # fmt: skip
TRAIN_SAMPLE = 1024


@pytest.fixture(scope="module")
def source() -> FiguresSource:
    return FiguresSource()


@pytest.fixture(scope="module")
def train(source):
    """The first `TRAIN_SAMPLE` train figures: images, joints, boxes."""
    return source.arrays("train", range(TRAIN_SAMPLE))


@pytest.fixture(scope="module")
def val(source):
    return source.arrays("val")


def mean_pose_pck(train_arrays, val_arrays, threshold: float = 0.1) -> float:
    """PCK of predicting, inside each val box, the train figures' mean joint positions relative to
    their boxes (x, y scaled by the box's w, h)."""
    _, joints, boxes = train_arrays
    mean = ((joints[..., :2] - boxes[:, None, :2]) / boxes[:, None, 2:]).mean(0)
    _, val_joints, val_boxes = val_arrays
    pred = val_boxes[:, None, :2] + mean[None] * val_boxes[:, None, 2:]
    correct, counted = pck(pred, val_joints, val_boxes, threshold)
    return correct / counted


def pck_loop(pred, joints, boxes, threshold):
    correct = counted = 0
    for n in range(len(joints)):
        limit = threshold * max(boxes[n][2], boxes[n][3])
        for k in range(len(joints[n])):
            if joints[n][k][2] > 0:
                counted += 1
                dx, dy = pred[n][k][0] - joints[n][k][0], pred[n][k][1] - joints[n][k][1]
                correct += math.sqrt(dx * dx + dy * dy) <= limit
    return correct, counted


def test_joint_metadata(source):
    assert isinstance(source, PoseSource)
    assert list(source.joint_names) == COCO_JOINTS and source.num_joints == 17
    assert source.flip_pairs == ((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))
    for left, right in source.flip_pairs:
        assert COCO_JOINTS[left].replace("left_", "right_") == COCO_JOINTS[right]
    assert source.upper_body == tuple(range(11))
    assert source.num_examples("train") == 4096 and source.num_examples("val") == 256
    small = FiguresSource(train_size=10, val_size=3)
    assert small.num_examples("train") == 10 and small.num_examples("val") == 3


@pytest.mark.parametrize("image_size", [(64, 64), (64, 96), (96, 64)])
def test_instance_format(image_size):
    height, width = image_size
    source = FiguresSource(image_size, val_size=4)
    for split in ("train", "val"):
        instance = source.load(split, 3)
        assert isinstance(instance, PoseInstance)
        assert instance.image.dtype == np.uint8 and instance.image.shape == (height, width, 3)
        assert instance.box.shape == (4,) and instance.joints.shape == (17, 3)
        assert instance.image_id == 3 and instance.score == 1.0
        assert np.all(instance.joints[:, 2] == 2)
        # The area is the figure's anti-aliased pixel count: a good part of the joint box.
        assert 0.1 * instance.box[2] * instance.box[3] < instance.area < height * width
    assert FiguresSource(64).image_size == (64, 64)


def test_deterministic_and_order_independent(source):
    fresh = FiguresSource()
    for split, index in (("train", 5), ("train", 4095), ("val", 7)):
        a, b = source.load(split, index), fresh.load(split, index)
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.joints, b.joints)
        np.testing.assert_array_equal(a.box, b.box)
    images, joints, _ = source.arrays("train", [9, 2])
    np.testing.assert_array_equal(images[1], fresh.load("train", 2).image)
    np.testing.assert_array_equal(joints[0], fresh.load("train", 9).joints)
    # Another seed gives other figures.
    other = FiguresSource(seed=1)
    assert not np.array_equal(other.load("train", 5).joints, source.load("train", 5).joints)
    # The cached val set hands out copies.
    loaded = source.load("val", 0)
    loaded.image[:] = 0
    loaded.joints[:] = -1
    assert source.load("val", 0).image.any() and source.load("val", 0).joints.min() >= 0


def test_splits_differ(train, val):
    train_images, train_joints, _ = train
    val_images, val_joints, _ = val
    assert not np.array_equal(train_images[: len(val_images)], val_images)
    assert not {image.tobytes() for image in train_images} & {image.tobytes() for image in val_images}
    assert np.abs(train_joints[: len(val_joints)] - val_joints).max() > 1.0
    # Figures differ from one another within a split too.
    flat = val_images.reshape(len(val_images), -1)
    assert len({row.tobytes() for row in flat}) == len(flat)


def test_joints_inside_image_and_box(source, train, val):
    height, width = source.image_size
    for _, joints, boxes in (train, val):
        visible = joints[..., 2] > 0
        assert visible.all()
        x, y = joints[..., 0], joints[..., 1]
        assert (x[visible] >= 0).all() and (x[visible] <= width - 1).all()
        assert (y[visible] >= 0).all() and (y[visible] <= height - 1).all()
        x0, y0, w, h = boxes.T
        assert (x0 >= 0).all() and (y0 >= 0).all() and (x0 + w <= width - 1 + 1e-9).all() and (y0 + h <= height - 1 + 1e-9).all()
        assert (x >= x0[:, None] - 1e-9).all() and (x <= (x0 + w)[:, None] + 1e-9).all()
        assert (y >= y0[:, None] - 1e-9).all() and (y <= (y0 + h)[:, None] + 1e-9).all()
        # Figures take 50-90% of the image height before a wide pose is fitted in: boxes are large.
        assert np.median(np.maximum(w, h)) > 0.4 * height


def test_joint_box_matches_direct_formula():
    rng = np.random.default_rng(0)
    for _ in range(20):
        joints = np.concatenate([rng.uniform(-5, 70, (17, 2)), rng.integers(0, 3, (17, 1))], -1)
        joints[0, 2] = 2
        labelled = [(x, y) for x, y, v in joints if v > 0]
        x0, x1 = min(p[0] for p in labelled), max(p[0] for p in labelled)
        y0, y1 = min(p[1] for p in labelled), max(p[1] for p in labelled)
        grow = 0.1 * max(x1 - x0, y1 - y0)
        left, top = max(x0 - grow, 0.0), max(y0 - grow, 0.0)
        right, bottom = min(x1 + grow, 95.0), min(y1 + grow, 63.0)
        np.testing.assert_allclose(joint_box(joints, 64, 96), [left, top, right - left, bottom - top], atol=1e-12)
    with pytest.raises(ValueError, match="no labelled joints"):
        joint_box(np.zeros((17, 3)), 64, 64)
    with pytest.raises(ValueError, match=r"\(K, 3\)"):
        joint_box(np.zeros((17, 2)), 64, 64)


def test_left_joints_on_image_right(train, val):
    """Front-facing figures: the person's left joints lie right (in image x) of their right partners."""
    for _, joints, _ in (train, val):
        for left, right in figures.FLIP_PAIRS:
            assert (joints[:, left, 0] > joints[:, right, 0]).all(), (COCO_JOINTS[left], COCO_JOINTS[right])
        # Seen from the front, the nose is below the line from the right eye to the left eye
        # (whatever the tilt): the cross product of (left eye - right eye, nose - right eye) is positive.
        eyes, nose = joints[:, 1, :2] - joints[:, 2, :2], joints[:, 0, :2] - joints[:, 2, :2]
        assert (eyes[:, 0] * nose[:, 1] - eyes[:, 1] * nose[:, 0] > 0).all()


def test_pose_distribution_is_mirror_symmetric(train):
    """A horizontal flip with the pair swap gives figures like the originals: the mean box-relative
    pose is its own mirror image (x of a left joint = 1 - x of its right partner)."""
    _, joints, boxes = train
    relative = (joints[..., :2] - boxes[:, None, :2]) / boxes[:, None, 2:]
    mean, spread = relative.mean(0), relative.std(0)
    swap = np.arange(17)
    for left, right in figures.FLIP_PAIRS:
        swap[[left, right]] = right, left
    mirrored = np.stack([1.0 - mean[swap, 0], mean[swap, 1]], -1)
    # Equal up to sampling noise: 4 standard errors of a difference of two means.
    assert (np.abs(mirrored - mean) < 4 * np.sqrt(2) * spread / np.sqrt(len(relative)) + 1e-3).all()
    assert np.abs(mirrored - mean).max() < 0.03
    # ... and the poses do vary: the wrists are spread over much of the box.
    assert (spread[9:11] > 0.15).all()


def test_figure_drawn_at_the_limb_joints(val):
    """Every shoulder, elbow, wrist, hip, knee and ankle pixel has the figure's colour, far from the
    background (the median of the image's border); random pixels mostly do not."""
    images, joints, _ = val
    border = np.concatenate([images[:, 0], images[:, -1], images[:, :, 0], images[:, :, -1]], 1).astype(np.float64)
    background = np.median(border, 1)
    xy = np.rint(joints[:, 5:, :2]).astype(int)
    at_joints = images[np.arange(len(images))[:, None], xy[..., 1], xy[..., 0]].astype(np.float64)
    assert (np.linalg.norm(at_joints - background[:, None], axis=-1) > 60).all()
    rng = np.random.default_rng(0)
    points = rng.integers(0, 64, (len(images), 64, 2))
    at_random = images[np.arange(len(images))[:, None], points[..., 1], points[..., 0]].astype(np.float64)
    assert (np.linalg.norm(at_random - background[:, None], axis=-1) > 60).mean() < 0.4


def test_segment_coverage_matches_supersampling():
    """Anti-aliased thick segments and discs against the covered fraction of 16x16 subsamples per pixel."""
    size, sub = 20, 16
    offsets = (np.arange(sub) + 0.5) / sub - 0.5
    rng = np.random.default_rng(1)
    a = rng.uniform(3, 17, (6, 2))
    b = np.concatenate([rng.uniform(3, 17, (4, 2)), a[4:]])  # two discs
    half = rng.uniform(0.7, 3.0, 6)
    coverage = segment_coverage(a, b, half, size, size)
    assert coverage.shape == (6, size, size) and coverage.dtype == np.float32
    centres = np.arange(size)[:, None] + offsets[None]  # (pixel, subsample)
    ys = centres[:, None, :, None]  # pixel row, pixel column, subsample row, subsample column
    xs = centres[None, :, None, :]
    for k in range(6):
        d = b[k] - a[k]
        t = np.clip(((xs - a[k, 0]) * d[0] + (ys - a[k, 1]) * d[1]) / max(d @ d, 1e-12), 0, 1)
        distance = np.hypot(xs - a[k, 0] - t * d[0], ys - a[k, 1] - t * d[1])
        reference = (distance <= half[k]).mean((2, 3))
        assert np.abs(coverage[k] - reference).max() < 0.3
        assert np.abs(coverage[k] - reference).mean() < 0.02
        assert abs(coverage[k].sum() - reference.sum()) < 0.03 * reference.sum() + 0.5
    disc = coverage[4].sum()
    assert abs(disc - math.pi * half[4] ** 2) < 0.05 * math.pi * half[4] ** 2 + 0.5


def test_pck_matches_loop():
    rng = np.random.default_rng(2)
    joints = np.concatenate([rng.uniform(0, 64, (30, 17, 2)), rng.integers(0, 3, (30, 17, 1))], -1)
    boxes = np.concatenate([rng.uniform(0, 10, (30, 2)), rng.uniform(5, 50, (30, 2))], -1)
    pred = joints[..., :2] + rng.normal(0, 4, (30, 17, 2))
    for threshold in (0.05, 0.1, 0.2):
        got = pck(pred, joints, boxes, threshold)
        assert got == pck_loop(pred, joints, boxes, threshold)
        assert isinstance(got[0], int) and isinstance(got[1], int) and 0 < got[0] < got[1]
    # A joint exactly at the threshold counts as correct; unlabelled joints are not counted.
    joints = np.array([[[10.0, 10.0, 2.0], [20.0, 20.0, 0.0]]])
    assert pck(np.array([[[13.0, 14.0], [90.0, 90.0]]]), joints, np.array([[0.0, 0.0, 30.0, 50.0]]), 0.1) == (1, 1)
    assert pck(np.array([[[13.0, 14.01], [20.0, 20.0]]]), joints, np.array([[0.0, 0.0, 30.0, 50.0]]), 0.1) == (0, 1)


def test_pck_rejects_bad_input():
    joints, boxes = np.zeros((2, 17, 3)), np.ones((2, 4))
    with pytest.raises(ValueError, match="pred"):
        pck(np.zeros((2, 16, 2)), joints, boxes)
    with pytest.raises(ValueError, match="joints"):
        pck(np.zeros((2, 17, 2)), np.zeros((2, 17, 2)), boxes)
    with pytest.raises(ValueError, match="boxes"):
        pck(np.zeros((2, 17, 2)), joints, np.ones((3, 4)))
    with pytest.raises(ValueError, match="threshold"):
        pck(np.zeros((2, 17, 2)), joints, boxes, 0.0)


def test_bad_arguments(source):
    with pytest.raises(ValueError, match="split 'test'"):
        source.load("test", 0)
    with pytest.raises(ValueError, match="split"):
        source.num_examples("validation")
    for index in (-1, 256, 1.0):
        with pytest.raises(ValueError, match=r"val index must be an integer in \[0, 256\)"):
            source.load("val", index)
    with pytest.raises(ValueError, match="train index"):
        source.arrays("train", [0, 4096])
    for size in (50, (64,), (64, 48), (0, 64), "64"):
        with pytest.raises(ValueError, match="image_size"):
            FiguresSource(size)
    with pytest.raises(ValueError, match="seed"):
        FiguresSource(seed=-1)
    with pytest.raises(ValueError, match="val_size"):
        FiguresSource(val_size=0)


def test_mean_pose_baseline_is_weak(train, val):
    """Predicting the mean pose in each box must score under 30% PCK@0.1 (the figures vary enough that
    a model has to look at them), while the truth scores 100%."""
    score = mean_pose_pck(train, val)
    assert 0.05 < score < 0.3, score
    _, joints, boxes = val
    assert pck(joints[..., :2], joints, boxes) == (joints.shape[0] * 17, joints.shape[0] * 17)
