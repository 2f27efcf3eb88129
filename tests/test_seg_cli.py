"""The command line with segmentation models, in process: `segment` (label maps, overlays,
test-time options, errors), `eval` on an image/mask folder (against `evaluate`), `demo --task
segmentation` and `info` of a segmenter. Weights are random (`save_checkpoint` files)."""

from __future__ import annotations

import contextlib
import io
import json
import math
import pathlib

import jax
import numpy as np
import pytest
from data_support import run_cli, smooth_images
from PIL import Image
from test_seg_train import CLASSES, SHORT, make_seg_folder

from hrnet_flax import cli

SIZES = {"one.png": (40, 56), "two.jpg": (64, 50)}  # (H, W), not multiples of 32


@pytest.fixture(scope="module")
def seg_weights(tmp_path_factory) -> tuple[str, object, dict]:
    """A random hrnetv2_w18_small_seg for `CLASSES` classes saved with `save_checkpoint`, loaded back.
    Its classifier kernel is scaled up so that label maps are not one class everywhere."""
    import hrnet_flax as hf
    from hrnet_flax.models.initialization import init_variables

    variables = init_variables(hf.create_model("hrnetv2_w18_small_seg", num_classes=CLASSES), jax.random.key(3))
    variables["params"]["seg_classifier"]["kernel"] = variables["params"]["seg_classifier"]["kernel"] * 300.0
    path = tmp_path_factory.mktemp("seg_weights") / "seg.safetensors"
    hf.save_checkpoint(path, variables, arch="hrnetv2_w18_small_seg", num_classes=CLASSES)
    model, loaded = hf.load_pretrained(str(path))
    return str(path), model, loaded


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[pathlib.Path]:
    return smooth_images(tmp_path_factory.mktemp("seg_images"), SIZES, seed=5, block=8)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> pathlib.Path:
    return make_seg_folder(tmp_path_factory.mktemp("seg_folder"))


def expected_labels(model, variables, path, **settings) -> np.ndarray:
    from hrnet_flax.data.images import load_rgb
    from hrnet_flax.data.segmentation import normalize
    from hrnet_flax.tasks.segmentation import segment

    return segment(model, variables, normalize(load_rgb(path)), **settings)


def test_segment_writes_label_maps_and_overlays(seg_weights, images, tmp_path):
    from hrnet_flax.data.images import load_rgb
    from hrnet_flax.predict import overlay, palette

    weights, model, variables = seg_weights
    out_dir = tmp_path / "out"
    code, out, err = run_cli("segment", "--model", weights, *images, "--out", out_dir)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == len(images), out
    for path, line in zip(images, lines):
        h, w = SIZES[path.name]
        labels_path, overlay_path = out_dir / f"{path.stem}_labels.png", out_dir / f"{path.stem}_labels_overlay.png"
        assert line.startswith(f"{path}: labels {labels_path}, overlay {overlay_path}; class "), line
        with Image.open(labels_path) as picture:
            assert picture.mode == "P" and picture.size == (w, h)
            assert picture.getpalette()[: 3 * CLASSES] == palette(CLASSES)[:CLASSES].reshape(-1).tolist()
            labels = np.asarray(picture)
        assert labels.max() < CLASSES
        expected = expected_labels(model, variables, path)
        np.testing.assert_array_equal(labels, expected)
        assert len(np.unique(labels)) > 1  # a real label map, not one class everywhere
        with Image.open(overlay_path) as picture:
            assert picture.mode == "RGB" and picture.size == (w, h)
            np.testing.assert_array_equal(np.asarray(picture), overlay(load_rgb(path), expected, CLASSES, 0.5))
        # The printed areas: each class's share of the pixels, largest first.
        counts = np.bincount(labels.ravel(), minlength=CLASSES)
        top = ", ".join(f"class {c}: {counts[c] / labels.size:.1%}" for c in np.argsort(-counts, kind="stable") if counts[c])
        assert line.endswith(f"; {top}"), line


