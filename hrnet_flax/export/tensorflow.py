"""TensorFlow exports through jax2tf: a SavedModel with two serving signatures, and TFLite models
(float32, or float16 weights) converted from the same TensorFlow function.

The SavedModel's `serving_default` takes the float32 NHWC input every export takes; `serving_uint8`
takes uint8 RGB images of the input size and normalises them inside with the weights' own mean
and std. Both return `{output name: outputs}`. The model runs as one XlaCallModule (StableHLO,
lowered for CPU and CUDA), which TensorFlow and TF Serving run and the TFLite converter lowers to
TFLite's builtin ops (CONV_2D, ADD, ...)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np

from hrnet_flax.export.core import Signature, require

METADATA_FILE = os.path.join("assets.extra", "hrnet_flax.json")


def tf():
    """The `tensorflow` module (its C++ logging at warnings and above)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return require("tensorflow", "tensorflow-cpu", "a SavedModel or TFLite export")


def _tf_function(fn: Callable, signature: Signature, platforms: tuple[str, ...]):
    """The jax2tf-converted `fn` as a `tf.function` on float32 NHWC images."""
    from jax.experimental import jax2tf

    t = tf()
    h, w = signature.size
    polymorphic = [f"({'b' if signature.batch is None else signature.batch}, {h}, {w}, 3)"]
    converted = jax2tf.convert(
        fn, polymorphic_shapes=polymorphic, with_gradient=False, native_serialization_platforms=platforms
    )
    spec = t.TensorSpec([signature.batch, h, w, 3], t.float32, name="images")
    return t.function(converted, input_signature=[spec], autograph=False)


def write_savedmodel(fn: Callable, signature: Signature, normalize: dict[str, Any], path: str) -> dict[str, Any]:
    """A SavedModel directory at `path` with `serving_default` (float32) and `serving_uint8`."""
    t = tf()
    h, w = signature.size
    model = _tf_function(fn, signature, ("cpu", "cuda"))
    mean = t.constant(normalize["mean"], t.float32)
    std = t.constant(normalize["std"], t.float32)
    name = signature.output

    @t.function(input_signature=[t.TensorSpec([signature.batch, h, w, 3], t.float32, name="images")], autograph=False)
    def serve_float(images):
        return {name: model(images)}

    @t.function(input_signature=[t.TensorSpec([signature.batch, h, w, 3], t.uint8, name="images")], autograph=False)
    def serve_uint8(images):
        return {name: model((t.cast(images, t.float32) - mean) / std)}

    module = t.Module()
    module.model, module.serve_float, module.serve_uint8 = model, serve_float, serve_uint8
    t.saved_model.save(module, path, signatures={"serving_default": serve_float, "serving_uint8": serve_uint8})
    return {"signatures": {"serving_default": "float32 normalised NHWC", "serving_uint8": "uint8 RGB NHWC"}}


def savedmodel_runner(path: str, signature: str = "serving_default") -> Callable[[np.ndarray], np.ndarray]:
    """`images -> outputs` through one of the SavedModel's signatures."""
    t = tf()
    function = t.saved_model.load(path).signatures[signature]

    def run(images: np.ndarray) -> np.ndarray:
        (value,) = function(images=t.constant(images)).values()
        return value.numpy()

    return run


def write_tflite(fn: Callable, signature: Signature, path: str, dtype: str) -> dict[str, Any]:
    """A TFLite flatbuffer at `path`: float32, or with float16 weights (`dtype="float16"`; computed in
    float32 on CPUs)."""
    t = tf()
    function = _tf_function(fn, signature, ("cpu",))
    converter = t.lite.TFLiteConverter.from_concrete_functions([function.get_concrete_function()], t.Module())
    if dtype == "float16":
        converter.optimizations = [t.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [t.float16]
    with open(path, "wb") as f:
        f.write(converter.convert())
    return {"weights": dtype}


def interpreter(path: str, num_threads: int | None = None):
    """A TFLite interpreter: LiteRT's (`ai-edge-litert`) where installed, else TensorFlow's."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        Interpreter = tf().lite.Interpreter
    return Interpreter(model_path=path, num_threads=num_threads)


def tflite_runner(path: str, num_threads: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """`images -> outputs` through one TFLite interpreter (resized to each new batch size)."""
    it = interpreter(path, num_threads)
    (inp,) = it.get_input_details()
    shape: list[int] = []

    def run(images: np.ndarray) -> np.ndarray:
        if list(images.shape) != shape:
            it.resize_tensor_input(inp["index"], list(images.shape))
            it.allocate_tensors()
            shape[:] = list(images.shape)
        it.set_tensor(inp["index"], np.ascontiguousarray(images, np.float32))
        it.invoke()
        return it.get_tensor(it.get_output_details()[0]["index"])

    return run
