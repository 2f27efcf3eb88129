"""The segmentation task: losses against PyTorch and hand values, the exact confusion matrix and
mIoU (any batch size, 1 or 2 devices), and test-time inference against a PyTorch transcription of
the official `multi_scale_inference`."""

import dataclasses
import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from data_support import cpu_env

from hrnet_flax.evaluate import evaluate
from hrnet_flax.models.resize import resize_bilinear
from hrnet_flax.tasks import TASKS, Segmentation
from hrnet_flax.tasks.segmentation import infer_scores, iou_metrics, segment, window_layout
from hrnet_flax.train.config import TrainConfig, segmentation_demo_config

HERE = os.path.dirname(os.path.abspath(__file__))
K = 5


class PixelModel(nn.Module):
    """Per-pixel logits at full resolution, a 1x1 convolution (equivariant to shifts and flips)."""

    classes: int = K

    @nn.compact
    def __call__(self, x, train=False):
        kernel = self.param("kernel", nn.initializers.normal(2.0), (x.shape[-1], self.classes))
        return x @ kernel + self.param("bias", nn.initializers.normal(1.0), (self.classes,))


class StrideModel(nn.Module):
    """Logits at stride 4 (4x4 mean pooling, 1x1 convolution) plus a ramp across the columns, so
    the prediction of a mirrored image is not the mirrored prediction."""

    classes: int = K

    @nn.compact
    def __call__(self, x, train=False):
        pooled = nn.avg_pool(x, (4, 4), strides=(4, 4))
        kernel = self.param("kernel", nn.initializers.normal(2.0), (x.shape[-1], self.classes))
        ramp = self.param("ramp", nn.initializers.normal(0.5), (self.classes,))
        columns = jnp.arange(pooled.shape[2], dtype=jnp.float32)[None, None, :, None] / pooled.shape[2]
        return pooled @ kernel + columns * ramp


def init(model, shape=(1, 32, 32, 3), seed=0):
    return model.init(jax.random.key(seed), jnp.zeros(shape))


def torch_ce(logits_nhwc, labels, ignore, weight=None, align_corners=False):
    """PyTorch's F.interpolate + F.cross_entropy, as the official `CrossEntropy`."""
    import torch
    import torch.nn.functional as F

    score = torch.from_numpy(np.asarray(logits_nhwc, np.float64)).permute(0, 3, 1, 2)
    score = F.interpolate(score, size=labels.shape[1:], mode="bilinear", align_corners=align_corners)
    w = None if weight is None else torch.tensor(weight, dtype=torch.float64)
    return float(F.cross_entropy(score, torch.from_numpy(labels.astype(np.int64)), weight=w, ignore_index=ignore))


def torch_ohem(logits_nhwc, labels, ignore, thresh, min_kept, weight=None, align_corners=False):
    """The official `OhemCrossEntropy.forward`, transcribed."""
    import torch
    import torch.nn.functional as F

    score = torch.from_numpy(np.asarray(logits_nhwc, np.float64)).permute(0, 3, 1, 2)
    score = F.interpolate(score, size=labels.shape[1:], mode="bilinear", align_corners=align_corners)
    target = torch.from_numpy(labels.astype(np.int64))
    w = None if weight is None else torch.tensor(weight, dtype=torch.float64)
    pixel_losses = F.cross_entropy(score, target, weight=w, ignore_index=ignore, reduction="none").view(-1)
    mask = target.view(-1) != ignore
    tmp = target.clone()
    tmp[tmp == ignore] = 0
    pred = F.softmax(score, dim=1).gather(1, tmp.unsqueeze(1))
    pred, ind = pred.view(-1)[mask].sort()
    threshold = max(float(pred[min(max(1, min_kept), pred.numel() - 1)]), thresh)
    return float(pixel_losses[mask][ind][pred < threshold].mean())


def loss_of(task, logits, labels, mask=None):
    mask = np.ones(len(labels), bool) if mask is None else mask
    batch = {"label": jnp.asarray(labels), "mask": jnp.asarray(mask)}
    loss, metrics = jax.jit(task.loss)(jnp.asarray(logits, jnp.float32), batch)
    return float(loss), {k: float(v) for k, v in metrics.items()}


