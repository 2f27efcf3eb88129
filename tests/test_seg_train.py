"""Segmentation training end to end: the canvases demo through `train_and_evaluate` (loss, mIoU,
checkpoints, export, resume), fine-tuning a classification checkpoint on an image/mask folder, and
the errors and settings that must survive the round trip.

The demo runs share one short config (the segmentation demo's, 64x64 canvases,
hrnetv2_w18_small_seg), so its train step compiles once; the resumed run loads it from the
persistent compilation cache.
"""

from __future__ import annotations

import json
import pathlib
import re
import shutil

import jax
import numpy as np
import pytest
from PIL import Image

from hrnet_flax.train.checkpoint import checkpoint_manager
from hrnet_flax.train.config import TrainConfig, apply_overrides, segmentation_demo_config
from hrnet_flax.train.loop import train_and_evaluate

STEPS = 24
SHORT = [
    "global_batch_size=16",
    f"total_steps={STEPS}",
    "log_every_steps=4",
    "checkpoint_every_steps=12",
    "eval_every_steps=1000",
    "progress_bar=False",
]


def short_config() -> TrainConfig:
    return apply_overrides(segmentation_demo_config(), SHORT)


def restore_raw(workdir, step: int) -> dict:
    """A checkpoint as saved (nested dicts of arrays), without a target structure."""
    import orbax.checkpoint as ocp

    return checkpoint_manager(str(workdir), 2).restore(step, args=ocp.args.StandardRestore())


def leaves_equal(a, b) -> bool:
    leaves_a = jax.tree_util.tree_leaves(jax.device_get(a))
    leaves_b = jax.tree_util.tree_leaves(jax.device_get(b))
    return len(leaves_a) == len(leaves_b) > 0 and all(np.array_equal(x, y) for x, y in zip(leaves_a, leaves_b))


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """The segmentation demo, shortened: its `TrainResult` and workdir."""
    workdir = tmp_path_factory.mktemp("seg_demo")
    return train_and_evaluate(short_config(), str(workdir)), workdir


@pytest.mark.slow
def test_demo_trains_evaluates_checkpoints_and_exports(demo_run):
    from hrnet_flax import load_pretrained
    from hrnet_flax.data import canvases
    from hrnet_flax.data.segmentation import normalize
    from hrnet_flax.train.step import build_model

    result, workdir = demo_run
    assert result.step == STEPS and not result.preempted
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if "train/loss" in r]
    assert [r["step"] for r in train] == list(range(4, STEPS + 1, 4))
    losses = [r["train/loss"] for r in train]
    assert all(np.isfinite(losses)) and losses[-1] < 0.8 * losses[0], losses
    assert all(0.0 <= r["train/pixel_accuracy"] <= 1.0 for r in train)

    ev = result.eval
    assert ev["count"] == canvases.EVAL_CANVASES and ev["unreadable"] == 0
    assert len(ev["iou"]) == canvases.NUM_CLASSES
    present = [v for v in ev["iou"] if v is not None]
    assert present and all(0.0 <= v <= 100.0 for v in present)
    assert ev["miou"] == pytest.approx(np.mean(present))
    assert 0.0 <= ev["pixel_accuracy"] <= 100.0 and 0.0 <= ev["mean_accuracy"] <= 100.0
    assert np.isfinite(ev["loss"]) and ev["loss"] > 0
    (logged,) = [r for r in records if "eval/miou" in r]
    assert logged["step"] == STEPS and logged["eval/miou"] == ev["miou"]
    assert sorted(int(s.name) for s in (workdir / "checkpoints").iterdir()) == [12, 24]

    # The exported file is a segmentation model with the trained state's weights and logits.
    model, variables = load_pretrained(str(workdir / "model.safetensors"))
    assert model.config.head == "segmentation" and model.num_classes == canvases.NUM_CLASSES
    assert leaves_equal(variables, result.state.variables())
    x = normalize(canvases.canvases("val", 4)[0])
    trained = build_model(short_config(), axis_name=None)  # the run's model, unscanned
    expected = jax.jit(lambda v, x: trained.apply(v, x, train=False))(jax.device_get(result.state.variables()), x)
    exported = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
    assert exported.shape == (4, 16, 16, canvases.NUM_CLASSES)
    np.testing.assert_array_equal(np.asarray(exported), np.asarray(expected))