def test_segment_flip_and_scales_to_one_file(seg_weights, images, tmp_path):
    weights, model, variables = seg_weights
    target = tmp_path / "labels.png"
    code, out, err = run_cli("segment", "--model", weights, images[0], "--out", target, "--flip", "--scales", "0.75", "1.0")
    assert code == 0, err
    assert out.startswith(f"{images[0]}: labels {target}, overlay {tmp_path / 'labels_overlay.png'}")
    assert (tmp_path / "labels_overlay.png").is_file()
    labels = np.asarray(Image.open(target))
    np.testing.assert_array_equal(labels, expected_labels(model, variables, images[0], scales=(0.75, 1.0), flip=True))
    assert not np.array_equal(labels, expected_labels(model, variables, images[0]))  # the options changed something


def test_segment_errors(seg_weights, images, tmp_path):
    import hrnet_flax as hf
    from hrnet_flax.models.initialization import init_variables

    weights, _, _ = seg_weights
    out_dir = tmp_path / "out"
    missing = tmp_path / "missing.png"
    code, out, err = run_cli("segment", "--model", weights, images[0], missing, "--out", out_dir)
    assert code == 2 and out == ""
    assert f"hrnet-flax segment: error: image file {missing} does not exist" in err, err
    assert not out_dir.exists()  # every image is read before any is segmented

    classifier = tmp_path / "cls.safetensors"
    variables = init_variables(hf.create_model("hrnet_w18_small", num_classes=10), jax.random.key(0))
    hf.save_checkpoint(classifier, variables, arch="hrnet_w18_small", num_classes=10)
    code, out, err = run_cli("segment", "--model", classifier, images[0], "--out", out_dir)
    assert code == 2 and out == ""
    assert f"{classifier} is a classification model; `segment` needs a segmentation model" in err, err
    code, out, err = run_cli("predict", "--model", weights, images[0])
    assert code == 2 and "is a segmentation model; use `hrnet-flax segment` for it" in err, err
    code, out, err = run_cli("segment", "--model", weights, images[0], "--window", "48x40")
    assert code == 2 and "sliding window (48, 40) must be (H, W), positive multiples of 32" in err, err

    # Two images whose label maps would land on the same file: refused before anything is written.
    twin = tmp_path / "twin" / images[0].name
    twin.parent.mkdir()
    twin.write_bytes(images[0].read_bytes())
    code, out, err = run_cli("segment", "--model", weights, images[0], twin, "--out", out_dir)
    assert code == 2 and out == "" and not list(out_dir.glob("*.png"))
    assert f"{images[0]} and {twin} would both be written to {out_dir / 'one_labels.png'}" in err, err


def reference_eval(model_path: str, folder: pathlib.Path, batch_size: int = 2, **settings) -> dict:
    """`evaluate` with the Segmentation task on the folder's val split, as a JSON round trip."""
    from hrnet_flax import load_pretrained
    from hrnet_flax.data import segmentation as seg_data
    from hrnet_flax.evaluate import evaluate
    from hrnet_flax.tasks import Segmentation

    model, variables = load_pretrained(model_path, scan=True)
    batches = seg_data.eval_dataset(seg_data.segmentation_source(str(folder)), batch_size_per_process=batch_size, split="val")
    result = evaluate(model, variables, batches, task=Segmentation(num_classes=CLASSES, **settings))
    return json.loads(json.dumps(result))


@pytest.mark.parametrize("window", [None, (32, 32)])
def test_eval_on_a_folder_equals_evaluate(seg_weights, folder, window):
    weights, _, _ = seg_weights
    extra = [] if window is None else ["--window", f"{window[0]}x{window[1]}"]
    code, out, err = run_cli("eval", "--model", weights, "--data-dir", folder, "--batch-size", "2", *extra)
    assert code == 0, err
    (line,) = out.strip().splitlines()
    result = json.loads(line)
    assert f"evaluating {weights} on 2 batches of {folder} (val)" in err, err
    assert result["count"] == 3 and result["unreadable"] == 0 and len(result["iou"]) == CLASSES
    assert result == reference_eval(weights, folder, window=window)


