"""The pose task: the official loss, the flip test, decoding rows, every crop scored exactly once,
PCK and COCO AP from the crop table, and the training config's pose settings."""

from __future__ import annotations

import dataclasses
import json

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from hrnet_flax.data import keypoints as kp
from hrnet_flax.data import pose as pose_data
from hrnet_flax.data.pose import PoseInstance, PoseSource
from hrnet_flax.tasks import Pose, get_task
from hrnet_flax.tasks.pose import heatmap_loss, infer_heatmaps, pck
from hrnet_flax.train.config import TrainConfig, apply_overrides, pose_demo_config

PAIRS = ((1, 2), (3, 4))


def test_loss_is_the_official_joints_mse():
    """0.5 x MSE(pred x w, target x w) per joint, averaged over joints (torch, as `JointsMSELoss`),
    over the unmasked rows only."""
    rng = np.random.default_rng(0)
    pred, target = rng.normal(size=(2, 3, 4, 6, 5)).astype(np.float32)
    weight = rng.integers(0, 2, size=(3, 5)).astype(np.float32)
    mask = np.array([True, True, False])

    def official(p, t, w):  # NCHW-flattened as lib/core/loss.py
        p, t, w = (torch.from_numpy(np.ascontiguousarray(a)) for a in (p, t, w))
        b, k = p.shape[0], p.shape[-1]
        hp = p.permute(0, 3, 1, 2).reshape(b, k, -1).split(1, 1)
        ht = t.permute(0, 3, 1, 2).reshape(b, k, -1).split(1, 1)
        mse = torch.nn.MSELoss(reduction="mean")
        loss = sum(0.5 * mse(hp[j].squeeze() * w[:, j : j + 1], ht[j].squeeze() * w[:, j : j + 1]) for j in range(k))
        return float(loss / k)

    ours = float(heatmap_loss(jnp.asarray(pred), jnp.asarray(target), jnp.asarray(weight), jnp.asarray(mask)))
    np.testing.assert_allclose(ours, official(pred[:2], target[:2], weight[:2]), rtol=1e-6)
    padded = heatmap_loss(jnp.asarray(pred), jnp.asarray(target), jnp.asarray(weight), jnp.ones(3, bool))
    assert abs(float(padded) - ours) > 1e-3  # the masked row would change it


class _Echo:
    """A stand-in model: heatmaps are the first K channels of its input."""

    def __init__(self, k: int):
        self.k = k

    def apply(self, variables, images, train=False):
        assert train is False
        return images[..., : self.k]


def test_flip_test_is_the_official_flip_back():
    """mean(x, flip_back(model(flip(x)))): flipped back along W, pairs swapped, shifted 1 px right."""
    x = np.random.default_rng(1).normal(size=(2, 4, 6, 5)).astype(np.float32)
    ours = np.asarray(infer_heatmaps(_Echo(5), None, jnp.asarray(x), flip_pairs=PAIRS, flip_test=True))
    flipped = x[:, :, ::-1].transpose(0, 3, 1, 2)  # the model's output on the flipped image, NCHW
    back = flipped[..., ::-1].copy()  # official flip_back: flip W, then swap pairs
    for a, b in PAIRS:
        back[:, [a, b]] = back[:, [b, a]]
    back[..., 1:] = back[..., :-1].copy()  # shift_heatmap
    np.testing.assert_allclose(ours, 0.5 * (x + back.transpose(0, 2, 3, 1)), rtol=1e-6)
    plain = infer_heatmaps(_Echo(5), None, jnp.asarray(x), flip_pairs=PAIRS, flip_test=False)
    np.testing.assert_array_equal(np.asarray(plain), x)


class _Points(PoseSource):
    """Three people in one 100x80 image, with known joints."""

    num_joints = 5
    flip_pairs = PAIRS
    upper_body = (0, 1, 2)

    def __init__(self, joints: np.ndarray | None, boxes: np.ndarray):
        self.joints, self.boxes = joints, boxes

    def num_examples(self, split):
        return len(self.boxes)

    def load(self, split, index):
        joints = None if self.joints is None else self.joints[index]
        return PoseInstance(np.zeros((100, 80, 3), np.uint8), self.boxes[index], joints, image_id=7, score=0.9)


def _people() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(2)
    boxes = np.array([[10.0, 20, 30, 60], [40, 10, 20, 40], [5, 5, 50, 80]])
    joints = np.zeros((3, 5, 3))
    joints[..., :2] = boxes[:, None, :2] + rng.uniform(0.2, 0.8, size=(3, 5, 2)) * boxes[:, None, 2:]
    joints[..., 2] = 2
    joints[1, 4, 2] = 0  # unlabelled: not counted
    return joints, boxes


