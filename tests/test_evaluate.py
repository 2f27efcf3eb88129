"""Exact evaluation: metric sums against numpy, any batch size and device count, and the
`eval` command end to end on an image folder with a random hrnet_w18_small."""

import contextlib
import io
import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from data_support import cpu_env, make_folder, tiny_model

from hrnet_flax import data
from hrnet_flax.evaluate import evaluate
from hrnet_flax.tasks import Task
from hrnet_flax.tasks.classification import batch_sums

HERE = os.path.dirname(os.path.abspath(__file__))


class Linear(nn.Module):
    """A small stand-in classifier (compiles in a moment)."""

    classes: int = 7

    @nn.compact
    def __call__(self, x, train=False):
        return nn.Dense(self.classes)(x.reshape(x.shape[0], -1))


def reference(logits: np.ndarray, labels: np.ndarray) -> dict:
    """top-1/top-5 % and mean cross-entropy in float64 numpy."""
    logits = logits.astype(np.float64)
    order = np.argsort(-logits, axis=1)
    top1 = order[:, 0] == labels
    top5 = (order[:, :5] == labels[:, None]).any(1)
    logz = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
    nll = logz - logits[np.arange(len(labels)), labels]
    return {"top1": 100 * top1.mean(), "top5": 100 * top5.mean(), "count": len(labels), "loss": nll.mean()}


def batches_of(images, labels, batch_size):
    """Padded+masked batches in the data.py format."""
    for start in range(0, len(labels), batch_size):
        img, lab = images[start : start + batch_size], labels[start : start + batch_size]
        pad = batch_size - len(lab)
        yield {
            "image": np.concatenate([img, np.zeros((pad, *img.shape[1:]), np.float32)]),
            "label": np.concatenate([lab, np.zeros(pad, np.int32)]),
            "mask": np.arange(batch_size) < len(lab),
        }


def _data(n=23, classes=7, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 4, 4, 3)).astype(np.float32), rng.integers(0, classes, n).astype(np.int32)


def test_batch_sums_match_numpy():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(40, 10)).astype(np.float32) * 3
    labels = rng.integers(0, 10, 40).astype(np.int32)
    mask = rng.random(40) < 0.7
    sums = jax.device_get(batch_sums(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(mask)))
    ref = reference(logits[mask], labels[mask])
    n = int(mask.sum())
    assert int(sums["count"]) == n == ref["count"]
    assert int(sums["correct1"]) == round(ref["top1"] * n / 100)
    assert int(sums["correct5"]) == round(ref["top5"] * n / 100)
    np.testing.assert_allclose(float(sums["loss_sum"]) / n, ref["loss"], rtol=1e-5)


@pytest.mark.parametrize("batch_size", [1, 4, 6, 23, 32])
def test_evaluate_exact_for_any_batch_size(batch_size):
    images, labels = _data()
    model = Linear()
    variables = model.init(jax.random.key(0), images[:1])
    ref = reference(np.asarray(model.apply(variables, images)), labels)
    out = evaluate(model, variables, batches_of(images, labels, batch_size))
    assert out["count"] == 23 and out["unreadable"] == 0
    assert out["top1"] == pytest.approx(ref["top1"]) and out["top5"] == pytest.approx(ref["top5"])
    assert out["loss"] == pytest.approx(ref["loss"], rel=1e-5)
    assert 0 < ref["top1"] < ref["top5"] < 100  # the check can fail


class ConfusionTask(Task):
    """A task of another shape: an integer confusion matrix summed over the split (as semantic
    segmentation sums one), its metric derived on the host."""

    name = "confusion"
    main_metric = "accuracy"

    def eval_sums(self, outputs, batch):
        predicted = jnp.argmax(outputs, -1)
        pairs = jax.nn.one_hot(batch["label"], 7, dtype=jnp.int32)[:, :, None] * jax.nn.one_hot(predicted, 7, dtype=jnp.int32)[:, None, :]
        return {"confusion": jnp.sum(pairs * batch["mask"][:, None, None], axis=0)}

    def summarize(self, sums, context=None):
        confusion = np.asarray(sums["confusion"])
        return {"confusion": confusion.tolist(), "accuracy": 100.0 * np.trace(confusion) / max(confusion.sum(), 1)}


