"""Variants by name: `list_models` and `create_model`."""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

import jax.numpy as jnp

from hrnet_flax.models.config import ARCHS, DEFAULT_CLASSES, HRNetConfig
from hrnet_flax.models.hrnet import HRNet


def list_models(pattern: str = "*") -> list[str]:
    """Names of all variants (optionally filtered by an fnmatch pattern)."""
    import fnmatch

    return sorted(n for n in ARCHS if fnmatch.fnmatch(n, pattern.lower()))


def canonical_name(name: str) -> str:
    """Lower-cased variant name without a pretrained tag; raises with close names if unknown."""
    base = name.strip().lower().split(".", 1)[0]
    if base not in ARCHS:
        close = difflib.get_close_matches(base, ARCHS, n=5, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown HRNet variant {name!r}{hint} (all: {', '.join(list_models())})")
    return base


def get_config(name: str) -> HRNetConfig:
    return ARCHS[canonical_name(name)]


def create_model(
    name: str,
    *,
    num_classes: int | None = None,
    dtype: Any = jnp.float32,
    param_dtype: Any = jnp.float32,
    **overrides: Any,
) -> HRNet:
    """An `HRNet` module for a named variant (case-insensitive, e.g. `HRNet_W18_C`, `hrnetv2_w48_seg`).

    `num_classes` defaults to the head's usual dataset: 1000 (ImageNet-1k) for classifiers, 19
    (Cityscapes) for segmenters.

    `overrides` may name any `HRNet` field (`axis_name`, `features_only`, `bn_momentum`, ...)
    or any `HRNetConfig` field (`head_conv_bias`, `se`, ...).
    """
    config = get_config(name)
    config_fields = {f.name for f in dataclasses.fields(HRNetConfig)}
    module_fields = {f.name for f in dataclasses.fields(HRNet)} - {"config", "parent", "name"}
    unknown = set(overrides) - config_fields - module_fields
    if unknown:
        raise TypeError(
            f"create_model({name!r}) got unknown option(s) {sorted(unknown)}; "
            f"valid: {sorted((config_fields | module_fields) - {'num_classes', 'dtype', 'param_dtype'})}"
        )
    config_overrides = {k: v for k, v in overrides.items() if k in config_fields}
    if config_overrides:
        config = dataclasses.replace(config, **config_overrides)
    module_overrides = {k: v for k, v in overrides.items() if k in module_fields}
    if num_classes is None:
        num_classes = DEFAULT_CLASSES[config.head]
    return HRNet(config, num_classes=num_classes, dtype=dtype, param_dtype=param_dtype, **module_overrides)