def _rows_at(context, xy: np.ndarray, order) -> dict:
    """Rows whose heatmap coordinates map back to image points `xy` (N, K, 2), in crop `order`."""
    s = context.scale * kp.PIXEL_STD
    h, w = context.heatmap_size
    factor = s[:, :1] / w  # the inverse of heatmap_to_image (msra)
    coords = (xy - context.center[:, None]) / factor[:, None] + np.array([w / 2, h / 2])
    order = np.asarray(order)
    return {"crop_id": order, "coords": coords[order].astype(np.float64), "maxvals": np.full((len(order), 5), 0.9)}


def test_summarize_maps_back_and_scores_pck():
    joints, boxes = _people()
    context = pose_data.eval_context(_Points(joints, boxes), "val", (64, 32))
    task = Pose(num_joints=5, flip_pairs=PAIRS)
    exact = task.summarize(_rows_at(context, joints[..., :2], [2, 0, 1]), context)
    assert exact["count"] == 3 and exact["pck"] == 100.0 and exact["pck_joints"] == 14
    ids, points = task.keypoints(_rows_at(context, joints[..., :2], [1, 2, 0]), context)
    np.testing.assert_array_equal(ids, [0, 1, 2])
    np.testing.assert_allclose(points[..., :2], joints[..., :2], atol=1e-9)  # in crop order, float64
    # a crop whose image could not be read is left out (and counted by `evaluate` as unreadable)
    skipped = task.summarize({**_rows_at(context, off_box(joints), [2, 0]), "unreadable": 1}, context)
    assert skipped["count"] == 2 and skipped["pck_joints"] == 10 and skipped["pck"] == 90.0
    off = joints[..., :2].copy()
    off[0, :2] += 0.11 * 60  # beyond 0.1 x the longer side (60) of box 0
    off[2, 0, 0] += 0.09 * 80  # within box 2's limit
    metrics = task.summarize(_rows_at(context, off, [0, 1, 2]), context)
    assert metrics["pck"] == pytest.approx(100.0 * 12 / 14)
    assert task.describe(metrics) == f"PCK@0.1 {100 * 12 / 14:.2f}%"
    assert pck(off, joints, boxes) == (12, 14)


def off_box(joints: np.ndarray) -> np.ndarray:
    """`joints`' points with one of person 2's five moved out of reach."""
    xy = joints[..., :2].copy()
    xy[2, 3] += 50.0
    return xy


@pytest.mark.parametrize(
    "order, problem",
    [([0, 1], "missing 1, of which 0 had an unreadable image"), ([0, 1, 1], "repeated 1"), ([0, 1, 5], "out of range 1")],
)
def test_every_crop_exactly_once(order, problem):
    joints, boxes = _people()
    context = pose_data.eval_context(_Points(joints, boxes), "val", (64, 32))
    rows = {"crop_id": np.array(order), "coords": np.zeros((len(order), 5, 2)), "maxvals": np.zeros((len(order), 5))}
    with pytest.raises(ValueError, match=f"scored {len(order)} crops for 3.*{problem}"):
        Pose(num_joints=5, flip_pairs=PAIRS).summarize(rows, context)
    with pytest.raises(ValueError, match="crop table"):
        Pose(num_joints=5, flip_pairs=PAIRS).summarize(rows, None)


def _tiny_coco(tmp_path, joints: np.ndarray, boxes: np.ndarray):
    from hrnet_flax.data.coco import CocoKeypoints

    (tmp_path / "annotations").mkdir()
    (tmp_path / "val2017").mkdir()
    anns = []
    for i, (j, b) in enumerate(zip(joints, boxes)):
        full = np.zeros((17, 3))
        full[:5] = j
        anns.append({"id": i + 1, "image_id": 7, "category_id": 1, "iscrowd": 0, "bbox": b.tolist(),
                     "area": float(b[2] * b[3]), "num_keypoints": int((j[:, 2] > 0).sum()),
                     "keypoints": full.reshape(-1).tolist()})
    data = {"images": [{"id": 7, "file_name": "7.jpg", "width": 80, "height": 100}], "annotations": anns,
            "categories": [{"id": 1, "name": "person", "keypoints": [f"j{k}" for k in range(17)], "skeleton": []}]}
    (tmp_path / "annotations" / "person_keypoints_val2017.json").write_text(json.dumps(data))
    return CocoKeypoints(tmp_path)