def random_case(seed=0, n=2, size=(12, 16), stride=4, classes=K, ignore=255, ignore_fraction=0.2):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, size[0] // stride, size[1] // stride, classes)).astype(np.float32) * 2
    labels = rng.integers(0, classes, (n, *size)).astype(np.int32)
    labels[rng.random(labels.shape) < ignore_fraction] = ignore
    return logits, labels


# --- loss --------------------------------------------------------------------------------------


def test_cross_entropy_by_hand():
    """Two pixels counted (one ignored), logits at the label size: the mean of -log softmax."""
    logits = np.array([[[[2.0, 0.0, -1.0], [0.5, 0.5, 0.5], [1.0, 2.0, 0.0]]]], np.float32)
    labels = np.array([[[0, 255, 1]]], np.int32)
    nll = lambda z, y: np.log(np.exp(z).sum()) - z[y]  # noqa: E731
    a, b = nll(logits[0, 0, 0], 0), nll(logits[0, 0, 2], 1)
    loss, metrics = loss_of(Segmentation(num_classes=3), logits, labels)
    assert loss == pytest.approx((a + b) / 2, rel=1e-6)
    weighted, _ = loss_of(Segmentation(num_classes=3, class_weights=(2.0, 0.5, 1.0)), logits, labels)
    assert weighted == pytest.approx((2.0 * a + 0.5 * b) / 2.5, rel=1e-6)  # PyTorch's weight-normalised mean
    assert metrics["pixel_accuracy"] == 1.0  # both counted pixels have their class as the argmax
    assert loss != pytest.approx(weighted)


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("weights", [None, (0.8, 1.2, 1.0, 0.5, 2.0)])
def test_cross_entropy_matches_torch(align_corners, weights):
    """Stride-4 logits resized to the label size, ignore label, class weights, a masked row (as if
    all its pixels were ignored)."""
    logits, labels = random_case(n=3)
    mask = np.array([True, False, True])
    task = Segmentation(num_classes=K, class_weights=weights, align_corners=align_corners)
    loss, metrics = loss_of(task, logits, labels, mask)
    torch_labels = np.where(mask[:, None, None], labels, 255)
    assert loss == pytest.approx(torch_ce(logits, torch_labels, 255, weights, align_corners), rel=1e-5)
    # the masked row's pixels do not count: changing them changes nothing
    labels2 = labels.copy()
    labels2[1] = (labels2[1] + 1) % K
    assert loss_of(task, logits, labels2, mask)[0] == loss
    up = np.asarray(resize_bilinear(jnp.asarray(logits), labels.shape[1:], align_corners)).argmax(-1)
    counted = (labels != 255) & mask[:, None, None]
    assert metrics["pixel_accuracy"] == pytest.approx(np.mean(up[counted] == labels[counted]), rel=1e-6)


def ohem_case():
    """Five counted pixels of two classes with true-class probabilities 0.3, 0.5, 0.8, 0.95, 0.99
    (and one ignored pixel): logits (0, log(p / (1 - p))) with label 1, or mirrored with label 0."""
    p = np.array([0.95, 0.5, 0.3, 0.99, 0.8, 0.1])
    labels = np.array([[[1, 0, 1, 0, 1, -1]]], np.int32)
    z = np.log(p / (1 - p))
    logits = np.where(labels[0, 0, :, None] == 1, np.stack([0 * z, z], -1), np.stack([z, 0 * z], -1))
    return logits[None, None].astype(np.float32), labels, p


