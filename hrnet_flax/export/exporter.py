"""`export_model` / `export`: write an artefact, run it with its own runtime on sample images, compare
with the JAX model, then store its metadata and move it into place (nothing is replaced before the
new artefact has passed)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from hrnet_flax.export import core
from hrnet_flax.export.core import FORMATS, TOLERANCES, ExportError, Signature


@dataclasses.dataclass(frozen=True)
class ExportResult:
    """A written, verified artefact."""

    path: str
    format: str
    metadata: dict[str, Any]
    relative_error: float  # max |artefact - JAX model| / max |JAX model| on the sample images


def _writer(fmt: str):
    from hrnet_flax.export import onnx, stablehlo, tensorflow

    return {
        "stablehlo": lambda fn, sig, path, record: stablehlo.write(fn, sig, path),
        "savedmodel": lambda fn, sig, path, record: tensorflow.write_savedmodel(fn, sig, record["normalize"], path),
        "tflite": lambda fn, sig, path, record: tensorflow.write_tflite(fn, sig, path, sig.dtype),
        "onnx": lambda fn, sig, path, record: onnx.write(fn, sig, path),
    }[fmt]


def runtime_name(fmt: str) -> str:
    """The runtime that runs `fmt`, with its version."""
    import importlib.metadata as md

    def version(*packages: str) -> str:
        for package in packages:
            try:
                return f"{package} {md.version(package)}"
            except md.PackageNotFoundError:
                continue
        return packages[0]

    if fmt == "stablehlo":
        return version("jax")
    if fmt == "savedmodel":
        return version("tensorflow-cpu", "tensorflow")
    if fmt == "tflite":
        try:
            import ai_edge_litert  # noqa: F401

            return version("ai-edge-litert")
        except ImportError:
            return version("tensorflow-cpu", "tensorflow") + " (tf.lite)"
    return version("onnxruntime")


def load_exported(
    path: str | os.PathLike, fmt: str | None = None, threads: int | None = None
) -> Callable[[np.ndarray], np.ndarray]:
    """`images -> outputs` of the artefact at `path` (inputs in its layout), run by its own runtime:
    JAX, TensorFlow (`serving_default`), the TFLite interpreter or ONNX Runtime (`threads`: theirs;
    default: the runtime's choice)."""
    from hrnet_flax.export import onnx, stablehlo, tensorflow

    path = os.fspath(path)
    fmt = fmt or detect_format(path)
    if fmt == "tflite":
        run = tensorflow.tflite_runner(path, threads)
    elif fmt == "onnx":
        run = onnx.runner(path, threads)
    else:
        run = {"stablehlo": stablehlo.runner, "savedmodel": tensorflow.savedmodel_runner}[fmt](path)
    return lambda images: np.asarray(run(np.asarray(images)))


def detect_format(path: str) -> str:
    """The format of an artefact: its metadata's, else its name's (`.onnx`, `.tflite`, a SavedModel folder)."""
    if os.path.isdir(path):
        if os.path.exists(os.path.join(path, "saved_model.pb")):
            return "savedmodel"
        raise ExportError(f"{path} is a folder but not a SavedModel (no saved_model.pb)")
    if not os.path.exists(path):
        raise ExportError(f"no exported model at {path}")
    if path.endswith(".onnx"):
        return "onnx"
    if path.endswith(".tflite"):
        return "tflite"
    if os.path.exists(core.sidecar(path)):
        with open(core.sidecar(path)) as f:
            return json.load(f).get("format", "stablehlo")
    return "stablehlo"


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata an export stored with its artefact: calling convention, preprocessing, source,
    verification."""
    from hrnet_flax.export import onnx, tensorflow

    path = os.fspath(path)
    fmt = detect_format(path)
    if fmt == "onnx":
        return onnx.read_metadata(path)
    where = os.path.join(path, tensorflow.METADATA_FILE) if fmt == "savedmodel" else core.sidecar(path)
    if not os.path.exists(where):
        raise ExportError(f"{path}: no hrnet-flax metadata (expected {where})")
    with open(where) as f:
        return json.load(f)


def _store_metadata(fmt: str, path: str, meta: dict[str, Any]) -> list[tuple[str, str]]:
    """Write `meta` for the artefact at `path`; returns the extra (written, final-name suffix) files."""
    from hrnet_flax.export import onnx, tensorflow

    if fmt == "onnx":
        onnx.write_metadata(path, meta)
        return []
    if fmt == "savedmodel":
        os.makedirs(os.path.join(path, os.path.dirname(tensorflow.METADATA_FILE)), exist_ok=True)
        core.write_json(os.path.join(path, tensorflow.METADATA_FILE), meta)
        return []
    core.write_json(core.sidecar(path), meta)
    return [(core.sidecar(path), ".json")]


def _verify(fmt: str, path: str, signature: Signature, model, variables, images: np.ndarray, record) -> float:
    """Run the artefact at batch sizes 1 and 2 (dynamic) or its fixed batch; the worst relative error.
    A dynamic SavedModel's float32 signature runs at batch 1 and its uint8 one at batch 2."""
    from hrnet_flax.export import tensorflow

    count = signature.batch or 2
    x = core.normalize(images[:count], record)
    ref = core.reference_outputs(model, variables, x)
    nchw = signature.layout == "NCHW"
    batches = (1, 2) if signature.batch is None else (signature.batch,)
    if fmt == "savedmodel":
        batches = batches[:1]
        uint8 = tensorflow.savedmodel_runner(path, "serving_uint8")
        worst = core.relative_error(uint8(images[:count]), ref)
    else:
        worst = 0.0
    run = load_exported(path, fmt)
    for b in batches:
        out = run(x[:b].transpose(0, 3, 1, 2) if nchw else x[:b])
        if nchw and out.ndim == 4:
            out = out.transpose(0, 2, 3, 1)
        worst = max(worst, core.relative_error(out, ref[:b]))
    return worst


def _replace(src: str, dst: str) -> None:
    """Move `src` to `dst`, replacing a file or folder there only once `src` is complete."""
    if os.path.isdir(dst) and not os.path.islink(dst):
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(dst)}.old-", dir=os.path.dirname(dst) or ".")
        os.rmdir(old)
        os.rename(dst, old)
        os.rename(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)


