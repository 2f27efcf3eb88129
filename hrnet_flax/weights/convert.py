"""Reference state dicts <-> Flax variables, layout/arch detection, our own checkpoint format.

All mappings come from `layouts.key_table`, so import and export share one table.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import warnings
from typing import Any, Mapping

import numpy as np

from hrnet_flax.models.config import ARCHS, HRNetConfig
from hrnet_flax.models.registry import canonical_name, create_model
from hrnet_flax.models.stacking import model_variables, unstack_variables
from hrnet_flax.weights.checkpoint_io import CheckpointError, read_any, write_safetensors
from hrnet_flax.weights.layouts import LayoutError, Leaf, key_table, reference_names

log = logging.getLogger("hrnet_flax")

FORMAT = "hrnet_flax"
FORMAT_VERSION = "1"
IGNORED_SUFFIXES = (".num_batches_tracked",)
# Preferred name when several archs share a config (hrnet_w18_c == hrnet_w18_ssld).
_ARCH_ORDER = sorted(ARCHS, key=lambda n: ("ssld" in n, n))

# ------------------------------------------------------------------ array transforms


def to_flax(x: np.ndarray, transform: str) -> np.ndarray:
    if transform == "conv":
        return x.transpose(2, 3, 1, 0)
    return x.T if transform == "linear_t" else x


def from_flax(x: np.ndarray, transform: str) -> np.ndarray:
    if transform == "conv":
        return x.transpose(3, 2, 0, 1)
    return x.T if transform == "linear_t" else x


def ref_shape(leaf: Leaf) -> tuple[int, ...]:
    """The shape the reference framework stores for `leaf`."""
    s = leaf.shape
    if leaf.transform == "conv":
        return (s[3], s[2], s[0], s[1])
    return tuple(reversed(s)) if leaf.transform == "linear_t" else s


# ------------------------------------------------------------------ detection


def detect_layout(arrays: Mapping[str, np.ndarray], metadata: Mapping[str, str], path: str) -> str:
    """`flax` (ours), `timm`, `paddle`, `paddle2` or `mmpretrain`, from the keys."""
    if metadata.get("format") == FORMAT or any(k.startswith(("params/", "batch_stats/")) for k in arrays):
        return "flax"
    markers = {
        "paddle": "conv_layer1_1.conv.weight",
        "paddle2": "conv_layer1_1._conv.weight",
        "mmpretrain": "backbone.conv1.weight",
        "timm": "conv1.weight",
    }
    for layout, key in markers.items():
        if key in arrays:
            return layout
    keys = sorted(arrays)
    if any(k.endswith(("_weights", "_offset", "_scale")) for k in keys):
        raise CheckpointError(
            f"{path}: keys are Paddle parameter names (like {keys[0]!r}), not structured names; "
            "re-save the state dict with paddle.save(model.state_dict(), ...) or use the current PaddleClas weights"
        )
    raise CheckpointError(
        f"{path}: not an HRNet checkpoint in a known layout (PaddleClas, timm/official, mmpretrain, hrnet_flax); "
        f"first keys: {keys[:5]}"
    )


def _num_classes(arrays: Mapping[str, np.ndarray], layout: str) -> int:
    key = reference_names(("classifier",), layout)[0] + ".weight"
    if key not in arrays:
        return 0
    return int(arrays[key].shape[1 if layout.startswith("paddle") else 0])


def describe(arrays: Mapping[str, np.ndarray], layout: str) -> dict[str, Any]:
    """The structure features that tell the variants apart, read from the keys."""

    def key(*path: str, suffix: str = ".weight") -> str:
        return reference_names(path, layout)[0] + suffix

    def count(path_of) -> int:
        return next(i for i in range(1000) if key(*path_of(i)) not in arrays)

    first = key("stage2_0", "branch0_0", "conv1")
    if first not in arrays:
        raise CheckpointError(f"missing key {first!r}, which every HRNet checkpoint in the {layout} layout has")
    try:
        se = key("layer1_0", "se", "squeeze") in arrays
    except LayoutError:  # the layout has no SE blocks
        se = False
    return {
        "stage1_blocks": count(lambda k: (f"layer1_{k}", "conv1")),
        "modules": tuple(count(lambda m, s=s: (f"stage{s}_{m}", "branch0_0", "conv1")) for s in (2, 3, 4)),
        "blocks": count(lambda k: ("stage2_0", f"branch0_{k}", "conv1")),
        "width": int(arrays[first].shape[0]),
        "se": se,
        "head_conv_bias": key("final", suffix=".bias") in arrays,
    }


def _features(config: HRNetConfig) -> dict[str, Any]:
    return {
        "stage1_blocks": config.stages[0].num_blocks[0],
        "modules": tuple(s.num_modules for s in config.stages[1:]),
        "blocks": config.stages[1].num_blocks[0],
        "width": config.stages[1].num_channels[0],
        "se": config.se,
        "head_conv_bias": config.head_conv_bias,
    }


def arch_name(config: HRNetConfig) -> str:
    """The registered name of `config` (the preferred one where several names share it)."""
    return next(n for n in _ARCH_ORDER if ARCHS[n] == config)


def detect_arch(arrays: Mapping[str, np.ndarray], layout: str, path: str) -> str:
    """The arch whose structure matches the checkpoint's keys and shapes."""
    try:
        feats = describe(arrays, layout)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
    for name in _ARCH_ORDER:
        if _features(ARCHS[name]) == feats:
            return name
    raise CheckpointError(f"{path}: no known HRNet variant has this structure: {feats}")