@pytest.mark.slow
def test_resume_continues_from_the_checkpoint(demo_run, tmp_path):
    """A run whose workdir holds the step-12 checkpoint trains steps 13..24 only and ends where the
    uninterrupted run ended, bit for bit."""
    _, reference_dir = demo_run
    (tmp_path / "checkpoints").mkdir()
    shutil.copytree(reference_dir / "checkpoints" / "12", tmp_path / "checkpoints" / "12")
    steps: list[int] = []
    result = train_and_evaluate(short_config(), str(tmp_path), step_callback=steps.append)
    assert steps == list(range(13, STEPS + 1))
    assert result.step == STEPS and int(jax.device_get(result.state.step)) == STEPS
    reference = restore_raw(reference_dir, STEPS)
    state = jax.device_get(result.state)
    for field in ("params", "batch_stats", "opt_state"):
        assert leaves_equal(getattr(state, field), reference[field]), field
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "train/loss" in r] == [16, 20, 24]


# ------------------------------------------------------------------ fine-tuning on a folder

CLASSES = 4
TRAIN_SIZES = [(72, 80), (64, 64), (80, 96), (70, 66)]
VAL_SIZES = [(50, 70), (64, 96), (60, 90)]  # different sizes; the eval batches pad them to 64x96


def _shapes(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """An image of coloured rectangles on a grey ground and its labels (class = the rectangle's
    colour), with an ignored (255) band at the top."""
    image = np.full((h, w, 3), 128, np.uint8)
    label = np.zeros((h, w), np.uint8)
    colours = [(128, 128, 128), (220, 40, 40), (40, 200, 40), (40, 40, 220)]
    for c in range(1, CLASSES):
        y, x = int(rng.integers(0, h - 16)), int(rng.integers(0, w - 16))
        dy, dx = int(rng.integers(10, 17)), int(rng.integers(10, 17))
        image[y : y + dy, x : x + dx] = colours[c]
        label[y : y + dy, x : x + dx] = c
    image = np.clip(image.astype(int) + rng.integers(-10, 11, image.shape), 0, 255).astype(np.uint8)
    label[:3] = 255
    return image, label


def _save_mask(path: pathlib.Path, label: np.ndarray) -> None:
    """A palette PNG whose index is the class."""
    mask = Image.fromarray(label, "P")
    mask.putpalette([v for c in range(256) for v in (c, 255 - c, (7 * c) % 256)])
    mask.save(path)


def make_seg_folder(root: pathlib.Path) -> pathlib.Path:
    """root/{train,val}/{images,masks} with classes.txt; train PNG images, val JPEG and PNG images."""
    rng = np.random.default_rng(0)
    for split, sizes in (("train", TRAIN_SIZES), ("val", VAL_SIZES)):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
        for k, (h, w) in enumerate(sizes):
            image, label = _shapes(rng, h, w)
            ext = ".jpg" if split == "val" and k == 1 else ".png"
            Image.fromarray(image).save(root / split / "images" / f"im{k}{ext}")
            _save_mask(root / split / "masks" / f"im{k}.png", label)
    (root / "classes.txt").write_text("ground\nred\ngreen\nblue\n")
    return root


def finetune_config(folder, weights) -> TrainConfig:
    return TrainConfig(
        task="segmentation",
        model="hrnetv2_w18_small_seg",
        num_classes=CLASSES,
        dtype="float32",
        dataset=str(folder),
        pretrained=str(weights),
        crop_size=(64, 64),
        scale_range=(0.75, 1.25),
        global_batch_size=4,
        eval_batch_size=2,
        base_lr=0.01,
        base_batch_size=4,
        warmup_epochs=1.0,  # one step: the first has learning rate 0
        total_steps=2,
        schedule="poly",
        eval_every_steps=100,  # once, at the end
        log_every_steps=1,
        checkpoint_every_steps=1,
        keep_checkpoints=2,
        progress_bar=False,
    )


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> pathlib.Path:
    return make_seg_folder(tmp_path_factory.mktemp("seg_folder"))


@pytest.fixture(scope="module")
def classifier_file(tmp_path_factory) -> tuple[pathlib.Path, dict]:
    """A random 10-class hrnet_w18_small saved with `save_checkpoint`, and its variables."""
    import hrnet_flax as hf
    from hrnet_flax.models.initialization import init_variables

    variables = init_variables(hf.create_model("hrnet_w18_small", num_classes=10), jax.random.key(7))
    path = tmp_path_factory.mktemp("classifier") / "cls.safetensors"
    hf.save_checkpoint(path, variables, arch="hrnet_w18_small", num_classes=10)
    return path, variables


def reference_metrics(model, variables, folder: pathlib.Path) -> dict:
    """mIoU and pixel accuracy of `model` on the val split, image by image (`tasks.segmentation.segment`),
    from a numpy confusion matrix."""
    from hrnet_flax.data.images import load_rgb
    from hrnet_flax.data.segmentation import load_mask, normalize
    from hrnet_flax.tasks.segmentation import iou_metrics, segment

    confusion = np.zeros((CLASSES, CLASSES), np.int64)
    for image_path in sorted((folder / "val" / "images").iterdir()):
        label = load_mask(folder / "val" / "masks" / f"{image_path.stem}.png")
        predicted = segment(model, variables, normalize(load_rgb(image_path)))
        counted = label != 255
        np.add.at(confusion, (label[counted], predicted[counted]), 1)
    return {**iou_metrics(confusion), "pixels": int(confusion.sum()), "correct": int(np.trace(confusion))}


@pytest.mark.slow
def test_finetune_a_classification_checkpoint_on_a_folder(folder, classifier_file, tmp_path):
    from hrnet_flax import load_pretrained

    weights, start = classifier_file
    config = finetune_config(folder, weights)
    with pytest.warns(UserWarning, match="classification checkpoint"):
        result = train_and_evaluate(config, str(tmp_path))
    assert result.step == 2

    # Step 1 ran at learning rate 0: its parameters are the checkpoint's backbone, bit for bit, and
    # a new head for the folder's classes.
    from hrnet_flax.weights.convert import flat_variables

    step1 = flat_variables({"params": restore_raw(tmp_path, 1)["params"]})
    saved = flat_variables({"params": start["params"]})
    backbone = [k for k in step1 if "/seg_" not in k]
    assert len(backbone) > 200 and set(backbone) <= set(saved) and set(step1) - set(backbone) == {
        "params/seg_head/conv/kernel", "params/seg_head/conv/bias", "params/seg_head/bn/scale",
        "params/seg_head/bn/bias", "params/seg_classifier/kernel", "params/seg_classifier/bias",
    }  # fmt: skip
    changed = [k for k in backbone if not np.array_equal(step1[k], saved[k])]
    assert not changed, f"step 1 does not start from the checkpoint's backbone: {changed[:5]}"
    assert step1["params/seg_classifier/kernel"].shape == (1, 1, 240, CLASSES)  # 15C, C = 16
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if "train/loss" in r]
    assert train[0]["train/learning_rate"] == 0.0 < train[1]["train/learning_rate"]

    # Evaluated every val image once, at its own size: the metrics of segmenting them one by one.
    ev = result.eval
    assert ev["count"] == len(VAL_SIZES) and ev["unreadable"] == 0 and len(ev["iou"]) == CLASSES
    model, variables = load_pretrained(str(tmp_path / "model.safetensors"))
    assert model.num_classes == CLASSES and model.config.head == "segmentation"
    expected = reference_metrics(model, variables, folder)
    assert expected["pixels"] == sum((h - 3) * w for h, w in VAL_SIZES)
    # Predictions from another compilation may differ in a near-tie pixel or two, no more.
    assert abs(ev["pixel_accuracy"] / 100 * expected["pixels"] - expected["correct"]) <= 2
    assert ev["miou"] == pytest.approx(expected["miou"], abs=0.1)