def test_evaluate_takes_any_task_with_array_sums():
    images, labels = _data()
    model = Linear()
    variables = model.init(jax.random.key(0), images[:1])
    predicted = np.argmax(np.asarray(model.apply(variables, images)), -1)
    expected = np.zeros((7, 7), np.int64)
    np.add.at(expected, (labels, predicted), 1)
    for batch_size in (4, 23):
        out = evaluate(model, variables, batches_of(images, labels, batch_size), task=ConfusionTask())
        assert np.array_equal(out["confusion"], expected) and expected.sum() == 23
        assert out["accuracy"] == pytest.approx(100.0 * np.mean(predicted == labels)) and out["unreadable"] == 0


SCRIPT = r"""
import json, sys, jax, numpy as np
sys.path.insert(0, sys.argv[1])
from test_evaluate import Linear, _data, batches_of
from hrnet_flax.evaluate import evaluate
assert jax.local_device_count() == 4, jax.local_devices()
images, labels = _data()
model = Linear()
variables = model.init(jax.random.key(0), images[:1])
print(json.dumps([evaluate(model, variables, batches_of(images, labels, b)) for b in (1, 3, 5, 8)]))
"""


def test_evaluate_exact_on_four_devices():
    images, labels = _data()
    model = Linear()
    variables = model.init(jax.random.key(0), images[:1])
    ref = reference(np.asarray(model.apply(variables, images)), labels)
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, HERE], env=cpu_env(4), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for out in json.loads(proc.stdout.strip().splitlines()[-1]):
        assert out["count"] == 23
        assert out["top1"] == pytest.approx(ref["top1"]) and out["top5"] == pytest.approx(ref["top5"])
        assert out["loss"] == pytest.approx(ref["loss"], rel=1e-5)


def test_eval_command_on_image_folder(tmp_path):
    from hrnet_flax.cli import main
    from hrnet_flax.weights.convert import save_checkpoint

    good = make_folder(tmp_path / "images")
    model, variables = tiny_model(1000)  # the same random model as test_predict (one init per run)
    weights = tmp_path / "w.safetensors"
    save_checkpoint(weights, variables, arch="hrnet_w18_small", num_classes=1000)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(["eval", "--model", str(weights), "--data-dir", str(tmp_path / "images"), "--size", "64", "--batch-size", "5"])
    assert rc == 0
    result = json.loads(out.getvalue().strip().splitlines()[-1])
    assert result["count"] == len(good) and result["unreadable"] == 2
    # the command used the folder, the timm preset at 64 and the saved weights: the library
    # call with those gives the same numbers (evaluate itself is checked against numpy above)
    ev = data.eval_dataset(str(tmp_path / "images"), batch_size_per_process=5, spec="timm", image_size=64)
    direct = evaluate(model, variables, ev)
    assert result == pytest.approx(direct)
    assert 0 <= result["top1"] <= result["top5"] <= 100 and result["loss"] > 0


MULTIHOST = r"""
import json, sys
import jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(coordinator_address=f"127.0.0.1:{sys.argv[2]}", num_processes=2, process_id=int(sys.argv[3]))
sys.path.insert(0, sys.argv[1])
from test_evaluate import Linear
from hrnet_flax import data
from hrnet_flax.evaluate import evaluate
assert jax.process_count() == 2 and jax.local_device_count() == 2
batches = data.eval_dataset(sys.argv[4], batch_size_per_process=3, spec="timm", image_size=32)
model = Linear()
variables = model.init(jax.random.key(0), jax.numpy.zeros((1, 32, 32, 3)))
print("RESULT " + json.dumps(evaluate(model, variables, batches)))
"""


@pytest.mark.slow  # two processes
def test_evaluate_two_processes_sums_over_hosts(tmp_path):
    """2 processes x 2 devices, each reading its own part of an image folder, give the
    numbers of one process reading all of it (unreadable files included)."""
    import socket

    good = make_folder(tmp_path / "images")
    model = Linear()
    variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    single = evaluate(model, variables, data.eval_dataset(str(tmp_path / "images"), batch_size_per_process=4, spec="timm", image_size=32))
    assert single["count"] == len(good) and single["unreadable"] == 2
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", MULTIHOST, HERE, port, str(i), str(tmp_path / "images")],
            env=cpu_env(2), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
        (line,) = [x for x in out.splitlines() if x.startswith("RESULT ")]
        result = json.loads(line[len("RESULT "):])
        assert result["count"] == single["count"] and result["unreadable"] == 2
        for k in ("top1", "top5", "loss"):
            assert result[k] == pytest.approx(single[k], rel=1e-5)