# ------------------------------------------------------------------ import


def _check_keys(present: set[str], table: list[Leaf], path: str, hint: str) -> None:
    expected = {leaf.key for leaf in table}
    present = {k for k in present if not k.endswith(IGNORED_SUFFIXES)}
    missing, unexpected = sorted(expected - present), sorted(present - expected)
    if missing or unexpected:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected)):
            if keys:
                more = f" ... (+{len(keys) - 10} more)" if len(keys) > 10 else ""
                parts.append(f"{len(keys)} {label} key(s): {', '.join(keys[:10])}{more}")
        raise CheckpointError(f"{path}: {'; '.join(parts)}{hint}")


def to_variables(arrays: Mapping[str, np.ndarray], table: list[Leaf], path: str, hint: str = "") -> dict:
    """Nested `{"params": ..., "batch_stats": ...}` numpy variables from a reference state dict."""
    _check_keys(set(arrays), table, path, hint)
    variables: dict = {}
    for leaf in table:
        x = np.asarray(arrays[leaf.key])
        if tuple(x.shape) != ref_shape(leaf):
            raise CheckpointError(
                f"{path}: key {leaf.key!r} has shape {tuple(x.shape)} but the model needs {ref_shape(leaf)} "
                f"(for {leaf.flax_key}){hint}"
            )
        node = variables.setdefault(leaf.collection, {})
        for part in leaf.path[:-1]:
            node = node.setdefault(part, {})
        node[leaf.path[-1]] = np.ascontiguousarray(to_flax(x, leaf.transform)).astype(np.float32)
    return variables


def load_checkpoint_file(
    path: str | os.PathLike,
    *,
    arch: str | None = None,
    num_classes: int | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
):
    """`(model, variables)` from a local checkpoint file of any supported layout."""
    path = str(path)
    arrays, metadata, _ = read_any(path)
    layout = detect_layout(arrays, metadata, path)
    wanted = canonical_name(arch) if arch is not None else None
    if layout == "flax":
        found, found_classes = _flax_metadata(metadata, path)
    else:
        try:
            found = detect_arch(arrays, layout, path)
        except CheckpointError:
            if wanted is None:
                raise
            found = None  # validate against the requested arch: the error lists keys and shapes
        found_classes = _num_classes(arrays, layout)
    arch = wanted or found
    hint = ""
    if found is not None and ARCHS[arch] != ARCHS[found]:
        hint = f" (the checkpoint looks like {found}; you asked for {arch})"
    try:
        table = key_table(ARCHS[arch], found_classes, layout)
    except LayoutError as e:
        raise CheckpointError(f"{path}: a {layout} checkpoint cannot hold {arch}: {e}") from None
    variables = to_variables(arrays, table, path, hint)
    if hint:
        raise CheckpointError(f"{path}: checkpoint is {found}, not {arch}")
    model_kwargs = dict(model_kwargs or {})
    if num_classes is None:
        num_classes = found_classes
    if num_classes != found_classes:
        _reset_classifier(variables, ARCHS[arch].num_features, num_classes, path, found_classes)
    model = create_model(arch, num_classes=num_classes, **model_kwargs)
    import jax

    variables = model_variables(model, jax.tree_util.tree_map(jax.numpy.asarray, variables))
    if model.fold_bn:  # an inference model with BatchNorm folded into the convs
        from hrnet_flax.models.fold import fold_batchnorm

        variables = fold_batchnorm(variables, model.bn_epsilon)
    return model, variables


