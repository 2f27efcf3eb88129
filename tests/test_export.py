"""Exports (StableHLO, SavedModel, TFLite, ONNX): each artefact, run by its own runtime on real
photos, gives the JAX model's outputs; dynamic batch; metadata; the command; bad inputs."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest
import skimage.data

from convert_support import calibrated
from data_support import run_cli
from hrnet_flax import create_model, init_variables, save_checkpoint
from hrnet_flax.export import (
    FORMATS,
    TOLERANCES,
    ExportError,
    MissingRuntimeError,
    export,
    export_model,
    load_exported,
    read_metadata,
)
from hrnet_flax.export import core

SIZE = (64, 64)
SUFFIX = {"stablehlo": ".stablehlo", "savedmodel": "", "tflite": ".tflite", "onnx": ".onnx"}


def photos() -> list[np.ndarray]:
    return [skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.coffee(), skimage.data.rocket()]


@pytest.fixture(scope="module")
def classifier():
    model = create_model("hrnet_w18_small")
    return model, calibrated(init_variables(model, jax.random.key(0), (1, *SIZE, 3)))


def dense(name: str, size: tuple[int, int]):
    model = create_model(name)
    return model, calibrated(init_variables(model, jax.random.key(1), (1, *size, 3)), seed=1)


def reference(model, variables, images_uint8: np.ndarray, record: dict) -> np.ndarray:
    return core.reference_outputs(model, variables, core.normalize(images_uint8, record))


def check_roundtrip(model, variables, fmt: str, path, size=SIZE, dtype: str = "float32", batches=(1, 5)):
    """Export with a dynamic batch, then run the artefact at each batch size on photos."""
    result = export_model(model, variables, path, format=fmt, size=size, dtype=dtype, images=photos())
    assert result.relative_error <= TOLERANCES[dtype]
    run = load_exported(path)
    record = result.metadata["preprocessing"]
    uint8 = core.sample_images(photos(), size, max(batches))
    refs = reference(model, variables, uint8, record)  # eval mode: each image's outputs its own
    for b in batches:
        ref = refs[:b]
        out = run(core.normalize(uint8[:b], record))
        err = core.relative_error(out, ref)
        assert err <= TOLERANCES[dtype], f"{fmt} {dtype} at batch {b}: relative error {err:.2e}"
        if b > 1:
            assert np.abs(ref - ref.mean(0)).max() > 1e-3 * np.abs(ref).max(), "outputs barely depend on the image"
    return result


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_runs_like_the_model_at_batch_1_and_5(classifier, fmt, tmp_path):
    path = tmp_path / f"model{SUFFIX[fmt]}"
    result = check_roundtrip(*classifier, fmt, path)
    meta = read_metadata(path)
    assert meta == json.loads(json.dumps(result.metadata))
    assert meta["format"] == fmt and meta["arch"] == "hrnet_w18_small" and meta["task"] == "classification"
    assert meta["input"] == {**meta["input"], "layout": "NHWC", "dtype": "float32", "shape": [None, 64, 64, 3]}
    assert meta["output"]["shape"] == [None, 1000] and meta["output"]["name"] == "logits"
    assert meta["verified"]["batch_sizes"] == [1, 2] and meta["verified"]["images"] == "given"
    assert meta["verified"]["max_relative_error"] <= 1e-4
    assert meta["preprocessing"]["normalize"]["mean"] == pytest.approx([123.675, 116.28, 103.53])
    assert meta["preprocessing"]["eval"]["preset"] == "timm"
    if fmt == "onnx":
        assert meta["opset"] == 17
    if fmt == "stablehlo":
        assert set(meta["platforms"]) == {"cpu", "cuda", "tpu"}
    leftovers = [p for p in os.listdir(tmp_path) if ".partial-" in p]
    assert not leftovers, leftovers


@pytest.mark.slow
def test_savedmodel_uint8_signature_normalises_inside(classifier, tmp_path):
    from hrnet_flax.export import tensorflow

    model, variables = classifier
    path = tmp_path / "sm"
    result = export_model(model, variables, path, format="savedmodel", size=SIZE, batch=3, images=photos())
    uint8 = core.sample_images(photos(), SIZE, 3)
    ref = reference(model, variables, uint8, result.metadata["preprocessing"])
    out = tensorflow.savedmodel_runner(str(path), "serving_uint8")(uint8)
    assert core.relative_error(out, ref) <= 1e-4
    with pytest.raises(Exception):  # a fixed batch of 3 refuses other sizes
        tensorflow.savedmodel_runner(str(path))(core.normalize(uint8[:2], result.metadata["preprocessing"]))


SEG, POSE = ("hrnetv2_w18_small_seg", (64, 96)), ("pose_hrnet_w18_small", (64, 64))


@pytest.mark.parametrize(
    "name,size,fmt",
    [
        (*POSE, "onnx"),
        pytest.param(*SEG, "onnx", marks=pytest.mark.slow),  # fast in tests/test_export_onnx_graph.py
        # jax2tf serves the SavedModel and TFLite alike; TFLite's conversion is where an op could fail
        pytest.param(*POSE, "tflite", marks=pytest.mark.slow),
        pytest.param(*SEG, "savedmodel", marks=pytest.mark.slow),
        pytest.param(*POSE, "stablehlo", marks=pytest.mark.slow),
    ],
)
def test_dense_models_export(name, size, fmt, tmp_path):
    model, variables = dense(name, size)
    result = check_roundtrip(model, variables, fmt, tmp_path / f"m{SUFFIX[fmt]}", size=size, batches=(1, 3))
    h, w = size[0] // 4, size[1] // 4
    assert result.metadata["output"]["shape"] == [None, h, w, model.num_classes]
    assert result.metadata["output"]["name"] == ("heatmaps" if model.config.head == "pose" else "logits")


@pytest.mark.slow
def test_segmentation_to_tflite_takes_a_fixed_batch(tmp_path):
    model, variables = dense(*SEG)
    with pytest.raises(ExportError, match="TFLite cannot take a dynamic batch through a segmentation model"):
        export_model(model, variables, tmp_path / "dyn.tflite", format="tflite", size=SEG[1])
    assert os.listdir(tmp_path) == []
    result = export_model(model, variables, tmp_path / "m.tflite", format="tflite", size=SEG[1], batch=2, images=photos())
    assert result.relative_error <= 1e-4 and result.metadata["input"]["shape"] == [2, 64, 96, 3]


@pytest.mark.slow  # the NCHW graph itself: fast in tests/test_export_onnx_graph.py
def test_onnx_nchw_layout(tmp_path):
    model, variables = dense("hrnetv2_w18_small_seg", (64, 64))
    path = tmp_path / "m.onnx"
    result = export_model(model, variables, path, format="onnx", size=(64, 64), layout="NCHW", images=photos())
    assert result.metadata["input"]["shape"] == [None, 3, 64, 64]
    assert result.metadata["output"]["shape"] == [None, 19, 16, 16]
    uint8 = core.sample_images(photos(), (64, 64), 2)
    record = result.metadata["preprocessing"]
    ref = reference(model, variables, uint8, record)
    out = load_exported(path)(core.normalize(uint8, record).transpose(0, 3, 1, 2))
    assert core.relative_error(out.transpose(0, 2, 3, 1), ref) <= 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("fmt,dtype", [("tflite", "float16"), ("stablehlo", "bfloat16")])
def test_reduced_precision_within_its_stated_bound(classifier, fmt, dtype, tmp_path):
    result = check_roundtrip(*classifier, fmt, tmp_path / f"m{SUFFIX[fmt]}", dtype=dtype, batches=(2,))
    assert result.metadata["dtype"] == dtype
    assert 1e-7 < result.relative_error <= TOLERANCES[dtype]  # reduced precision really is in use


def test_fixed_batch(classifier, tmp_path):
    path = tmp_path / "m.onnx"
    result = export_model(*classifier, path, format="onnx", size=SIZE, batch=4)
    assert result.metadata["input"]["shape"] == [4, 64, 64, 3]
    assert result.metadata["verified"] == {**result.metadata["verified"], "batch_sizes": [4], "images": "synthetic"}


def test_command_exports_a_checkpoint_file(classifier, tmp_path):
    model, variables = classifier
    ckpt = tmp_path / "w.safetensors"
    save_checkpoint(ckpt, variables, arch="hrnet_w18_small", num_classes=1000)
    image = tmp_path / "astronaut.png"
    from PIL import Image

    Image.fromarray(skimage.data.astronaut()).save(image)
    out = tmp_path / "m.stablehlo"
    code, stdout, stderr = run_cli("export", ckpt, out, "--format", "stablehlo", "--size", "64", "--batch", "2", "--verify-image", image)
    assert code == 0, stderr
    assert "matches the JAX model within" in stdout and "[2, 64, 64, 3]" in stdout
    meta = read_metadata(out)
    assert meta["source"] == str(ckpt) and meta["verified"]["images"] == "given"
    call = load_exported(out)
    uint8 = core.sample_images([skimage.data.astronaut()], (64, 64), 2)
    ref = reference(model, variables, uint8, meta["preprocessing"])
    assert core.relative_error(call(core.normalize(uint8, meta["preprocessing"])), ref) <= 1e-4

    code, _, stderr = run_cli("export", ckpt, out, "--format", "stablehlo", "--size", "64")
    assert code == 2 and "exists" in stderr and "--overwrite" in stderr


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--format", "pdf"], "invalid choice: 'pdf'"),
        (["--format", "onnx", "--size", "100"], "not a multiple of 32"),
        (["--format", "onnx", "--size", "64x90"], "not a multiple of 32"),
        (["--format", "onnx", "--dtype", "float16"], "does not offer dtype 'float16'"),
        (["--format", "tflite", "--layout", "nchw"], "NCHW is offered for onnx only"),
        (["--format", "onnx", "--batch", "0"], "positive batch size"),
    ],
)
def test_bad_requests_name_the_problem(classifier, tmp_path, argv, message):
    import contextlib
    import io

    ckpt = tmp_path / "w.safetensors"
    save_checkpoint(ckpt, classifier[1], arch="hrnet_w18_small", num_classes=1000)
    from hrnet_flax import cli

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = cli.main(["export", str(ckpt), str(tmp_path / "out"), *argv])
        except SystemExit as e:  # argparse's own refusals
            code = e.code
    stderr = err.getvalue()
    assert code == 2 and message in stderr, stderr
    assert not (tmp_path / "out").exists()


def test_unknown_format_in_python_is_refused_before_loading(tmp_path):
    with pytest.raises(ExportError, match="unknown export format 'pdf'; formats: stablehlo, savedmodel, tflite, onnx"):
        export(str(tmp_path / "missing.safetensors"), tmp_path / "o", format="pdf")


@pytest.mark.parametrize("fmt,module,package", [("onnx", "onnx", "onnx"), ("tflite", "tensorflow", "tensorflow-cpu")])
def test_a_missing_runtime_says_what_to_install(classifier, tmp_path, monkeypatch, fmt, module, package):
    import importlib

    real = importlib.import_module

    def fake(name, *args, **kwargs):
        if name == module:
            raise ImportError(f"No module named {name!r}")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib, "import_module", fake)
    with pytest.raises(MissingRuntimeError, match=f"needs the package '{package}'.*pip install {package}"):
        export_model(*classifier, tmp_path / f"m{SUFFIX[fmt]}", format=fmt, size=SIZE)
    assert os.listdir(tmp_path) == []


def test_a_failed_verification_writes_nothing_and_keeps_the_old_file(classifier, tmp_path, monkeypatch):
    path = tmp_path / "m.stablehlo"
    path.write_bytes(b"the user's earlier export")
    monkeypatch.setitem(TOLERANCES, "float32", 0.0)  # no artefact can pass
    with pytest.raises(ExportError, match="over the 0e\\+00 bound for float32; nothing was written"):
        export_model(*classifier, path, format="stablehlo", size=SIZE, overwrite=True)
    assert path.read_bytes() == b"the user's earlier export"
    assert sorted(os.listdir(tmp_path)) == ["m.stablehlo"]


def test_bad_artefacts_and_images_are_named(classifier, tmp_path):
    bad = tmp_path / "bad.stablehlo"
    bad.write_bytes(b"not an export")
    with pytest.raises(ExportError, match="bad.stablehlo is not a jax.export serialization"):
        load_exported(bad)
    with pytest.raises(ExportError, match="no exported model at"):
        load_exported(tmp_path / "missing.onnx")
    with pytest.raises(ExportError, match="is a folder but not a SavedModel"):
        read_metadata(tmp_path)
    with pytest.raises(ExportError, match="must be uint8 \\(H, W, 3\\) RGB; got float32 \\(8, 8\\)"):
        export_model(*classifier, tmp_path / "x.onnx", format="onnx", size=SIZE, images=[np.zeros((8, 8), np.float32)])
    model, variables = create_model("hrnet_w18_small", features_only=True), classifier[1]
    with pytest.raises(ExportError, match="features_only model has no single output"):
        export_model(model, variables, tmp_path / "y.onnx", format="onnx", size=SIZE)


@pytest.fixture(scope="module")
def w18():
    model = create_model("hrnet_w18")
    return model, calibrated(init_variables(model, jax.random.key(2)), seed=2)


@pytest.mark.slow
@pytest.mark.parametrize(
    "fmt,dtype",
    [("stablehlo", "float32"), ("savedmodel", "float32"), ("tflite", "float32"), ("onnx", "float32")],
)
def test_w18_exports_at_224(w18, fmt, dtype, tmp_path):
    """W18 at 224 (the published models' size) on photos, dynamic batch: the export's own check
    (batch 1 and 2), far inside the float32 bound (measured 3e-7 to 2e-6)."""
    model, variables = w18
    result = export_model(model, variables, tmp_path / f"w18{SUFFIX[fmt]}", format=fmt, dtype=dtype, images=photos())
    assert result.metadata["input"]["shape"] == [None, 224, 224, 3]
    assert result.relative_error <= 1e-5, f"{fmt}: {result.relative_error:.2e}"


def test_relative_error_never_passes_non_finite_outputs():
    ref = np.array([[1.0, -2.0]])
    assert core.relative_error(np.array([[1.0, -2.5]]), ref) == 0.25
    assert core.relative_error(np.array([[np.nan, -2.0]]), ref) == float("inf")
    assert not core.relative_error(np.array([[np.inf, -2.0]]), ref) <= TOLERANCES["float32"]
    with pytest.raises(ExportError, match="JAX model's own outputs on the sample images are not finite"):
        core.relative_error(ref, np.array([[np.nan, 1.0]]))
    with pytest.raises(ExportError, match="returned shape \\(1, 3\\); the model returns \\(1, 2\\)"):
        core.relative_error(np.zeros((1, 3)), ref)
