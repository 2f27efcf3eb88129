"""What every export shares: the folded inference function, the calling convention and preprocessing
recorded as metadata, the verification images, and the check of an artefact against the JAX model."""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hrnet_flax.models.hrnet import SIZE_MULTIPLE
from hrnet_flax.models.fold import fold_batchnorm
from hrnet_flax.models.stacking import is_stacked, stack_variables, unstack_variables

FORMATS = ("stablehlo", "savedmodel", "tflite", "onnx")
# Compute (stablehlo) or weight (tflite) precisions each format offers.
DTYPES = {
    "stablehlo": ("float32", "bfloat16"),
    "savedmodel": ("float32",),
    "tflite": ("float32", "float16"),
    "onnx": ("float32",),
}
# The verification bound: max |exported - ours| / max |ours| over the sample images, ours being the
# float32 JAX model with its BatchNorms unfolded. Measured on W18 at 224 with calibrated random
# weights on photos (docs/export.md): float32 exports 3e-7 to 2e-6, float16 weights 6e-4,
# bfloat16 compute 6e-3.
TOLERANCES = {"float32": 1e-4, "float16": 5e-3, "bfloat16": 5e-2}
OUTPUT_NAMES = {"classification": "logits", "segmentation": "logits", "pose": "heatmaps"}
METADATA_KEY = "hrnet_flax"


class ExportError(ValueError):
    """An export that cannot be made as asked, or whose artefact does not compute what the model does."""


class MissingRuntimeError(ImportError):
    """A package an export format needs is not installed."""


def require(module: str, package: str, purpose: str) -> Any:
    """`import module`, or a `MissingRuntimeError` that says which package to install."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingRuntimeError(
            f"{purpose} needs the package {package!r}, which is not installed: pip install {package} "
            "(or pip install 'hrnet-flax[export]' for every export runtime)"
        ) from e


@dataclasses.dataclass(frozen=True)
class Signature:
    """The artefact's calling convention: NHWC float32 images of `size` (normalised as `normalize`
    says) in; `output` out, (N, classes) logits or (N, H/4, W/4, classes) logits/heatmaps."""

    batch: int | None  # None: any batch size
    size: tuple[int, int]
    task: str
    num_classes: int
    dtype: str = "float32"
    layout: str = "NHWC"

    @property
    def output(self) -> str:
        return OUTPUT_NAMES[self.task]

    def input_shape(self, layout: str | None = None) -> list[int | None]:
        h, w = self.size
        return [self.batch, 3, h, w] if (layout or self.layout) == "NCHW" else [self.batch, h, w, 3]

    def output_shape(self) -> list[int | None]:
        if self.task == "classification":
            return [self.batch, self.num_classes]
        h, w = self.size[0] // 4, self.size[1] // 4
        return [self.batch, self.num_classes, h, w] if self.layout == "NCHW" else [self.batch, h, w, self.num_classes]


def check_request(fmt: str, dtype: str, size: tuple[int, int], batch: int | None, layout: str) -> None:
    """Refuse a format, dtype, size, batch or layout the exports do not offer, naming what they do."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; formats: {', '.join(FORMATS)}")
    if dtype not in DTYPES[fmt]:
        raise ExportError(f"--format {fmt} does not offer dtype {dtype!r}; it offers {', '.join(DTYPES[fmt])}")
    if len(size) != 2 or any(int(s) <= 0 or int(s) % SIZE_MULTIPLE for s in size):
        raise ExportError(f"image size {size[0]}x{size[1]} is not a multiple of {SIZE_MULTIPLE} on both sides")
    if batch is not None and (not isinstance(batch, int) or batch < 1):
        raise ExportError(f"batch must be a positive integer or dynamic (None); got {batch!r}")
    if layout not in ("NHWC", "NCHW"):
        raise ExportError(f"layout must be NHWC or NCHW; got {layout!r}")
    if layout == "NCHW" and fmt != "onnx":
        raise ExportError(f"--layout NCHW is offered for onnx only; {fmt} takes NHWC images")


