"""Prediction on real photos shipped with scikit-image (random weights): image loading of every
kind, top-5 against numpy, ImageNet class names, the `predict` command, and unreadable files."""

import contextlib
import io
import re

import jax
import numpy as np
import pytest
import skimage.data
from data_support import encode, tiny_model
from PIL import Image

from hrnet_flax.predict import UnreadableImageError, imagenet_class_names, load_rgb, predict, preprocess, top_k


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    files = {
        "astronaut.jpg": encode(skimage.data.astronaut(), "JPEG"),
        "coffee_cmyk.jpg": encode(skimage.data.coffee(), "JPEG", "CMYK"),
        "chelsea_alpha.png": encode(np.dstack([skimage.data.chelsea(), np.full((300, 451), 128, np.uint8)]), "PNG"),
        "camera_grey.png": encode(skimage.data.camera(), "PNG"),
    }
    for name, blob in files.items():
        (root / name).write_bytes(blob)
    return root, sorted(str(root / n) for n in files)


def test_load_rgb_every_kind(photos, tmp_path):
    root, _ = photos
    chelsea = load_rgb(root / "chelsea_alpha.png")
    assert chelsea.shape == (300, 451, 3) and (chelsea == skimage.data.chelsea()).all()  # alpha dropped
    grey = load_rgb(root / "camera_grey.png")
    assert grey.shape == (512, 512, 3) and (grey == skimage.data.camera()[..., None]).all()
    cmyk = load_rgb(root / "coffee_cmyk.jpg")
    assert cmyk.shape == (400, 600, 3) and np.abs(cmyk.astype(int) - skimage.data.coffee()).mean() < 12
    deep = (skimage.data.camera().astype(np.uint16) * 257)
    Image.fromarray(deep).save(tmp_path / "deep.png")  # 16-bit greyscale
    assert np.abs(load_rgb(tmp_path / "deep.png")[..., 0].astype(int) - skimage.data.camera()).max() <= 1


def test_unreadable_images_are_named(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    with pytest.raises(UnreadableImageError, match="broken.jpg"):
        load_rgb(bad)
    with pytest.raises(UnreadableImageError, match=r"missing.png does not exist"):
        load_rgb(tmp_path / "missing.png")
    png = encode(skimage.data.chelsea(), "PNG")
    (tmp_path / "cut.png").write_bytes(png[: len(png) // 3])
    with pytest.raises(UnreadableImageError, match="cut.png"):
        load_rgb(tmp_path / "cut.png")


def test_top_k_against_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 12)) * 2
    out = top_k(logits, 5, [f"c{i}" for i in range(12)])
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    for row, p in zip(out, probs):
        expect = np.argsort(-p)[:5]
        assert [name for name, _ in row] == [f"c{i}" for i in expect]
        np.testing.assert_allclose([q for _, q in row], p[expect], rtol=1e-9)


def test_imagenet_class_names():
    names = imagenet_class_names()
    assert len(names) == 1000 and len(set(names)) == 1000
    assert names[0].startswith("n01440764") and "tench" in names[0]
    # label order is tensorflow-datasets' imagenet2012 label order (sorted WordNet ids)
    from hrnet_flax.data.sources import _synsets

    assert [n.split(" ", 1)[0] for n in names] == _synsets()
    assert all(n.split(" ", 1)[1].strip() for n in names)


def test_predict_real_photos_random_weights(photos):
    _, paths = photos
    model, variables = tiny_model(1000)
    results = predict(model, variables, paths, spec="timm", size=64)
    names = imagenet_class_names()
    forward = jax.jit(lambda v, x: model.apply(v, x, train=False))
    logits = np.asarray(forward(variables, preprocess([load_rgb(p) for p in paths], "timm", size=64)))
    assert len(results) == len(paths)
    for row, lg in zip(results, logits):
        probs = [p for _, p in row]
        assert len(row) == 5 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
        assert [n for n, _ in row] == [names[i] for i in np.argsort(-lg)[:5]]


def test_predict_command(photos, tmp_path):
    from hrnet_flax.cli import main
    from hrnet_flax.weights.convert import save_checkpoint

    _, paths = photos
    model, variables = tiny_model(1000)
    weights = tmp_path / "w.safetensors"
    save_checkpoint(weights, variables, arch="hrnet_w18_small", num_classes=1000)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["predict", "--model", str(weights), "--size", "64", *paths[:2]]) == 0
    lines = out.getvalue().splitlines()
    assert lines[0] == paths[0] and len(lines) == 12
    assert all(re.fullmatch(r"\s+\d+\.\d\d%  n\d{8} \S.*", line) for line in lines[1:6]), lines
    assert sum(float(line.split("%")[0]) for line in lines[1:6]) <= 100.01
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["predict", "--model", str(weights), "--size", "64", paths[0], str(tmp_path / "nope.jpg")]) == 2
    assert "nope.jpg does not exist" in err.getvalue()