@pytest.mark.parametrize(
    "keep,threshold,kept",
    [
        (2, 0.9, [0.3, 0.5, 0.8]),  # threshold max(p_sorted[2] = 0.8, 0.9) = 0.9
        (2, 0.6, [0.3, 0.5]),  # threshold max(0.8, 0.6) = 0.8, strictly below it
        (100, 0.6, [0.3, 0.5, 0.8, 0.95]),  # k = n - 1 = 4: threshold 0.99
        (1, 0.2, [0.3]),  # threshold 0.5
    ],
)
def test_ohem_by_hand(keep, threshold, kept):
    logits, labels, p = ohem_case()
    weights = (0.5, 2.0)
    weight_of = {0.95: 2.0, 0.5: 0.5, 0.3: 2.0, 0.99: 0.5, 0.8: 2.0}
    task = Segmentation(num_classes=2, ignore_label=-1, ohem=True, ohem_keep=keep, ohem_threshold=threshold)
    assert loss_of(task, logits, labels)[0] == pytest.approx(np.mean(-np.log(kept)), rel=1e-5)
    weighted = Segmentation(num_classes=2, ignore_label=-1, class_weights=weights, ohem=True, ohem_keep=keep, ohem_threshold=threshold)
    expected = np.mean([-weight_of[q] * np.log(q) for q in kept])  # the UNWEIGHTED mean of weighted losses
    assert loss_of(weighted, logits, labels)[0] == pytest.approx(expected, rel=1e-5)
    assert loss_of(weighted, logits, labels)[0] == pytest.approx(torch_ohem(logits, labels, -1, threshold, keep, weights), rel=1e-5)


@pytest.mark.parametrize("keep,threshold", [(40, 0.7), (10, 0.95), (1000, 0.5)])
def test_ohem_matches_torch(keep, threshold):
    logits, labels = random_case(seed=3, n=2, size=(16, 16))
    weights = (0.8, 1.2, 1.0, 0.5, 2.0)
    task = Segmentation(num_classes=K, class_weights=weights, ohem=True, ohem_keep=keep, ohem_threshold=threshold)
    loss, _ = loss_of(task, logits, labels)
    assert loss == pytest.approx(torch_ohem(logits, labels, 255, threshold, keep, weights), rel=1e-5)


@pytest.mark.parametrize("ohem", [False, True])
def test_loss_without_counted_pixels_is_zero_with_finite_gradients(ohem):
    logits, labels = random_case(n=2)
    task = Segmentation(num_classes=K, ohem=ohem, ohem_keep=4)
    batch = {"label": jnp.asarray(labels), "mask": jnp.zeros(2, bool)}
    value, grad = jax.jit(jax.value_and_grad(lambda z: task.loss(z, batch)[0]))(jnp.asarray(logits))
    assert float(value) == 0.0 and np.all(np.asarray(grad) == 0)
    batch["mask"] = jnp.ones(2, bool)
    value, grad = jax.jit(jax.value_and_grad(lambda z: task.loss(z, batch)[0]))(jnp.asarray(logits))
    assert float(value) > 0 and np.all(np.isfinite(np.asarray(grad))) and np.abs(np.asarray(grad)).sum() > 0


# --- confusion matrix and metrics ------------------------------------------------------------------


def test_iou_metrics_by_hand():
    confusion = np.array([[3, 1, 0, 0], [0, 2, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0]])  # class 2 absent
    m = iou_metrics(confusion)
    iou = [3 / (3 + 1 + 1), 2 / (2 + 1), None, 0.0]  # class 3: in the truth, never predicted
    assert m["iou"][2] is None
    assert m["iou"][0] == pytest.approx(100 * iou[0]) and m["iou"][1] == pytest.approx(100 * iou[1]) and m["iou"][3] == 0.0
    assert m["miou"] == pytest.approx(100 * (iou[0] + iou[1]) / 3)
    assert m["pixel_accuracy"] == pytest.approx(100 * 5 / 7)
    assert m["mean_accuracy"] == pytest.approx(100 * (3 / 4 + 1 + 0) / 3)
    assert iou_metrics(np.zeros((3, 3), np.int64))["miou"] == 0.0


def reference_confusion(scores, labels, mask, classes=K, ignore=255):
    predicted = scores.argmax(-1)
    counted = (labels != ignore) & mask[:, None, None]
    expected = np.zeros((classes, classes), np.int64)
    np.add.at(expected, (labels[counted], predicted[counted]), 1)
    return expected


