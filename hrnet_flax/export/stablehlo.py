"""StableHLO through `jax.export`: a serialized, versioned module that JAX alone reloads and runs
(`load_stablehlo`), lowered for CPU, CUDA and TPU; its metadata in `<path>.json`."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hrnet_flax.export.core import ExportError, Signature, sidecar

PLATFORMS = ("cpu", "cuda", "tpu")


def write(fn: Callable, signature: Signature, path: str) -> dict[str, Any]:
    """Serialize `fn` for NHWC float32 inputs of `signature` (a symbolic batch `batch` when dynamic)."""
    from jax import export

    batch = export.symbolic_shape("batch")[0] if signature.batch is None else signature.batch
    h, w = signature.size
    exported = export.export(jax.jit(fn), platforms=PLATFORMS)(jax.ShapeDtypeStruct((batch, h, w, 3), jnp.float32))
    with open(path, "wb") as f:
        f.write(exported.serialize())
    return {"platforms": list(PLATFORMS), "calling_convention_version": exported.calling_convention_version}


def load_stablehlo(path: str | os.PathLike) -> tuple[Callable[[Any], jax.Array], dict[str, Any]]:
    """`(call, metadata)` of an exported StableHLO file: `call(images)` runs it with JAX."""
    from jax import export

    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            exported = export.deserialize(bytearray(f.read()))
    except FileNotFoundError:
        raise ExportError(f"no StableHLO export at {path}") from None
    except Exception as e:  # not a jax.export serialization
        raise ExportError(f"{path} is not a jax.export serialization: {e}") from e
    meta_path = sidecar(path)
    meta = {}
    if os.path.exists(meta_path):
        with open(meta_path) as f:
            meta = json.load(f)
    return exported.call, meta


def runner(path: str) -> Callable[[np.ndarray], np.ndarray]:
    call, _ = load_stablehlo(path)
    return lambda images: np.asarray(call(jnp.asarray(images)))
