"""Exports of a model to other runtimes: StableHLO (`jax.export`), TensorFlow SavedModel, TFLite
and ONNX, each with BatchNorm folded, described by its metadata (calling convention, the weights'
preprocessing) and checked against the JAX model right after writing."""

from hrnet_flax.export.core import DTYPES, FORMATS, TOLERANCES, ExportError, MissingRuntimeError
from hrnet_flax.export.exporter import ExportResult, export, export_model, load_exported, read_metadata
from hrnet_flax.export.stablehlo import load_stablehlo

__all__ = [
    "DTYPES",
    "FORMATS",
    "TOLERANCES",
    "ExportError",
    "ExportResult",
    "MissingRuntimeError",
    "export",
    "export_model",
    "load_exported",
    "load_stablehlo",
    "read_metadata",
]
