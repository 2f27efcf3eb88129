"""Pose estimation for users, in process: `estimate_poses` against the top-down pipeline written
out by hand (crop affine, normalisation, model, flip test, decoding, mapping back), `draw_poses`
pixel by pixel, `pose_files`, and the `pose`, `eval` (embedded figures) and `demo --task pose`
commands with their errors. Weights are a random pose_hrnet_w18_small (`save_checkpoint` file)
whose heatmap head is scaled up so that peaks differ between joints; crops are 64x32."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import pathlib

import jax
import numpy as np
import pytest
from data_support import run_cli, smooth_images
from PIL import Image

from hrnet_flax import cli
from hrnet_flax.data.coco import COCO_FLIP_PAIRS, COCO_JOINTS
from hrnet_flax.predict import POSE_COLOURS, draw_poses, estimate_poses

CROP = (64, 32)  # (H, W)
HEATMAP = (16, 8)
IMAGE_SIZES = {"one.png": (60, 80), "two.jpg": (72, 50)}  # (H, W)
BOXES = np.array([[10.0, 5.0, 30.0, 40.0], [40.0, 20.0, 25.0, 30.0]])  # x, y, w, h
MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])


@pytest.fixture(scope="module")
def pose_weights(tmp_path_factory) -> tuple[str, object, dict]:
    """A random pose_hrnet_w18_small (17 joints) saved with `save_checkpoint`, loaded back."""
    import hrnet_flax as hf

    variables = hf.init_variables(hf.create_model("pose_hrnet_w18_small"), jax.random.key(7))
    head = variables["params"]["pose_head"]
    head["kernel"] = head["kernel"] * 10.0  # peaks of order 1 (some above, some below 0.5), not 1e-2
    path = tmp_path_factory.mktemp("pose_weights") / "pose.safetensors"
    hf.save_checkpoint(path, variables, arch="pose_hrnet_w18_small", num_classes=17)
    model, loaded = hf.load_pretrained(str(path), scan=True)  # compiles in seconds
    assert model.config.head == "pose" and model.num_classes == 17
    return str(path), model, loaded


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[pathlib.Path]:
    """Smooth random RGB images (PNG, JPEG) of `IMAGE_SIZES`."""
    return smooth_images(tmp_path_factory.mktemp("pose_images"), IMAGE_SIZES, seed=11, block=6)


def load(path) -> np.ndarray:
    from hrnet_flax.data.images import load_rgb

    return load_rgb(path)


# ------------------------------------------------------------------ the pipeline by hand


def hand_poses(model, variables, image: np.ndarray, boxes: np.ndarray, codec: str, flip: bool) -> np.ndarray:
    """(M, 17, 3) keypoints by the official top-down test written out step by step."""
    from hrnet_flax.data import keypoints as kp

    (ch, cw), (hh, hw) = CROP, HEATMAP
    centers, widths, crops = [], [], []
    for x, y, w, h in boxes:
        center = np.array([x + w / 2, y + h / 2])
        if w > h * cw / ch:  # widen or heighten the box to the crop's aspect, then 1.25x
            h = w * ch / cw
        else:
            w = h * cw / ch
        side = np.array([w, h]) * 1.25  # image pixels spanned by the crop
        if codec == "msra":  # centre -> (cw/2, ch/2); one factor, from the width
            f = np.array([cw / side[0], cw / side[0]])
            matrix = np.array([[f[0], 0, cw / 2 - f[0] * center[0]], [0, f[1], ch / 2 - f[1] * center[1]]])
        else:  # udp: the box edges -> the first and last pixel centres, a factor per axis
            f = np.array([(cw - 1) / side[0], (ch - 1) / side[1]])
            matrix = np.array([[f[0], 0, (cw - 1) / 2 - f[0] * center[0]], [0, f[1], (ch - 1) / 2 - f[1] * center[1]]])
        crop = kp.warp_image(image, matrix, CROP)
        crops.append(((crop / 255.0 - MEAN) / STD).astype(np.float32))
        centers.append(center)
        widths.append(side)
    crops = np.stack(crops)
    forward = jax.jit(lambda v, x: model.apply(v, x, train=False))
    heatmaps = np.asarray(forward(variables, crops), np.float64)
    if flip:
        back = np.asarray(forward(variables, crops[:, :, ::-1]), np.float64)[:, :, ::-1]
        perm = np.arange(17)
        for a, b in COCO_FLIP_PAIRS:
            perm[a], perm[b] = b, a
        back = back[..., perm]
        if codec == "msra":  # one pixel right, column 0 kept
            back[:, :, 1:] = back[:, :, :-1].copy()
        heatmaps = 0.5 * (heatmaps + back)
    if codec == "udp":
        coords, peaks = (np.asarray(v, np.float64) for v in kp.decode_udp(heatmaps.astype(np.float32)))
    else:
        coords, peaks = np.zeros((len(boxes), 17, 2)), np.zeros((len(boxes), 17))
        for i in range(len(boxes)):
            for k in range(17):
                hm = heatmaps[i, :, :, k]
                py, px = np.unravel_index(np.argmax(hm), hm.shape)
                peaks[i, k] = hm[py, px]
                if hm[py, px] <= 0:
                    continue
                xy = np.array([px, py], np.float64)
                if 1 < px < hw - 1 and 1 < py < hh - 1:
                    xy += 0.25 * np.sign([hm[py, px + 1] - hm[py, px - 1], hm[py + 1, px] - hm[py - 1, px]])
                coords[i, k] = xy
    out = np.zeros((len(boxes), 17, 3))
    for i, (center, side) in enumerate(zip(centers, widths)):
        if codec == "msra":
            out[i, :, :2] = center + (coords[i] - [hw / 2, hh / 2]) * side[0] / hw
        else:
            out[i, :, :2] = center + (coords[i] / [hw - 1, hh - 1] - 0.5) * side
    out[..., 2] = peaks
    return out


@pytest.mark.parametrize("codec, flip", [("msra", True), ("udp", False)])
def test_estimate_poses_equals_the_pipeline_by_hand(pose_weights, images, codec, flip):
    _, model, variables = pose_weights
    image = load(images[0])
    poses = estimate_poses(
        model, variables, image, BOXES, input_size=CROP, codec=codec, flip_test=flip, shift_heatmap=codec == "msra"
    )
    assert poses.shape == (2, 17, 3) and poses.dtype == np.float64
    expected = hand_poses(model, variables, image, BOXES, codec, flip)
    # (UDP's Newton step on log heatmaps magnifies float32 rounding a little: rtol)
    np.testing.assert_allclose(poses[..., :2], expected[..., :2], atol=1e-3, rtol=1e-4)
    np.testing.assert_allclose(poses[..., 2], expected[..., 2], rtol=1e-4, atol=1e-6)
    assert (poses[..., 2] > 0.5).any() and len(np.unique(poses[0, :, 0])) > 3  # real, distinct peaks


def test_estimate_poses_whole_image_by_default(pose_weights, images):
    _, model, variables = pose_weights
    image = load(images[1])
    h, w = IMAGE_SIZES[images[1].name]
    poses = estimate_poses(model, variables, image, input_size=CROP)
    assert poses.shape == (1, 17, 3)
    # the whole image is the box of its pixels: centre ((W - 1) / 2, (H - 1) / 2), W x H
    whole = np.array([[-0.5, -0.5, w, h]])
    np.testing.assert_allclose(poses, hand_poses(model, variables, image, whole, "msra", True), atol=1e-3, rtol=1e-4)
    assert estimate_poses(model, variables, image, np.zeros((0, 4)), input_size=CROP).shape == (0, 17, 3)


def test_estimate_poses_errors(pose_weights, images):
    import hrnet_flax as hf

    _, model, variables = pose_weights
    image = load(images[0])  # 80 wide, 60 high
    cases = {
        "box 1 (x, y, w, h) = (5, 5, 0, 10) has zero area": [[1, 1, 10, 10], [5, 5, 0, 10]],
        "box 0 (x, y, w, h) = (5, 5, 10, -3) has zero area": [[5, 5, 10, -3]],
        "box 0 (x, y, w, h) = (90, 5, 10, 10) lies outside the image (80 wide, 60 high)": [[90, 5, 10, 10]],
        "box 0 (x, y, w, h) = (-30, 5, 20, 10) lies outside the image (80 wide, 60 high)": [[-30, 5, 20, 10]],
        "box 0 (x, y, w, h) = (1, nan, 10, 10) is not finite": [[1, np.nan, 10, 10]],
        "boxes must have shape (M, 4), x, y, w, h per person; got shape (4,)": [1, 2, 3, 4],
    }
    for message, boxes in cases.items():
        with pytest.raises(ValueError) as e:
            estimate_poses(model, variables, image, boxes, input_size=CROP)
        assert message in str(e.value), str(e.value)
    with pytest.raises(ValueError, match=r"image_size \(60, 32\) must be \(H, W\), both positive multiples of 32"):
        estimate_poses(model, variables, image, input_size=(60, 32))
    with pytest.raises(ValueError, match="unknown heatmap codec 'dark'"):
        estimate_poses(model, variables, image, input_size=CROP, codec="dark")
    with pytest.raises(ValueError, match=r"needs a uint8 RGB image \(H, W, 3\); got float32 of shape \(60, 80\)"):
        estimate_poses(model, variables, image[..., 0].astype(np.float32), input_size=CROP)
    with pytest.raises(ValueError, match="std must be three finite numbers"):
        estimate_poses(model, variables, image, input_size=CROP, std=(0.2, 0.0, 0.2))
    classifier = hf.create_model("hrnet_w18_small", num_classes=10)
    with pytest.raises(ValueError, match="pose estimation needs a pose model .*; got a classification model"):
        estimate_poses(classifier, None, image)


# ------------------------------------------------------------------ drawing


def segment_distance(points: np.ndarray, a, b) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    t = np.clip(((points - a) @ (b - a)) / ((b - a) @ (b - a)), 0, 1)
    return np.linalg.norm(points - (a + t[..., None] * (b - a)), axis=-1)


def test_draw_poses_draws_only_the_joints_and_limbs_above_the_threshold():
    image = np.full((64, 64, 3), 30, np.uint8)
    pose = np.zeros((1, 17, 3))
    pose[0, :5] = [[32, 56, 0.1], [16, 12, 0.9], [48, 12, 0.8], [16, 40, 0.5], [48, 40, 0.2]]  # nose under 0.2
    drawn = draw_poses(image, pose, radius=2, thickness=1)
    assert drawn.dtype == np.uint8 and drawn.shape == image.shape and (image == 30).all()  # the input is kept
    ys, xs = np.mgrid[0:64, 0:64]
    points = np.stack([xs, ys], axis=-1).astype(np.float64)
    joints = {k: pose[0, k, :2] for k in (1, 2, 3, 4)}
    limbs = [(1, 2), (1, 3), (2, 4)]  # COCO limbs between drawn joints; (0, 1), (0, 2), (3, 5), (4, 6) are not
    near = np.zeros((64, 64), bool)
    for xy in joints.values():
        near |= np.linalg.norm(points - xy, axis=-1) <= 2 + 1
    for a, b in limbs:
        near |= segment_distance(points, joints[a], joints[b]) <= 1.5
    changed = (drawn != image).any(axis=-1)
    assert not (changed & ~near).any(), np.argwhere(changed & ~near)[:5]  # nothing elsewhere
    assert not changed[50:, 26:39].any()  # the nose (score 0.1) and its limbs: not drawn
    left, right, middle = (np.array(POSE_COLOURS[s]) for s in ("left", "right", "middle"))
    np.testing.assert_array_equal(drawn[12, 16], left)  # left eye
    np.testing.assert_array_equal(drawn[40, 48], right)  # right ear (score 0.2: at the threshold)
    np.testing.assert_array_equal(drawn[26, 16], left)  # left eye - left ear
    np.testing.assert_array_equal(drawn[26, 48], right)  # right eye - right ear
    np.testing.assert_array_equal(drawn[12, 32], middle)  # eye - eye
    assert len({tuple(c) for c in (left, right, middle)}) == 3
    # every drawn joint changes its neighbourhood, each limb its middle
    for xy in joints.values():
        assert changed[int(xy[1]) - 1 : int(xy[1]) + 2, int(xy[0]) - 1 : int(xy[0]) + 2].all()

    # a higher threshold leaves the right ear (0.2) and its limb out; no skeleton: joints only
    drawn = draw_poses(image, pose, skeleton=(), score_threshold=0.3, radius=2)
    changed = (drawn != image).any(axis=-1)
    dots = np.zeros((64, 64), bool)
    for k in (1, 2, 3):
        dots |= np.linalg.norm(points - joints[k], axis=-1) <= 3
    assert changed.any() and not (changed & ~dots).any()
    assert not changed[36:45, 44:53].any()


def test_draw_poses_errors():
    image = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match=r"poses must have shape \(M, K, 3\)"):
        draw_poses(image, np.zeros((17, 3)))
    with pytest.raises(ValueError, match=r"skeleton limb \(15, 13\) is not two joint indices below 5"):
        draw_poses(image, np.zeros((1, 5, 3)))
    with pytest.raises(ValueError, match=r"flip pair \(1, 2\) is not two joint indices below 2"):
        draw_poses(image, np.zeros((1, 2, 3)), skeleton=[(0, 1)])
    assert (draw_poses(image, np.zeros((1, 2, 3)), skeleton=[(0, 1)], flip_pairs=()) == 0).all()  # scores 0
    with pytest.raises(ValueError, match="needs a uint8 RGB image"):
        draw_poses(image[..., 0], np.zeros((1, 17, 3)))


# ------------------------------------------------------------------ commands


def test_pose_command(pose_weights, images, tmp_path):
    weights, model, variables = pose_weights
    out_dir = tmp_path / "drawn"
    code, out, err = run_cli("pose", "--model", weights, *images, "--size", "64x32", "--out", out_dir, "--threshold", "0.5")
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 2 * (2 + 17), out
    for n, path in enumerate(images):
        block = lines[n * 19 : (n + 1) * 19]
        drawn_path = out_dir / f"{path.stem}_pose.png"
        assert block[0] == f"{path}: 1 person(s), drawn {drawn_path}", block[0]
        assert block[1] == "  person 0 (box whole image):", block[1]
        image = load(path)
        poses = estimate_poses(model, variables, image, input_size=CROP)
        for name, line, (x, y, score) in zip(COCO_JOINTS, block[2:], poses[0]):
            fields = line.split()
            assert line.startswith(f"    {name} ") and len(fields) == 7, line
            assert fields[1:] == ["x", f"{x:.2f}", "y", f"{y:.2f}", "score", f"{score:.3f}"], line
        with Image.open(drawn_path) as picture:
            assert picture.mode == "RGB" and picture.size == image.shape[1::-1]
            np.testing.assert_array_equal(np.asarray(picture), draw_poses(image, poses, score_threshold=0.5))

    # Boxes, one image, the default output beside it.
    boxes = [f"--box={','.join(map(str, b))}" for b in BOXES]  # --box=10.0,5.0,30.0,40.0
    code, out, err = run_cli("pose", "--model", weights, images[0], "--size", "64x32", *boxes)
    assert code == 0, err
    beside = images[0].parent / f"{images[0].stem}_pose.png"
    assert out.splitlines()[0] == f"{images[0]}: 2 person(s), drawn {beside}" and beside.is_file()
    assert out.splitlines()[19] == "  person 1 (box 40,20,25,30):", out
    poses = estimate_poses(model, variables, load(images[0]), BOXES, input_size=CROP)
    x, y, score = poses[1, 0]
    assert out.splitlines()[20].split() == ["nose", "x", f"{x:.2f}", "y", f"{y:.2f}", "score", f"{score:.3f}"]


def test_pose_command_errors(pose_weights, images, tmp_path):
    import hrnet_flax as hf

    weights, _, _ = pose_weights
    classifier = tmp_path / "cls.safetensors"
    hf.save_checkpoint(
        classifier, hf.init_variables(hf.create_model("hrnet_w18_small", num_classes=10), jax.random.key(0)),
        arch="hrnet_w18_small", num_classes=10,
    )  # fmt: skip
    code, out, err = run_cli("pose", "--model", classifier, images[0])
    assert code == 2 and out == ""
    assert f"{classifier} is a classification model; `pose` needs a pose model (use `hrnet-flax predict` for it)" in err, err
    code, out, err = run_cli("segment", "--model", weights, images[0])
    assert code == 2 and f"{weights} is a pose model; `segment` needs a segmentation model (use `hrnet-flax pose`" in err, err
    code, out, err = run_cli("predict", "--model", weights, images[0])
    assert code == 2 and f"{weights} is a pose model; use `hrnet-flax pose` for it" in err, err

    out_dir = tmp_path / "out"
    code, out, err = run_cli("pose", "--model", weights, *images, "--box", "10,10,0,20", "--out", out_dir)
    assert code == 2 and out == "" and not out_dir.exists()
    assert f"{images[0]}: box 0 (x, y, w, h) = (10, 10, 0, 20) has zero area" in err, err
    code, out, err = run_cli("pose", "--model", weights, images[1], "--box=60,10,20,20")  # 50 wide
    assert code == 2
    assert f"{images[1]}: box 0 (x, y, w, h) = (60, 10, 20, 20) lies outside the image (50 wide, 72 high)" in err, err
    missing = tmp_path / "missing.png"
    code, out, err = run_cli("pose", "--model", weights, images[0], missing)
    assert code == 2 and f"image file {missing} does not exist" in err, err
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as e:
        cli.main(["pose", "--model", weights, str(images[0]), "--box", "1,2,3"])
    assert e.value.code == 2 and "expected a box x,y,w,h (four numbers)" in err.getvalue(), err.getvalue()


def test_pose_settings_come_from_the_registered_weight():
    """A registered name gives its `PoseSpec`'s crop, codec, heatmap shift and normalisation (no
    download: the settings are read before the weights); flags override; files get the defaults."""

    def options(model, **flags):
        args = argparse.Namespace(model=model, size=flags.get("size"), codec=flags.get("codec"), flip=flags.get("flip"))
        return cli._pose_options(args)

    udp = options("pose_hrnet_w32.mmpose_udp_coco_256x192")
    assert udp["input_size"] == (256, 192) and udp["codec"] == "udp" and udp["shift_heatmap"] is False
    assert udp["flip_test"] is True and udp["flip_pairs"] == COCO_FLIP_PAIRS
    np.testing.assert_allclose(udp["mean"], MEAN, atol=1e-9)
    np.testing.assert_allclose(udp["std"], STD, atol=1e-9)
    big = options("pose_hrnet_w48.mmpose_coco_384x288", flip=False)
    assert big["input_size"] == (384, 288) and big["codec"] == "msra" and big["shift_heatmap"] is True
    assert big["flip_test"] is False
    switched = options("pose_hrnet_w32.mmpose_udp_coco_256x192", codec="msra", size=(128, 96))
    assert switched["codec"] == "msra" and switched["shift_heatmap"] is True and switched["input_size"] == (128, 96)
    plain = options("some/file.safetensors", codec="udp")
    assert plain == {"input_size": (256, 192), "codec": "udp", "shift_heatmap": False}


def test_eval_on_the_figures(pose_weights):
    """One JSON line of PCK, equal to `evaluate` with the Pose task on the figures' val split."""
    from hrnet_flax import load_pretrained
    from hrnet_flax.data import pose as pose_data
    from hrnet_flax.data.figures import FLIP_PAIRS, VAL_FIGURES, FiguresSource
    from hrnet_flax.evaluate import evaluate
    from hrnet_flax.tasks.pose import Pose

    weights, _, _ = pose_weights
    code, out, err = run_cli("eval", "--model", weights, "--data-dir", "figures", "--batch-size", "64")
    assert code == 0, err
    assert f"evaluating {weights} on {VAL_FIGURES} person crops (64x64) of figures (val)" in err, err
    (line,) = out.strip().splitlines()
    result = json.loads(line)
    assert result["count"] == VAL_FIGURES and result["pck_joints"] == 17 * VAL_FIGURES and result["unreadable"] == 0
    assert 0 <= result["pck"] <= 100 and "ap" not in result
    model, variables = load_pretrained(weights, scan=True)
    batches = pose_data.eval_dataset(FiguresSource((64, 64)), "val", batch_size_per_process=64, image_size=(64, 64))
    expected = evaluate(model, variables, batches, task=Pose(num_joints=17, flip_pairs=FLIP_PAIRS))
    assert result == pytest.approx(json.loads(json.dumps(expected)))