def test_coco_ap_from_the_rows(tmp_path):
    """Exact predictions give AP 100 through `evaluate_keypoints`; far ones less (17 joints, COCO)."""
    joints5, boxes = _people()
    source = _tiny_coco(tmp_path, joints5, boxes)
    context = pose_data.eval_context(source, "val", (64, 32))
    full = context.joints
    task = Pose(num_joints=17, flip_pairs=source.flip_pairs)

    def rows(xy):
        r = _rows_at(dataclasses.replace(context, num_joints=5), xy[:, :5], [0, 1, 2])
        coords = np.zeros((3, 17, 2))
        coords[:, :5] = r["coords"]
        coords[:, 5:] = context.heatmap_size[1] / 2
        return {**r, "coords": coords, "maxvals": np.full((3, 17), 0.9)}

    exact = task.summarize(rows(full[..., :2]), context)
    assert exact["ap"] == pytest.approx(100.0) and exact["count"] == 3 and "pck" in exact
    far = task.summarize(rows(full[..., :2] + 15.0), context)
    assert far["ap"] < 50.0
    assert task.describe(exact).startswith("AP 100.0, AP50 100.0, AR 100.0")


def test_wrong_joint_count_is_refused():
    task = Pose(num_joints=17, flip_pairs=PAIRS)
    with pytest.raises(ValueError, match="the model predicts 5 heatmaps but the task has 17 joints"):
        task.eval_sums(jnp.zeros((1, 4, 4, 5)), {"crop_id": jnp.zeros(1, jnp.int32), "mask": jnp.ones(1, bool)})
    with pytest.raises(ValueError, match="flip_test needs the dataset's flip_pairs"):
        Pose(num_joints=5)
    with pytest.raises(ValueError, match="flip pair .3, 9. is not two joint indices"):
        Pose(num_joints=5, flip_pairs=((3, 9),))


def test_task_from_config_and_validation():
    config = pose_demo_config()
    config.validate()
    task = get_task("pose").from_config(config)
    assert task.num_joints == 17 and task.flip_test and task.flip_pairs == tuple((k, k + 1) for k in range(1, 17, 2))
    for override, match in (
        ("crop_size=(64,48)", "multiples of 32"),
        ("pose_codec='dark'", "pose_codec"),
        ("pose_rotation_prob=1.5", "probability"),
        ("pose_sigma=0", "pose_sigma"),
    ):
        with pytest.raises(ValueError, match=match):
            apply_overrides(pose_demo_config(), [override])
    with pytest.raises(ValueError, match="num_classes=16 but the dataset figures has 17 joints"):
        task.resolve(dataclasses.replace(config, num_classes=16))
    with pytest.raises(ValueError, match="no pose dataset"):
        get_task("pose").from_config(TrainConfig(task="pose", dataset="digits"))


MULTIHOST = r"""
import json, sys
import jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(coordinator_address=f"127.0.0.1:{sys.argv[2]}", num_processes=2, process_id=int(sys.argv[3]))
sys.path.insert(0, sys.argv[1])
from test_pose_task import TinyPose, figure_batches, TASK
from hrnet_flax.evaluate import evaluate
assert jax.process_count() == 2 and jax.local_device_count() == 2
model = TinyPose()
variables = model.init(jax.random.key(0), jax.numpy.zeros((1, 32, 32, 3)))
print("RESULT " + json.dumps(evaluate(model, variables, figure_batches(3), task=TASK)))
"""


import flax.linen as nn  # noqa: E402

from hrnet_flax.data.figures import FiguresSource  # noqa: E402

TASK = Pose(num_joints=17, flip_pairs=tuple((k, k + 1) for k in range(1, 17, 2)))


class TinyPose(nn.Module):
    """A small stand-in pose network: heatmaps (N, H/4, W/4, 17) from a strided convolution."""

    @nn.compact
    def __call__(self, images, train=False):
        return nn.Conv(17, (4, 4), strides=(4, 4))(images)


def figure_batches(batch_size: int):
    """The embedded figures' val crops at 32x32, this process's share."""
    return pose_data.eval_dataset(FiguresSource((32, 32)), "val", batch_size_per_process=batch_size, image_size=(32, 32))


@pytest.mark.slow
def test_evaluate_two_processes_scores_each_crop_once():
    """2 processes x 2 devices, each decoding its share of the crops, give the metrics of one
    process (the rows are gathered across hosts and every crop comes exactly once)."""
    import os
    import socket
    import subprocess
    import sys

    import jax

    from data_support import cpu_env
    from hrnet_flax.evaluate import evaluate

    model = TinyPose()
    variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    single = evaluate(model, variables, figure_batches(5), task=TASK)
    assert single["count"] == 256 and 0 < single["pck"] < 100
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    here = os.path.dirname(__file__)
    procs = [
        subprocess.Popen([sys.executable, "-c", MULTIHOST, here, port, str(i)], env=cpu_env(2),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
        (line,) = [x for x in out.splitlines() if x.startswith("RESULT ")]
        result = json.loads(line[len("RESULT "):])
        assert result["count"] == 256 and result["pck_joints"] == single["pck_joints"]
        assert result["pck"] == pytest.approx(single["pck"])