def test_eval_sums_confusion_and_summary():
    logits, labels = random_case(seed=5, n=3)
    mask = np.array([True, True, False])
    task = Segmentation(num_classes=K)
    sums = jax.device_get(jax.jit(task.eval_sums)(jnp.asarray(logits), {"label": jnp.asarray(labels), "mask": jnp.asarray(mask)}))
    up = np.asarray(resize_bilinear(jnp.asarray(logits), labels.shape[1:]))
    expected = reference_confusion(up, labels, mask)
    assert sums["confusion"].dtype == np.int32 and np.array_equal(sums["confusion"], expected)
    assert int(sums["count"]) == 2 and expected.sum() > 0
    metrics = task.summarize(sums)
    assert metrics["miou"] == pytest.approx(iou_metrics(expected)["miou"]) and metrics["count"] == 2
    assert metrics["loss"] == pytest.approx(torch_ce(logits, np.where(mask[:, None, None], labels, 255), 255), rel=1e-5)
    assert task.describe(metrics) == f"mIoU {metrics['miou']:.2f}%, pixel acc {metrics['pixel_accuracy']:.1f}%"


def test_labels_outside_the_classes_are_an_error():
    logits, labels = random_case(n=1)
    labels[0, 0, 0] = K  # neither a class nor the ignore label
    task = Segmentation(num_classes=K)
    sums = jax.device_get(task.eval_sums(jnp.asarray(logits), {"label": jnp.asarray(labels), "mask": jnp.ones(1, bool)}))
    with pytest.raises(ValueError, match=r"1 label pixels are neither a class in \[0, 5\) nor the ignore label 255"):
        task.summarize(sums)


def seg_data(n=7, size=(32, 32), seed=0):
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(n, *size, 3)).astype(np.float32)
    labels = rng.integers(0, K, (n, *size)).astype(np.int32)
    labels[rng.random(labels.shape) < 0.1] = 255
    return images, labels


def seg_batches(images, labels, batch_size):
    for start in range(0, len(labels), batch_size):
        img, lab = images[start : start + batch_size], labels[start : start + batch_size]
        pad = batch_size - len(lab)
        yield {
            "image": np.concatenate([img, np.zeros((pad, *img.shape[1:]), np.float32)]),
            "label": np.concatenate([lab, np.zeros((pad, *lab.shape[1:]), np.int32)]),
            "mask": np.arange(batch_size) < len(lab),
        }


def test_evaluate_exact_for_any_batch_size():
    images, labels = seg_data()
    model = StrideModel()
    variables = init(model)
    task = Segmentation(num_classes=K)
    scores = np.asarray(resize_bilinear(model.apply(variables, jnp.asarray(images)), (32, 32)))
    expected = iou_metrics(reference_confusion(scores, labels, np.ones(7, bool)))
    for batch_size in (1, 3, 7):
        out = evaluate(model, variables, seg_batches(images, labels, batch_size), task=task)
        assert out["count"] == 7 and out["unreadable"] == 0
        assert out["miou"] == expected["miou"] and out["iou"] == expected["iou"]
        assert out["pixel_accuracy"] == expected["pixel_accuracy"]
    assert 0 < expected["miou"] < 100


TWO_DEVICES = r"""
import json, sys, jax
sys.path.insert(0, sys.argv[1])
from test_seg_task import StrideModel, init, seg_data, seg_batches
from hrnet_flax.evaluate import evaluate
from hrnet_flax.tasks import Segmentation
assert jax.local_device_count() == 2, jax.local_devices()
images, labels = seg_data()
model = StrideModel()
task = Segmentation(num_classes=5, flip=True, scales=(1.0, 0.75))
print(json.dumps([evaluate(model, init(model), seg_batches(images, labels, b), task=task) for b in (1, 4)]))
"""