def inference_function(model: Any, variables: Any, dtype: str = "float32") -> Callable[[jax.Array], jax.Array]:
    """`images -> outputs` of `model` in eval mode with its BatchNorms folded into the convolutions and
    every convolution a plain one (one Conv op in each target), unscanned, computing in `dtype`."""
    if model.features_only:
        raise ExportError("a features_only model has no single output to export; create it with its head")
    if is_stacked(variables):
        variables = unstack_variables(variables)
    folded = fold_batchnorm(variables)
    export_model = model.clone(
        fold_bn=True,
        plain_convs=True,
        scan=False,
        explicit_conv_grads=False,
        remat=False,
        axis_name=None,
        dtype=jnp.dtype(dtype),
        param_dtype=jnp.float32,
    )
    return lambda images: export_model.apply(folded, images)


def reference_outputs(model: Any, variables: Any, images: np.ndarray) -> np.ndarray:
    """The float32 JAX model's outputs (BatchNorm unfolded), the numbers every artefact must reproduce.
    Computed by the scanned model (the same numbers; XLA compiles it 10x faster)."""
    if is_stacked(variables):
        variables = unstack_variables(variables)
    scanned = model.clone(scan=True, explicit_conv_grads=False, remat=False, axis_name=None, dtype=jnp.float32)
    apply = jax.jit(lambda v, x: scanned.apply(v, x))
    return np.asarray(apply(stack_variables(variables), jnp.asarray(images)))


def relative_error(ours: np.ndarray, ref: np.ndarray) -> float:
    """max |ours - ref| / max |ref|; infinite where `ours` has a NaN or an infinity."""
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    if ours.shape != ref.shape:
        raise ExportError(f"the artefact returned shape {ours.shape}; the model returns {ref.shape}")
    if not np.isfinite(ref).all():
        raise ExportError("the JAX model's own outputs on the sample images are not finite; check the weights")
    if not np.isfinite(ours).all():
        return float("inf")
    return float(np.max(np.abs(ours - ref)) / max(np.max(np.abs(ref)), 1e-30))


# ------------------------------------------------------------------ preprocessing and samples


def _weights_preset(source: str | None, preset: Any) -> Any:
    """The preprocessing the weights came with: `preset` if given, else the source's own (a registered
    weight, or the `paddle`/`timm` preset by file type)."""
    from hrnet_flax.weights.pretrained import default_spec

    if preset is not None:
        return preset
    return default_spec(source) if source is not None else "timm"


def preprocessing(model: Any, source: str | None, preset: Any, size: tuple[int, int]) -> dict[str, Any]:
    """What a caller does to an RGB image before the artefact: `normalize` gives mean and std for
    pixel values in [0, 255] (input = (x - mean) / std); a classifier's record adds the evaluation
    resize and crop of its weights (`hrnet_flax.data.preprocess.EvalSpec`)."""
    from hrnet_flax.weights.pretrained import IMAGENET_MEAN, IMAGENET_STD, PretrainedWeight

    task = model.config.head
    base = _weights_preset(source, preset)
    weight = base if isinstance(base, PretrainedWeight) else None
    record: dict[str, Any] = {"task": task, "weights": weight.name if weight else None}
    mean, std = [m * 255.0 for m in IMAGENET_MEAN], [s * 255.0 for s in IMAGENET_STD]
    if task == "classification":
        from hrnet_flax.data.preprocess import eval_spec

        spec = eval_spec(base, size=size[0] if size[0] == size[1] else None)
        mean, std = [m * 255.0 for m in spec.mean], [s * 255.0 for s in spec.std]
        if size[0] == size[1]:
            record["eval"] = {"preset": weight.name if weight else str(base), **dataclasses.asdict(spec)}
    else:
        spec = getattr(weight, "pose" if task == "pose" else "segmentation", None)
        if spec is not None:
            mean, std = (list(v) for v in spec.normalization(255.0))
    record["normalize"] = {"mean": mean, "std": std, "pixel_range": [0, 255]}
    return record