@pytest.mark.parametrize("detections", [False, True])
def test_eval_on_coco(pose_weights, tmp_path, detections):
    """`--data-dir coco:<root>` (a hand-made annotation set): COCO AP (and PCK with ground-truth
    boxes), equal to `evaluate` on `CocoKeypoints`; `--detections` takes the boxes from a file."""
    from test_pose_coco import eval_annotations, write_images, write_json

    from hrnet_flax import load_pretrained
    from hrnet_flax.data import pose as pose_data
    from hrnet_flax.data.coco import CocoKeypoints
    from hrnet_flax.evaluate import evaluate
    from hrnet_flax.tasks.pose import Pose

    weights, _, _ = pose_weights
    write_json(tmp_path / "annotations" / "person_keypoints_val2017.json", eval_annotations())
    write_images(tmp_path / "val2017")
    extra, dets = [], None
    if detections:
        dets = write_json(
            tmp_path / "dets.json",
            [{"image_id": 2, "category_id": 1, "bbox": [1.0, 12.0, 50.0, 40.0], "score": 0.9},
             {"image_id": 1, "category_id": 1, "bbox": [6.0, 5.0, 38.0, 41.0], "score": 0.8}],
        )  # fmt: skip
        extra = ["--detections", dets]
    code, out, err = run_cli(
        "eval", "--model", weights, "--data-dir", f"coco:{tmp_path}", "--size", "64x64", "--batch-size", "64", *extra
    )
    assert code == 0, err
    result = json.loads(out)
    assert result["count"] == (2 if detections else 3) and ("pck" in result) != detections
    assert {"ap", "ap50", "ap75", "ar"} <= set(result) and 0 <= result["ap"] <= 100
    model, variables = load_pretrained(weights, scan=True)
    source = CocoKeypoints(tmp_path, detections=dets)
    batches = pose_data.eval_dataset(source, "val", batch_size_per_process=64, image_size=(64, 64))
    expected = evaluate(model, variables, batches, task=Pose(num_joints=17, flip_pairs=COCO_FLIP_PAIRS))
    assert result == pytest.approx(json.loads(json.dumps(expected)))