def test_evaluate_same_on_two_devices():
    """Test-time augmentation included: 2 devices give the integer totals of 1."""
    images, labels = seg_data()
    model = StrideModel()
    task = Segmentation(num_classes=K, flip=True, scales=(1.0, 0.75))
    single = evaluate(model, init(model), seg_batches(images, labels, 7), task=task)
    proc = subprocess.run([sys.executable, "-c", TWO_DEVICES, HERE], env=cpu_env(2), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for out in json.loads(proc.stdout.strip().splitlines()[-1]):
        assert out["miou"] == single["miou"] and out["iou"] == single["iou"] and out["count"] == 7
        assert out["loss"] == pytest.approx(single["loss"], rel=1e-5)


# --- test-time inference -----------------------------------------------------------------------


def official_inference(params, image, *, scales, flip, window, stride, align_corners):
    """Float64 PyTorch transcription of the official `multi_scale_inference` for `StrideModel`,
    with the documented choices of `infer_scores`: sizes int(s * side + 0.5), zero padding,
    multiples of 32 for whole images. Returns the summed exp(logits) (1, K, H, W)."""
    import torch
    import torch.nn.functional as F

    kernel = torch.from_numpy(np.asarray(params["kernel"], np.float64))
    ramp = torch.from_numpy(np.asarray(params["ramp"], np.float64))

    def model(x):  # (1, 3, h, w) -> (1, K, h/4, w/4)
        pooled = F.avg_pool2d(x, 4)
        columns = torch.arange(pooled.shape[3], dtype=torch.float64) / pooled.shape[3]
        return torch.einsum("nchw,ck->nkhw", pooled, kernel) + ramp[None, :, None, None] * columns[None, None, None, :]

    def inference(x):
        size = x.shape[-2:]
        pred = F.interpolate(model(x), size=size, mode="bilinear", align_corners=align_corners)
        if flip:
            back = F.interpolate(model(x.flip(3)), size=size, mode="bilinear", align_corners=align_corners).flip(3)
            pred = (pred + back) * 0.5
        return pred.exp()

    def pad(x, h, w):
        return F.pad(x, (0, max(w - x.shape[3], 0), 0, max(h - x.shape[2], 0)))

    img = torch.from_numpy(np.asarray(image, np.float64)).permute(0, 3, 1, 2)
    _, _, height, width = img.shape
    final = 0
    for scale in scales:
        h, w = int(scale * height + 0.5), int(scale * width + 0.5)
        new = F.interpolate(img, size=(h, w), mode="bilinear", align_corners=False)  # cv2.INTER_LINEAR
        if window is None:
            preds = inference(pad(new, -(-h // 32) * 32, -(-w // 32) * 32))[:, :, :h, :w]
        else:
            new = pad(new, *window)
            nh, nw = new.shape[2:]
            rows = int(np.ceil((nh - window[0]) / stride[0])) + 1
            cols = int(np.ceil((nw - window[1]) / stride[1])) + 1
            preds = torch.zeros(1, K, nh, nw, dtype=torch.float64)
            count = torch.zeros(1, 1, nh, nw, dtype=torch.float64)
            for r in range(rows):
                for c in range(cols):
                    h0, w0 = r * stride[0], c * stride[1]
                    h1, w1 = min(h0 + window[0], nh), min(w0 + window[1], nw)
                    pred = inference(pad(new[:, :, h0:h1, w0:w1], *window))
                    preds[:, :, h0:h1, w0:w1] += pred[:, :, : h1 - h0, : w1 - w0]
                    count[:, :, h0:h1, w0:w1] += 1
            preds = (preds / count)[:, :, :h, :w]
        final = final + F.interpolate(preds, size=(height, width), mode="bilinear", align_corners=align_corners)
    return final.numpy()


@pytest.mark.parametrize(
    "scales,flip,window",
    [((1.0,), True, None), ((1.0, 0.75, 1.5), True, None), ((1.0, 0.75), False, (32, 32)), ((1.25,), True, (32, 64))],
)
@pytest.mark.parametrize("align_corners", [False, True])
def test_infer_matches_official_multi_scale_inference(scales, flip, window, align_corners):
    image = np.random.default_rng(2).normal(size=(1, 40, 52, 3)).astype(np.float32)
    model = StrideModel()
    variables = init(model)
    stride = None if window is None else (int(window[0] * 2 / 3), int(window[1] * 2 / 3))
    run = jax.jit(lambda v, x: infer_scores(model, v, x, scales=scales, flip=flip, window=window, align_corners=align_corners))
    ours = np.asarray(run(variables, image))
    ref = official_inference(variables["params"], image, scales=scales, flip=flip, window=window, stride=stride, align_corners=align_corners)
    assert ours.shape == (1, 40, 52, K)
    np.testing.assert_allclose(ours, np.log(ref.transpose(0, 2, 3, 1)), atol=2e-5, rtol=2e-5)
    assert np.array_equal(ours.argmax(-1), ref.argmax(1))


def test_infer_single_scale_is_the_resized_logits():
    images = np.random.default_rng(0).normal(size=(2, 64, 96, 3)).astype(np.float32)
    model = StrideModel()
    variables = init(model)
    for align_corners in (False, True):
        task = Segmentation(num_classes=K, align_corners=align_corners)
        expected = resize_bilinear(model.apply(variables, jnp.asarray(images)), (64, 96), align_corners)
        ours = jax.jit(task.infer, static_argnums=0)(model, variables, images)
        np.testing.assert_allclose(np.asarray(ours), np.asarray(expected), rtol=1e-6, atol=1e-6)


def test_window_inference_equals_whole_image_for_a_pixelwise_model():
    images = np.random.default_rng(1).normal(size=(2, 72, 100, 3)).astype(np.float32)
    model = PixelModel()
    variables = init(model)
    whole = np.asarray(infer_scores(model, variables, images))
    np.testing.assert_array_equal(whole, np.asarray(model.apply(variables, jnp.asarray(images))))
    corners, padded = window_layout(72, 100, (32, 64), (21, 42))
    assert len(corners) == 3 * 2 and padded == (74, 106)  # overlapping windows, padded at the border
    for window, stride in (((32, 64), None), ((32, 32), (32, 32)), ((96, 128), None)):
        windowed = infer_scores(model, variables, images, window=window, stride=stride)
        np.testing.assert_allclose(np.asarray(windowed), whole, rtol=1e-5, atol=1e-5)


def test_flip():
    images = np.random.default_rng(4).normal(size=(1, 32, 64, 3)).astype(np.float32)
    pixel, strided = PixelModel(), StrideModel()
    pv, sv = init(pixel), init(strided)
    # a mirror-symmetric model: flipping changes nothing
    np.testing.assert_allclose(infer_scores(pixel, pv, images, flip=True), infer_scores(pixel, pv, images), rtol=1e-6, atol=1e-6)
    # otherwise: the mean of the logits and the mirrored logits of the mirrored image
    plain = np.asarray(infer_scores(strided, sv, images))
    mirrored = np.asarray(infer_scores(strided, sv, images[:, :, ::-1]))[:, :, ::-1]
    flipped = np.asarray(infer_scores(strided, sv, images, flip=True))
    np.testing.assert_allclose(flipped, (plain + mirrored) / 2, rtol=1e-6, atol=1e-6)
    assert np.abs(plain - mirrored).max() > 0.1


def test_multi_scale_sums_exp_logits():
    images = np.random.default_rng(5).normal(size=(1, 64, 64, 3)).astype(np.float32)
    model = PixelModel()
    variables = init(model)
    full = np.asarray(model.apply(variables, jnp.asarray(images)), np.float64)
    half = model.apply(variables, resize_bilinear(jnp.asarray(images), (32, 32)))
    half = np.asarray(resize_bilinear(jnp.exp(half), (64, 64)), np.float64)
    ours = np.asarray(infer_scores(model, variables, images, scales=(1.0, 0.5)))
    np.testing.assert_allclose(ours, np.log(np.exp(full) + half), rtol=1e-5, atol=1e-5)


def test_segment_any_image_size():
    image = np.random.default_rng(6).normal(size=(37, 50, 3)).astype(np.float32)
    model = StrideModel()
    variables = init(model)
    labels = segment(model, variables, image, scales=(1.0, 0.5), flip=True, align_corners=True)
    scores = infer_scores(model, variables, image[None], scales=(1.0, 0.5), flip=True, align_corners=True)
    assert labels.dtype == np.int32 and labels.shape == (37, 50)
    assert np.array_equal(labels, np.asarray(scores[0]).argmax(-1)) and len(np.unique(labels)) > 1
    with pytest.raises(ValueError, match="has no config.align_corners"):
        segment(model, variables, image)
    with pytest.raises(ValueError, match=r"one normalised image \[H, W, 3\]; got shape \(1, 37, 50, 3\)"):
        segment(model, variables, image[None], align_corners=False)


# --- configuration -----------------------------------------------------------------------------


def test_from_config():
    assert TASKS["segmentation"] is Segmentation
    task = Segmentation.from_config(segmentation_demo_config())
    assert task == Segmentation(num_classes=11)
    config = TrainConfig(
        task="segmentation",
        model="hrnetv2_w48_seg",
        num_classes=3,
        model_overrides={"align_corners": True},
        class_weights=[1.0, 2.0, 0.5],
        ohem=True,
        ohem_threshold=0.7,
        ohem_keep=1000,
        ignore_label=-1,
        eval_scales=[0.5, 1.0],
        eval_flip=True,
        eval_window=[512, 1024],
        eval_stride=[256, 512],
    )
    task = Segmentation.from_config(config)
    assert task.align_corners is True and task.class_weights == (1.0, 2.0, 0.5) and task.ohem_keep == 1000
    assert task.scales == (0.5, 1.0) and task.window == (512, 1024) and task.stride == (256, 512) and task.flip
    assert task.ignore_label == -1 and task.ohem_threshold == 0.7 and hash(task)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"class_weights": (1.0, 2.0)}, "2 class_weights for 5 classes"),
        ({"ignore_label": 3}, "ignore_label=3 is a class index"),
        ({"window": (48, 64)}, r"sliding window \(48, 64\) must be \(H, W\), positive multiples of 32"),
        ({"window": (64, 64), "stride": (64, 65)}, r"stride \(64, 65\) must be"),
        ({"stride": (8, 8)}, "without a window"),
        ({"scales": (1.0, 0.0)}, "must be positive"),
        ({"ohem_keep": 0}, "ohem_keep=0"),
    ],
)
def test_bad_settings_are_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Segmentation(num_classes=K, **kwargs)