def test_eval_errors(seg_weights, tmp_path):
    weights, _, _ = seg_weights
    code, out, err = run_cli("eval", "--model", weights, "--data-dir", tmp_path / "nowhere")
    assert code == 2 and out == "" and f"segmentation dataset '{tmp_path / 'nowhere'}': no such folder" in err, err
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as e:
        cli.main(["eval", "--model", weights, "--data-dir", str(tmp_path), "--window", "32"])
    assert e.value.code == 2 and "argument --window: expected HxW, e.g. 512x1024; got '32'" in err.getvalue()


@pytest.mark.slow
def test_demo_segmentation(tmp_path):
    from hrnet_flax.data import canvases

    code, out, err = run_cli("demo", "--task", "segmentation", "--workdir", tmp_path, "--set", *SHORT)
    assert code == 0, err
    summary = out.strip().splitlines()[-1]
    assert summary.startswith("hrnetv2_w18_small_seg on canvases: 24 steps of 16 images on 1 device(s)"), summary
    assert "; validation mIoU " in summary and f"({canvases.EVAL_CANVASES} images)" in summary, summary
    assert f"weights in {tmp_path / 'model.safetensors'}" in summary and (tmp_path / "model.safetensors").is_file()


def test_info_of_a_segmenter():
    code, out, err = run_cli("info", "hrnetv2_w48_seg", "--size", "1024x2048")
    assert code == 0, err
    (row,) = [line for line in out.splitlines() if line.startswith("| hrnetv2_w48_seg |")]
    assert row.startswith("| hrnetv2_w48_seg | 65.859 |"), row
    assert "one 1024x2048 image" in out


def test_eval_takes_the_class_count_from_the_model(seg_weights, folder, tmp_path):
    """A folder without classes.txt has the model's classes; one whose classes.txt names another
    count is an error naming it; without --batch-size one image per device and batch."""
    import shutil

    weights, _, _ = seg_weights
    bare = tmp_path / "bare"
    shutil.copytree(folder, bare)
    (bare / "classes.txt").unlink()
    code, out, err = run_cli("eval", "--model", weights, "--data-dir", bare)
    assert code == 0, err
    devices = jax.local_device_count()
    assert f"evaluating {weights} on {math.ceil(3 / devices)} batches of {bare} (val)" in err, err
    assert json.loads(out) == reference_eval(weights, folder, batch_size=devices)

    (bare / "classes.txt").write_text("a\nb\nc\n")
    code, out, err = run_cli("eval", "--model", weights, "--data-dir", bare, "--batch-size", "2")
    assert code == 2 and out == ""
    assert f"num_classes={CLASSES} but {bare / 'classes.txt'} names 3 classes" in err, err


def test_segment_files_follows_every_setting_of_the_task(seg_weights, images, tmp_path):
    """`segment_files` infers as the task says, its stride and align_corners included."""
    from hrnet_flax.predict import segment_files
    from hrnet_flax.tasks import Segmentation

    _, model, variables = seg_weights
    settings = {"window": (32, 32), "stride": (16, 16), "align_corners": True}
    task = Segmentation(num_classes=CLASSES, **settings)
    ((labels_path, _, _),) = segment_files(model, variables, [images[0]], task, str(tmp_path / "labels.png"))
    labels = np.asarray(Image.open(labels_path))
    np.testing.assert_array_equal(labels, expected_labels(model, variables, images[0], **settings))
    assert not np.array_equal(labels, expected_labels(model, variables, images[0], window=(32, 32)))


def test_eval_refuses_options_of_the_other_task(seg_weights, folder, tmp_path):
    """Segmentation options for a classifier, and classification ones for a segmenter, are refused
    rather than silently ignored."""
    import hrnet_flax as hf

    classifier = tmp_path / "classifier.safetensors"
    model = hf.create_model("hrnet_w18_small", num_classes=3)
    hf.save_checkpoint(classifier, hf.init_variables(model, jax.random.key(0)), arch="hrnet_w18_small", num_classes=3)
    code, _, err = run_cli("eval", "--model", classifier, "--data-dir", folder, "--flip", "--window", "32x32")
    assert code == 2 and "--flip, --window do(es) not apply" in err and "classification model" in err, err
    code, _, err = run_cli("eval", "--model", seg_weights[0], "--data-dir", folder, "--preset", "timm")
    assert code == 2 and "--preset do(es) not apply" in err and "segmentation model" in err, err
