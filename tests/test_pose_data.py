"""Top-down pose pipelines on a synthetic source whose joints are coloured discs: training crops and
targets follow the joints through every augmentation, streams are deterministic, resumable and
split over processes, and evaluation covers every instance once with its float64 crop table."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from hrnet_flax.data import keypoints as kp
from hrnet_flax.data import pose
from hrnet_flax.data.images import UnreadableImageError
from hrnet_flax.data.segmentation import IMAGENET_MEAN, IMAGENET_STD

MEAN = np.array(IMAGENET_MEAN, np.float32)
STD = np.array(IMAGENET_STD, np.float32)
COLOURS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]], np.float32)
PAIRS = ((0, 1), (2, 3))
PERM = np.array([1, 0, 3, 2])
SIZE = (64, 64)


def unnormalize(image: np.ndarray) -> np.ndarray:
    return (image * STD + MEAN) * 255.0


class Figures(pose.PoseSource):
    """Instance i: a black image with four coloured discs (radius 7) at the joints, the corners of a
    40x60 rectangle inside the box; the left joints (0, 2) pair with the right ones (1, 3).
    Joint 3 is unlabelled (and not drawn) in every third instance."""

    num_joints = 4
    flip_pairs = PAIRS
    joint_names = ("left_top", "right_top", "left_bottom", "right_bottom")
    upper_body = (0, 1)

    def __init__(self, n: int = 6, joints: bool = True, broken: dict | None = None):
        self.n, self.with_joints, self.broken = n, joints, broken or {}
        self.loads = 0

    def __repr__(self) -> str:
        return f"Figures({self.n})"

    def num_examples(self, split: str) -> int:
        return self.n

    def instance(self, index: int, image: bool = True) -> pose.PoseInstance:
        rng = np.random.default_rng(index)
        h, w = 110 + 10 * (index % 3), 150
        x0, y0 = rng.uniform(5, w - 70), rng.uniform(5, h - 90)
        joints = np.array([[x0 + 10, y0 + 10, 2], [x0 + 50, y0 + 10, 2], [x0 + 10, y0 + 70, 1], [x0 + 50, y0 + 70, 2]])
        if index % 3 == 0:
            joints[3] = [0, 0, 0]
        pixels = None
        if image:
            pixels = np.zeros((h, w, 3), np.uint8)
            ys, xs = np.mgrid[0:h, 0:w]
            for k, (x, y, v) in enumerate(joints):
                if v > 0:
                    pixels[(xs - x) ** 2 + (ys - y) ** 2 <= 49] = COLOURS[k].astype(np.uint8)
        return pose.PoseInstance(
            image=pixels, box=np.array([x0, y0, 60.0, 80.0]), joints=joints if self.with_joints else None,
            image_id=100 + index // 2, score=0.5 + index / 10, area=1000.0 + index,
        )  # fmt: skip

    def load(self, split: str, index: int) -> pose.PoseInstance:
        self.loads += 1
        if index in self.broken:
            return self.broken[index](self.instance(index))
        return self.instance(index)

    def annotation(self, split: str, index: int) -> pose.PoseInstance:
        if index in self.broken:
            return self.broken[index](self.instance(index, image=False))
        return self.instance(index, image=False)


def take(iterator, n):
    return [next(iterator) for _ in range(n)]


def train(source=None, **kwargs):
    args = dict(batch_size_per_process=3, image_size=SIZE, sigma=1.0, workers=2)
    args.update(kwargs)
    return pose.train_dataset(source or Figures(), **args)


# ------------------------------------------------------------------ training


def test_train_batches_have_the_documented_format():
    batch = next(train())
    assert batch["image"].shape == (3, 64, 64, 3) and batch["image"].dtype == np.float32
    assert batch["target"].shape == (3, 16, 16, 4) and batch["target"].dtype == np.float32
    assert batch["target_weight"].shape == (3, 4) and batch["target_weight"].dtype == np.float32
    assert batch["mask"].dtype == bool and batch["mask"].all()
    assert set(batch) == {"image", "target", "target_weight", "mask"}


@pytest.mark.parametrize("codec", ["msra", "udp"])
def test_augmented_joints_land_on_their_discs_and_targets(codec):
    """Through half body, scale, rotation, flip and the warp, each labelled joint's crop position
    shows its own disc (its pair's after a flip: the pairs swap), and the target peak sits on it."""
    source = Figures()
    augment = pose.PoseAugmentation(
        image_size=SIZE, sigma=1.0, codec=codec, flip_pairs=PAIRS, upper_body=(0, 1), half_body_prob=0.5,
        half_body_min_joints=3,
    )  # fmt: skip
    flips, checked, rotated = set(), 0, 0
    for trial in range(40):
        index = trial % source.n
        instance = pose.check_instance(source.load("train", index), source, "train", index, need_joints=True)
        out = augment(instance, np.random.default_rng(trial))
        flips.add(out["flipped"])
        rotated += out["rotation"] != 0
        image = unnormalize(out["image"])
        joints, weight, target = out["joints"], out["target_weight"], out["target"]
        labelled = instance.joints[:, 2] > 0
        expected_labelled = labelled[PERM] if out["flipped"] else labelled
        assert np.array_equal(weight > 0, expected_labelled & (weight > 0))
        for k in np.flatnonzero(~expected_labelled):
            assert weight[k] == 0 and target[..., k].max() == 0
        for k in np.flatnonzero(expected_labelled):
            x, y = joints[k, :2]
            if not (4 <= x < 60 and 4 <= y < 60):
                continue
            colour = COLOURS[PERM[k] if out["flipped"] else k]
            np.testing.assert_allclose(image[int(round(y)), int(round(x))], colour, atol=12)
            peak = np.unravel_index(np.argmax(target[..., k]), target.shape[:2])
            if codec == "msra":
                assert peak == (int(y / 4 + 0.5), int(x / 4 + 0.5))
            else:
                np.testing.assert_allclose(peak, np.array([y, x]) * 15 / 63, atol=0.5 + 1e-9)
            assert weight[k] == 1
            checked += 1
    assert flips == {True, False} and rotated > 5 and checked > 60


def test_augmentation_draws_follow_the_official_distributions():
    instance = Figures().instance(1)
    augment = pose.PoseAugmentation(image_size=SIZE, flip_pairs=PAIRS, upper_body=(0, 1), half_body_prob=0.0)
    base_center, base_scale = kp.box_to_center_scale(instance.box, 1.0)
    scales, rotations = [], []
    for seed in range(300):
        out = augment(instance, np.random.default_rng(seed))
        scales.append(out["scale"][0] / base_scale[0])
        rotations.append(out["rotation"])
        if not out["flipped"]:
            np.testing.assert_allclose(out["center"], base_center)
        else:  # centre x -> width - x - 1
            np.testing.assert_allclose(out["center"], [instance.image.shape[1] - base_center[0] - 1, base_center[1]])
    scales, rotations = np.array(scales), np.array(rotations)
    assert scales.min() >= 0.65 - 1e-12 and scales.max() <= 1.35 + 1e-12 and np.isclose(scales.max(), 1.35)
    assert np.abs(rotations).max() <= 90 and 0.5 < np.mean(rotations != 0) < 0.7


def test_half_body_crop_centres_on_the_chosen_joints():
    instance = Figures().instance(1)
    augment = pose.PoseAugmentation(
        image_size=SIZE, flip_pairs=PAIRS, upper_body=(0, 1), half_body_prob=1.0, half_body_min_joints=3,
        scale_factor=0.0, rotation_prob=0.0, flip=False,
    )  # fmt: skip
    out = augment(instance, np.random.default_rng(0))
    # upper body (0, 1) and the rest (2, 3) have 2 joints each (not > 2): the upper body is chosen
    chosen = instance.joints[:2, :2]
    np.testing.assert_allclose(out["center"], chosen.mean(0))
    width = chosen[1, 0] - chosen[0, 0]
    np.testing.assert_allclose(out["scale"], [width / 200 * 1.5] * 2)
    fewer = dataclasses.replace(augment, half_body_min_joints=4)  # 4 labelled: not > 4
    np.testing.assert_allclose(fewer(instance, np.random.default_rng(0))["center"], kp.box_to_center_scale(instance.box, 1.0)[0])


def test_train_is_deterministic_and_resumable():
    first = take(train(seed=3), 5)
    again = take(train(seed=3), 5)
    for a, b in zip(first, again):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    resumed = take(train(seed=3, start_step=3), 2)  # crosses the epoch boundary (6 instances, 3 a step)
    for a, b in zip(first[3:], resumed):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    other = next(train(seed=4))
    assert not np.array_equal(other["image"], first[0]["image"])


def test_process_shares_make_the_global_batch():
    whole = take(train(batch_size_per_process=4, seed=1, process_index=0, process_count=1), 3)
    parts = [take(train(batch_size_per_process=2, seed=1, process_index=p, process_count=2), 3) for p in range(2)]
    for step in range(3):
        for key in whole[step]:
            joined = np.concatenate([parts[0][step][key], parts[1][step][key]])
            np.testing.assert_array_equal(joined, whole[step][key])


def broken(**changes):
    def apply(instance):
        for key, value in changes.items():
            setattr(instance, key, value)
        return instance

    return apply


@pytest.mark.parametrize(
    "change, message",
    [
        (broken(joints=None), r"train\[2\] of Figures\(6\) has no joints"),
        (broken(joints=np.zeros((5, 3))), r"train\[2\].*joints have shape \(5, 3\), expected \(4, 3\)"),
        (broken(box=np.array([1.0, 2.0, 0.0, 0.0])), r"train\[2\].*box .* positive width or height"),
        (broken(box=np.array([1.0, np.nan, 3.0, 5.0])), r"train\[2\].*box .* finite"),
        (broken(image=np.zeros((10, 10), np.uint8)), r"train\[2\].*uint8 RGB \(H, W, 3\)"),
    ],
)
def test_training_errors_name_the_instance(change, message):
    batches = train(Figures(broken={2: change}), batch_size_per_process=6)
    with pytest.raises(ValueError, match=message):
        next(batches)


def test_bad_settings_are_errors():
    with pytest.raises(ValueError, match="multiples of 32"):
        train(image_size=(256, 190))
    with pytest.raises(ValueError, match="unknown heatmap codec"):
        train(codec="dark")
    with pytest.raises(ValueError, match="batch_size_per_process"):
        train(batch_size_per_process=0)
    with pytest.raises(ValueError, match="rotation_prob"):
        train(rotation_prob=1.5)
    bad = Figures()
    bad.flip_pairs = ((0, 4),)
    with pytest.raises(ValueError, match=r"flip pair \(0, 4\)"):
        train(bad)


# ------------------------------------------------------------------ evaluation


def test_eval_covers_every_instance_once_with_padding_masked():
    source = Figures(n=5)
    seen = []
    contexts = []
    for p in range(2):
        batches = pose.eval_dataset(
            source, "val", batch_size_per_process=2, image_size=SIZE, process_index=p, process_count=2, workers=2
        )
        assert len(batches) == 2 and batches.total_examples == 5
        contexts.append(batches.context)
        out = list(batches)
        assert len(out) == 2
        for batch in out:
            assert set(batch) == {"image", "mask", "crop_id"}
            assert batch["image"].shape == (2, 64, 64, 3) and batch["crop_id"].dtype == np.int32
            assert (batch["crop_id"][~batch["mask"]] == -1).all() and (batch["image"][~batch["mask"]] == 0).all()
            seen.extend(batch["crop_id"][batch["mask"]].tolist())
    assert sorted(seen) == list(range(5)) and seen == list(range(5))  # in order, each once
    for key in ("center", "scale", "score", "image_id", "area", "box", "joints"):
        np.testing.assert_array_equal(getattr(contexts[0], key), getattr(contexts[1], key))
    one = list(pose.eval_dataset(source, "val", batch_size_per_process=4, image_size=SIZE, process_index=0, process_count=1))
    assert [b["mask"].sum() for b in one] == [4, 1]


@pytest.mark.parametrize("codec", ["msra", "udp"])
def test_eval_context_geometry_and_crops(codec):
    source = Figures(n=4)
    batches = pose.PoseEvalBatches(
        source, "val", batch_size_per_process=4, image_size=SIZE, codec=codec, process_index=0, process_count=1
    )
    ctx = batches.context
    assert isinstance(ctx, pose.PoseEvalContext) and len(ctx) == 4
    assert ctx.image_size == (64, 64) and ctx.heatmap_size == (16, 16) and ctx.codec == codec
    assert ctx.num_joints == 4 and ctx.flip_pairs == PAIRS and ctx.source is source and ctx.split == "val"
    assert ctx.center.dtype == ctx.scale.dtype == ctx.box.dtype == ctx.joints.dtype == np.float64
    assert ctx.image_id.dtype == np.int64 and ctx.joints.shape == (4, 4, 3)
    for i in range(4):
        instance = source.instance(i)
        center, scale = kp.box_to_center_scale(instance.box, 1.0)
        np.testing.assert_array_equal(ctx.center[i], center)
        np.testing.assert_array_equal(ctx.scale[i], scale)
        np.testing.assert_array_equal(ctx.box[i], instance.box)
        np.testing.assert_array_equal(ctx.joints[i], instance.joints)
        assert (ctx.score[i], ctx.image_id[i], ctx.area[i]) == (0.5 + i / 10, 100 + i // 2, 1000.0 + i)
    (batch,) = list(batches)
    for row, i in enumerate(batch["crop_id"]):
        instance = source.instance(int(i))
        matrix = (kp.udp_transform if codec == "udp" else kp.crop_transform)(ctx.center[i], ctx.scale[i], 0.0, SIZE)
        image = unnormalize(batch["image"][row])
        reference = cv2.warpAffine(instance.image, matrix, (64, 64), flags=cv2.INTER_LINEAR)
        assert np.abs(image - reference).max() < 2.0
        for k, (x, y) in enumerate(kp.transform_points(instance.joints[:, :2], matrix)):
            if instance.joints[k, 2] > 0:
                np.testing.assert_allclose(image[int(round(y)), int(round(x))], COLOURS[k], atol=12)
    assert source.loads == 4  # the crop table came from annotations, not images


def test_eval_context_without_ground_truth_and_mixed():
    ctx = pose.eval_dataset(Figures(n=3, joints=False), "val", batch_size_per_process=2, image_size=SIZE,
                            process_index=0, process_count=1).context  # fmt: skip
    assert ctx.joints is None and ctx.center.shape == (3, 2)
    mixed = Figures(n=3, broken={1: broken(joints=None)})
    with pytest.raises(ValueError, match=r"mixes instances with and without joints .*val\[1\]"):
        pose.eval_dataset(mixed, "val", batch_size_per_process=2, image_size=SIZE, process_index=0, process_count=1)
    with pytest.raises(ValueError, match=r"val\[2\].*joints have shape \(4, 2\)"):
        pose.eval_dataset(Figures(n=3, broken={2: broken(joints=np.zeros((4, 2)))}), "val", batch_size_per_process=2,
                          image_size=SIZE, process_index=0, process_count=1)  # fmt: skip


def test_eval_skips_and_lists_unreadable_images():
    def unreadable(instance):
        if instance.image is not None:
            raise UnreadableImageError("cannot read image bad.jpg", "bad.jpg")
        return instance

    source = Figures(n=3, broken={1: unreadable})
    batches = pose.eval_dataset(source, "val", batch_size_per_process=2, image_size=SIZE, process_index=0, process_count=1)
    out = list(batches)
    assert len(out) == 2 and batches.unreadable == ["bad.jpg"]
    ids = [i for b in out for i in b["crop_id"][b["mask"]].tolist()]
    assert ids == [0, 2] and out[1]["mask"].sum() == 0