def test_canvases_resolve_and_datasets():
    from hrnet_flax.data import canvases

    config = dataclasses.replace(segmentation_demo_config(), train_examples=None)
    task = Segmentation.from_config(config)
    assert task.resolve(config).train_examples == canvases.split_size("train")
    with pytest.raises(ValueError, match="config.num_classes=5 but the dataset canvases has 11 classes"):
        task.resolve(dataclasses.replace(config, num_classes=5))
    with pytest.raises(ValueError, match=r"crop_size=\(64, 96\): the canvases dataset is square"):
        task.resolve(dataclasses.replace(config, crop_size=(64, 96)))
    train, make_eval = task.datasets(config, train_batch=2, eval_batch=3, start_step=0)
    batch = next(train)
    assert batch["image"].shape == (2, 64, 64, 3) and batch["label"].shape == (2, 64, 64) and batch["mask"].all()
    batch = next(iter(make_eval()))
    assert batch["image"].shape == (3, 64, 64, 3) and batch["label"].shape == (3, 64, 64)


def test_folder_resolve_and_datasets(tmp_path):
    from test_seg_data import make_folder

    make_folder(tmp_path, {"train": [(40, 50), (48, 54)], "val": [(40, 50)]}, num_classes=3)
    config = TrainConfig(task="segmentation", model="hrnetv2_w18_small_seg", num_classes=3, dataset=str(tmp_path), crop_size=(32, 64))
    task = Segmentation.from_config(config)
    assert task.resolve(config).train_examples == 2
    with pytest.raises(ValueError, match="num_classes=4 but"):
        task.resolve(dataclasses.replace(config, num_classes=4))
    train, make_eval = task.datasets(config, train_batch=2, eval_batch=1, start_step=0)
    batch = next(train)
    assert batch["image"].shape == (2, 32, 64, 3) and batch["label"].shape == (2, 32, 64)
    (batch,) = list(make_eval())
    assert batch["image"].shape == (1, 64, 64, 3) and batch["label"].shape == (1, 64, 64) and batch["mask"].all()