def default_size(model: Any, source: str | None) -> tuple[int, int]:
    """The input size of the weights' own evaluation: the preset's crop (classification), the
    registered test size (segmentation; 512x1024 otherwise) or crop size (pose; 256x192 otherwise)."""
    from hrnet_flax.weights.pretrained import PretrainedWeight

    weight = _weights_preset(source, None)
    weight = weight if isinstance(weight, PretrainedWeight) else None
    task = model.config.head
    if task == "classification":
        from hrnet_flax.data.preprocess import eval_spec

        side = eval_spec(weight or "timm").size
        return (side, side)
    if task == "segmentation":
        spec = weight.segmentation if weight else None
        return tuple(spec.test_size or spec.crop_size) if spec else (512, 1024)
    spec = weight.pose if weight else None
    return tuple(spec.input_size) if spec else (256, 192)


def sample_images(images: Sequence[np.ndarray] | None, size: tuple[int, int], count: int) -> np.ndarray:
    """uint8 (count, H, W, 3): the given RGB images resized to `size` (cycled to `count`), or without
    images a smooth synthetic scene (a deterministic stand-in for a photo)."""
    from PIL import Image

    h, w = size
    if not images:
        rng = np.random.default_rng(0)
        low = rng.uniform(0, 255, (count, 6, 8, 3)).astype(np.uint8)
        images = list(low)
    out = []
    for i in range(count):
        image = np.asarray(images[i % len(images)])
        if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
            raise ExportError(f"a verification image must be uint8 (H, W, 3) RGB; got {image.dtype} {image.shape}")
        out.append(np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR), np.uint8))
    return np.stack(out)


def normalize(images: np.ndarray, record: dict[str, Any]) -> np.ndarray:
    """uint8 images -> the artefact's float32 input, as `record["normalize"]` says."""
    mean = np.asarray(record["normalize"]["mean"], np.float32)
    std = np.asarray(record["normalize"]["std"], np.float32)
    return ((images.astype(np.float32) - mean) / std).astype(np.float32)


# ------------------------------------------------------------------ metadata


def metadata(signature: Signature, fmt: str, record: dict[str, Any], model: Any, source: str | None, **extra: Any) -> dict:
    """The JSON description stored with an artefact."""
    import importlib.metadata

    from hrnet_flax.weights.convert import split_config

    try:
        arch, overrides = split_config(model.config)
    except ValueError:
        arch, overrides = None, {}
    return {
        "format": fmt,
        "producer": f"hrnet-flax {importlib.metadata.version('hrnet-flax')}",
        "arch": arch,
        "config_overrides": overrides,
        "source": source,
        "task": signature.task,
        "num_classes": signature.num_classes,
        "dtype": signature.dtype,
        "batchnorm": "folded into the convolutions",
        "input": {
            "name": "images",
            "layout": signature.layout,
            "dtype": "float32",
            "shape": signature.input_shape(),
            "meaning": "RGB images normalised as preprocessing.normalize says: (x - mean) / std, x in [0, 255]",
        },
        "output": {
            "name": signature.output,
            "shape": signature.output_shape(),
            "meaning": {
                "classification": "class logits (softmax gives probabilities)",
                "segmentation": "per-pixel class logits at 1/4 of the input size (resize them bilinearly to the "
                "image, align_corners=" + str(bool(model.config.align_corners)) + ")",
                "pose": "one heatmap per joint at 1/4 of the input size",
            }[signature.task],
        },
        "preprocessing": record,
        **extra,
    }


def sidecar(path: str | os.PathLike) -> str:
    """Where the metadata of a single-file artefact (stablehlo, tflite) lives: `<path>.json`."""
    return f"{os.fspath(path)}.json"


def write_json(path: str | os.PathLike, data: dict) -> None:
    with open(path, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