def export_model(
    model: Any,
    variables: Any,
    out: str | os.PathLike,
    *,
    format: str,
    batch: int | None = None,
    size: tuple[int, int] | int | None = None,
    dtype: str = "float32",
    layout: str = "NHWC",
    images: Sequence[np.ndarray] | None = None,
    source: str | None = None,
    preset: Any = None,
    overwrite: bool = False,
) -> ExportResult:
    """Write `model` with `variables` to `out` in `format` (`FORMATS`) and verify it.

    `batch`: a fixed batch size, or None for any. `size`: (H, W) or a side, multiples of 32 (default:
    the weights' own evaluation size). `dtype`: see `core.DTYPES`. `layout`: NCHW input and 4-D
    outputs (onnx only). `images`: uint8 RGB images to verify on (default: a synthetic scene).
    `source`/`preset`: where the weights came from, for the recorded preprocessing (default: timm's
    ImageNet preprocessing). The artefact must reproduce the float32 JAX model within
    `core.TOLERANCES[dtype]` (relative), else `ExportError` and nothing is written.
    """
    out = os.fspath(out)
    if size is None:
        size = core.default_size(model, source)
    size = (int(size), int(size)) if isinstance(size, int) else tuple(int(s) for s in size)
    core.check_request(format, dtype, size, batch, layout)
    if format == "tflite" and batch is None and model.config.head == "segmentation":
        raise ExportError(
            "TFLite cannot take a dynamic batch through a segmentation model: its bilinear resizes are gathers, "
            "which the TFLite converter refuses over a dynamic batch; give a fixed batch (batch=1, --batch 1)"
        )
    if os.path.exists(out) and not overwrite:
        raise ExportError(f"{out} exists; choose another path or overwrite it (overwrite=True, --overwrite)")
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise ExportError(f"cannot write {out}: the folder {parent} does not exist")

    signature = Signature(batch, size, model.config.head, int(model.num_classes), dtype, layout)
    record = core.preprocessing(model, source, preset, size)
    fn = core.inference_function(model, variables, "bfloat16" if dtype == "bfloat16" else "float32")
    work = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.partial-", dir=parent)
    try:
        path = os.path.join(work, os.path.basename(out))
        details = _writer(format)(fn, signature, path, record)
        samples = core.sample_images(images, size, signature.batch or 2)
        error = _verify(format, path, signature, model, variables, samples, record)
        tolerance = TOLERANCES[dtype]
        if not error <= tolerance:
            raise ExportError(
                f"the {format} export of {source or 'the model'} gives outputs {error:.2e} (relative) away from the "
                f"JAX model's, over the {tolerance:.0e} bound for {dtype}; nothing was written to {out}"
            )
        meta = core.metadata(
            signature,
            format,
            record,
            model,
            source,
            **details,
            verified={
                "runtime": runtime_name(format),
                "images": "given" if images else "synthetic",
                "batch_sizes": [1, 2] if batch is None else [batch],
                "max_relative_error": error,
                "tolerance": tolerance,
            },
        )
        extra = _store_metadata(format, path, meta)
        _replace(path, out)
        for written, suffix in extra:
            os.replace(written, out + suffix)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return ExportResult(out, format, meta, error)


def export(
    source: str,
    out: str | os.PathLike,
    *,
    format: str,
    arch: str | None = None,
    num_classes: int | None = None,
    task: str | None = None,
    **kwargs: Any,
) -> ExportResult:
    """Load `source` (a registered name, checkpoint file or URL; see `load_pretrained`) and
    `export_model` it; its preprocessing is recorded from the weights' own."""
    from hrnet_flax.weights.pretrained import load_pretrained

    if format not in FORMATS:  # before loading anything
        raise ExportError(f"unknown export format {format!r}; formats: {', '.join(FORMATS)}")
    model, variables = load_pretrained(source, arch=arch, num_classes=num_classes, task=task)
    return export_model(model, variables, out, format=format, source=str(source), **kwargs)