def _reset_classifier(variables: dict, features: int, num_classes: int, path: str, old: int) -> None:
    params = variables["params"]
    params.pop("classifier", None)
    msg = f"{path}: checkpoint has {old} classes; "
    if num_classes:
        import flax.linen as nn
        import jax
        import jax.numpy as jnp

        new = nn.Dense(num_classes).init(jax.random.key(0), jnp.zeros((1, features)))["params"]
        params["classifier"] = jax.tree_util.tree_map(np.asarray, dict(new))
        msg += f"re-initialised the classifier for {num_classes} classes"
    else:
        msg += "dropped the classifier (num_classes=0)"
    log.warning(msg)
    warnings.warn(msg, stacklevel=3)


# ------------------------------------------------------------------ export and our format


def flat_variables(variables: Mapping) -> dict[str, np.ndarray]:
    """`params` and `batch_stats` leaves as numpy, keyed by '/'-joined path."""
    out = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, Mapping):
            for k, v in node.items():
                walk(v, f"{prefix}/{k}")
        else:
            out[prefix] = np.asarray(node)

    for collection in ("params", "batch_stats"):
        walk(variables.get(collection, {}), collection)
    return out


def _table_values(variables: Mapping, table: list[Leaf], arch: str) -> dict[str, np.ndarray]:
    """Our leaves in table order (stacked `scan=True` variables are unstacked first); missing, extra
    or misshapen variables raise `CheckpointError`."""
    flat = flat_variables(unstack_variables(variables))
    expected = {leaf.flax_key for leaf in table}
    missing, extra = sorted(expected - set(flat)), sorted(set(flat) - expected)
    if missing or extra:
        raise CheckpointError(
            f"variables do not fit {arch}: missing {missing[:5]}{' ...' if len(missing) > 5 else ''}, "
            f"unexpected {extra[:5]}{' ...' if len(extra) > 5 else ''}"
        )
    for leaf in table:
        if flat[leaf.flax_key].shape != leaf.shape:
            raise CheckpointError(
                f"variable {leaf.flax_key} has shape {flat[leaf.flax_key].shape}, {arch} needs {leaf.shape}"
            )
    return flat


def variables_num_classes(variables: Mapping) -> int:
    cls = variables["params"].get("classifier")
    return int(np.shape(cls["kernel"])[1]) if cls is not None else 0


def from_variables(variables: Mapping, arch: str, layout: str = "timm") -> dict[str, np.ndarray]:
    """A reference state dict (numpy) from our variables; torch layouts get `num_batches_tracked`."""
    config = ARCHS[canonical_name(arch)]
    try:
        table = key_table(config, variables_num_classes(variables), layout)
    except LayoutError as e:
        raise CheckpointError(f"cannot export {arch} to the {layout} layout: {e}") from None
    flat = _table_values(variables, table, arch)
    out = {leaf.key: np.ascontiguousarray(from_flax(flat[leaf.flax_key], leaf.transform)) for leaf in table}
    if not layout.startswith("paddle"):
        for key in [k for k in out if k.endswith(".running_var")]:
            out[key[: -len("running_var")] + "num_batches_tracked"] = np.zeros((), np.int64)
    return out


def export_timm(path: str | os.PathLike, variables: Mapping, *, arch: str) -> None:
    """Write a timm/official state dict `.safetensors` (timm: `load_state_dict(strict=True)`)."""
    write_safetensors(path, from_variables(variables, arch, "timm"), metadata={"format": "pt"})


def save_checkpoint(
    path: str | os.PathLike, variables: Mapping, *, arch: str, num_classes: int, **metadata: Any
) -> None:
    """Our self-describing checkpoint: `.safetensors` with '/'-joined variable paths as keys and
    metadata `format`, `format_version`, `arch`, `num_classes` (+ any extra, JSON-encoded)."""
    arch = canonical_name(arch)
    if variables_num_classes(variables) != num_classes:
        found = variables_num_classes(variables)
        raise CheckpointError(f"num_classes={num_classes} but the variables' classifier has {found}")
    table = key_table(ARCHS[arch], num_classes, "flax")
    arrays = _table_values(variables, table, arch)
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    meta.update(format=FORMAT, format_version=FORMAT_VERSION, arch=arch, num_classes=str(num_classes))
    write_safetensors(path, arrays, meta)


def _flax_metadata(metadata: Mapping[str, str], path: str) -> tuple[str, int]:
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path}: has Flax-style keys but no hrnet_flax metadata (format/arch/num_classes)")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: hrnet_flax format version {metadata.get('format_version')!r} is not supported")
    arch = metadata.get("arch", "")
    if arch not in ARCHS:
        close = difflib.get_close_matches(arch, ARCHS, n=3)
        raise CheckpointError(f"{path}: unknown arch {arch!r} in metadata (close: {close})")
    try:
        return arch, int(metadata["num_classes"])
    except (KeyError, ValueError):
        raise CheckpointError(f"{path}: metadata num_classes missing or not an integer") from None