def test_num_classes_must_match_the_folder(folder, classifier_file, tmp_path):
    weights, _ = classifier_file
    config = finetune_config(folder, weights)
    config.num_classes = CLASSES + 1
    message = f"num_classes={CLASSES + 1} but {folder / 'classes.txt'} names {CLASSES} classes"
    with pytest.raises(ValueError, match=re.escape(message)):
        train_and_evaluate(config, str(tmp_path))
    assert not (tmp_path / "checkpoints").exists()


def test_align_corners_override_survives_export(tmp_path):
    """`model_overrides={"align_corners": True}` is recorded in the exported file and applied on loading."""
    from hrnet_flax import load_pretrained
    from hrnet_flax.parallel import make_mesh
    from hrnet_flax.train.checkpoint import export_weights
    from hrnet_flax.train.optim import create_optimizer
    from hrnet_flax.train.step import create_train_state

    for align in (True, False):
        config = apply_overrides(short_config(), [f"model_overrides.align_corners={align}"])
        state = create_train_state(config, create_optimizer(config), make_mesh())
        path = tmp_path / f"align_{align}.safetensors"
        export_weights(config, state, str(path))
        model, variables = load_pretrained(str(path))
        assert model.config.align_corners is align and model.config.upsample == "bilinear"
        assert model.config.head == "segmentation" and model.num_classes == 11
        assert leaves_equal(variables, state.variables())
