"""ONNX: the folded network as a graph of Conv (bias = the folded BatchNorm), Relu, Add, Concat,
Gather/Mul (resizes) and Gemm ops in NCHW (`onnx_graph`), its metadata in the model's
`metadata_props`, run by ONNX Runtime."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np

from hrnet_flax.export.core import METADATA_KEY, Signature, require


def write(fn: Callable, signature: Signature, path: str) -> dict[str, Any]:
    """The ONNX model of `fn` at `path` (opset `onnx_graph.OPSET`)."""
    onnx = require("onnx", "onnx", "an ONNX export")
    from hrnet_flax.export import onnx_graph

    h, w = signature.size
    model = onnx_graph.to_onnx(
        fn,
        (signature.batch, h, w, 3),
        layout=signature.layout,
        opset=onnx_graph.OPSET,
        input_name="images",
        output_name=signature.output,
    )
    onnx.save(model, path)
    return {"opset": onnx_graph.OPSET}


def write_metadata(path: str, meta: dict[str, Any]) -> None:
    """Store `meta` as JSON under the `hrnet_flax` key of the model's `metadata_props`."""
    onnx = require("onnx", "onnx", "an ONNX export")
    model = onnx.load(path)
    kept = [p for p in model.metadata_props if p.key != METADATA_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    model.metadata_props.add(key=METADATA_KEY, value=json.dumps(meta, sort_keys=True))
    onnx.save(model, path)


def session(path: str, threads: int | None = None):
    """An ONNX Runtime CPU session of the model at `path`."""
    ort = require("onnxruntime", "onnxruntime", "running an ONNX export")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def runner(path: str, threads: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """`images -> outputs` through one ONNX Runtime session."""
    s = session(path, threads)
    name = s.get_inputs()[0].name
    return lambda images: s.run(None, {name: np.ascontiguousarray(images, np.float32)})[0]


def read_metadata(path: str) -> dict[str, Any]:
    onnx = require("onnx", "onnx", "reading an ONNX export")
    model = onnx.load(path, load_external_data=False)
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            return json.loads(prop.value)
    return {}