def test_eval_pose_errors(pose_weights, tmp_path):
    weights, _, _ = pose_weights
    code, out, err = run_cli("eval", "--model", weights, "--data-dir", "figures", "--scales", "0.5", "1.0", "--window", "64x64")
    assert code == 2 and out == ""
    assert f"--scales, --window do(es) not apply to {weights}, a pose model" in err, err
    code, out, err = run_cli("eval", "--model", weights, "--data-dir", "figures", "--detections", tmp_path / "d.json")
    assert code == 2 and "--detections applies to COCO (--data-dir coco:<root>), not to the figures" in err, err
    code, out, err = run_cli("eval", "--model", weights, "--data-dir", tmp_path)
    assert code == 2 and f"--data-dir '{tmp_path}' is no pose dataset: use coco:<root>" in err, err
    code, out, err = run_cli("eval", "--model", weights, "--data-dir", f"coco:{tmp_path / 'nowhere'}")
    assert code == 2 and f"COCO keypoints root '{tmp_path / 'nowhere'}': no such folder" in err, err
    code, out, err = run_cli("eval", "--model", weights, "--data-dir", "figures", "--size", "60x32")
    assert code == 2 and "must be (H, W), both positive multiples of 32" in err, err


def test_demo_pose(tmp_path):
    code, out, err = run_cli(
        "demo", "--task", "pose", "--workdir", tmp_path, "--set", "total_steps=2", "eval_every_steps=2", "global_batch_size=8"
    )
    assert code == 0, err
    summary = out.strip().splitlines()[-1]
    assert summary.startswith("pose_hrnet_w18_small on figures: 2 steps of 8 images on 1 device(s)"), summary
    assert "; validation PCK@0.1 " in summary and "% (256 images)" in summary, summary
    assert f"weights in {tmp_path / 'model.safetensors'}" in summary and (tmp_path / "model.safetensors").is_file()


def test_eval_on_coco_with_an_unreadable_image(pose_weights, tmp_path):
    """A truncated image file does not stop the evaluation: its person is left out (and counts as
    missed in the AP), the JSON line says one crop was unreadable."""
    from test_pose_coco import eval_annotations, write_images, write_json

    weights, _, _ = pose_weights
    write_json(tmp_path / "annotations" / "person_keypoints_val2017.json", eval_annotations())
    write_images(tmp_path / "val2017")
    path = tmp_path / "val2017" / "000000000002.jpg"
    path.write_bytes(path.read_bytes()[:40])
    code, out, err = run_cli("eval", "--model", weights, "--data-dir", f"coco:{tmp_path}", "--size", "64x64")
    assert code == 0, err
    result = json.loads(out)
    assert result["count"] == 2 and result["unreadable"] == 1 and 0 <= result["ap"] <= 100
    assert "000000000002.jpg" in err
