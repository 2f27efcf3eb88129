"""Reference state dicts <-> Flax variables, layout/arch detection, our own checkpoint format.

All mappings come from `layouts.key_table`, so import and export share one table. Checkpoints are
classifiers, HRNetV2 segmenters (official/mmsegmentation) or top-down pose networks
(official/mmpose); a segmenter or a pose network can also start from a classification
checkpoint's backbone (`load_checkpoint_file(..., task="segmentation")` or `task="pose"`).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import os
import warnings
from typing import Any, Mapping

import numpy as np

from hrnet_flax.models.config import ARCHS, HEADS, HRNetConfig
from hrnet_flax.models.registry import canonical_name, create_model
from hrnet_flax.models.stacking import model_variables, unstack_variables
from hrnet_flax.weights.checkpoint_io import CheckpointError, read_any, write_safetensors
from hrnet_flax.weights.layouts import LayoutError, Leaf, bn_mean_leaf, key_table, reference_names

log = logging.getLogger("hrnet_flax")

FORMAT = "hrnet_flax"
FORMAT_VERSION = "1"
IGNORED_SUFFIXES = (".num_batches_tracked",)
# Keys that hold no weights: mmengine's input normalisation buffers.
IGNORED_PREFIXES = ("data_preprocessor.",)
# Each head's top-level Flax modules, and the one that ends in the class (joint) count.
HEAD_MODULES = {
    "segmentation": ("seg_head", "seg_classifier"),
    "pose": ("pose_head",),
}
OUTPUT_MODULE = {"classification": "classifier", "segmentation": "seg_classifier", "pose": "pose_head"}
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


def strip_wrappers(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The state dict without what holds no weights of the network: `num_batches_tracked`
    counters, mmengine's `data_preprocessor.*`; in files the official segmentation training
    saved (its `FullModel`: keys `model.*` plus the loss's `loss.*` class-weight buffer), the
    `model.` prefix and the `loss.*` keys; the `module.` prefix of a `DataParallel` model (the
    official pose training's `checkpoint.pth`); and mmpose 0.x's `keypoint_head.`, renamed
    `head.` as mmpose 1.x's loading hook does."""
    out = {k: v for k, v in arrays.items() if not k.endswith(IGNORED_SUFFIXES) and not k.startswith(IGNORED_PREFIXES)}
    if any(k.startswith("model.") for k in out) and all(k.startswith(("model.", "loss.")) for k in out):
        out = {k[len("model.") :]: v for k, v in out.items() if k.startswith("model.")}
    if out and all(k.startswith("module.") for k in out):
        out = {k[len("module.") :]: v for k, v in out.items()}
    if any(k.startswith("keypoint_head.") for k in out) and not any(k.startswith("head.") for k in out):
        out = {("head." + k[len("keypoint_head.") :] if k.startswith("keypoint_head.") else k): v for k, v in out.items()}
    return out


def detect_layout(arrays: Mapping[str, np.ndarray], metadata: Mapping[str, str], path: str) -> str:
    """`flax` (ours), `timm` (also the official classification, segmentation and pose files, bare
    or `model.`/`module.`-prefixed), `paddle`, `paddle2`, `mmpretrain`, `mmseg` or `mmpose`, from
    the keys."""
    if metadata.get("format") == FORMAT or any(k.startswith(("params/", "batch_stats/")) for k in arrays):
        return "flax"
    arrays = strip_wrappers(arrays)
    markers = {  # mmseg and mmpose before mmpretrain: all have `backbone.conv1.weight`
        "paddle": "conv_layer1_1.conv.weight",
        "paddle2": "conv_layer1_1._conv.weight",
        "mmseg": "decode_head.conv_seg.weight",
        "mmpose": "head.final_layer.weight",
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
        f"{path}: not an HRNet checkpoint in a known layout (PaddleClas, timm/official, mmpretrain, "
        f"mmsegmentation, mmpose, hrnet_flax); first keys: {keys[:5]}"
    )


def _num_classes(arrays: Mapping[str, np.ndarray], layout: str, head: str) -> int:
    """The class (pose: joint) count of the checkpoint's output layer (0 if it has none)."""
    module = OUTPUT_MODULE[head]
    try:
        key = reference_names((module,), layout)[0] + ".weight"
    except LayoutError:
        return 0
    if key not in arrays:
        return 0
    return int(arrays[key].shape[1 if layout.startswith("paddle") else 0])


def _has(arrays: Mapping[str, np.ndarray], layout: str, path: tuple[str, ...], suffix: str = ".weight") -> bool:
    try:
        return reference_names(path, layout)[0] + suffix in arrays
    except LayoutError:  # the layout has no such module
        return False


def describe(arrays: Mapping[str, np.ndarray], layout: str) -> dict[str, Any]:
    """The structure features that tell the variants apart, read from the keys."""

    def key(*path: str, suffix: str = ".weight") -> str:
        return reference_names(path, layout)[0] + suffix

    def count(path_of) -> int:
        return next(i for i in range(1000) if key(*path_of(i)) not in arrays)

    first = key("stage2_0", "branch0_0", "conv1")
    if first not in arrays:
        raise CheckpointError(f"missing key {first!r}, which every HRNet checkpoint in the {layout} layout has")
    head = "classification"
    if _has(arrays, layout, ("seg_head",)) or _has(arrays, layout, ("seg_classifier",)):
        head = "segmentation"
    elif _has(arrays, layout, ("pose_head",)):
        head = "pose"
    feats = {
        "head": head,
        "stage1_blocks": count(lambda k: (f"layer1_{k}", "conv1")),
        "modules": tuple(count(lambda m, s=s: (f"stage{s}_{m}", "branch0_0", "conv1")) for s in (2, 3, 4)),
        "blocks": count(lambda k: ("stage2_0", f"branch0_{k}", "conv1")),
        "width": int(arrays[first].shape[0]),
        "se": _has(arrays, layout, ("layer1_0", "se", "squeeze")),
    }
    if head == "classification":
        feats["head_conv_bias"] = _has(arrays, layout, ("final",), ".bias")
    return feats


def _features(config: HRNetConfig) -> dict[str, Any]:
    feats = {"head": config.head, **backbone_features(config)}
    if config.head == "classification":
        feats["head_conv_bias"] = config.head_conv_bias
    return feats


def backbone_features(config: HRNetConfig) -> dict[str, Any]:
    """What tells the registered backbones apart (equal features: the same backbone keys and shapes)."""
    return {
        "stage1_blocks": config.stages[0].num_blocks[0],
        "modules": tuple(s.num_modules for s in config.stages[1:]),
        "blocks": config.stages[1].num_blocks[0],
        "width": config.stages[1].num_channels[0],
        "se": config.se,
    }


def arch_name(config: HRNetConfig) -> str:
    """The registered name of `config` (the preferred one where several names share it)."""
    return next(n for n in _ARCH_ORDER if ARCHS[n] == config)


# Config fields that are settings of a registered variant rather than its structure.
CONFIG_SETTINGS = ("upsample", "align_corners")


def split_config(config: HRNetConfig) -> tuple[str, dict[str, Any]]:
    """`(registered name, overrides)` with `create_model(name, **overrides).config == config`
    (overrides: the settings `upsample`/`align_corners` where they differ from the name's)."""
    for name in _ARCH_ORDER:
        base = ARCHS[name]
        overrides = {f: getattr(config, f) for f in CONFIG_SETTINGS if getattr(config, f) != getattr(base, f)}
        if dataclasses.replace(base, **overrides) == config:
            return name, overrides
    raise ValueError(f"no registered HRNet variant has this structure: {config}")


def variant_for(config: HRNetConfig, head: str) -> str | None:
    """The `head` variant ("segmentation", "pose", ...) with the backbone of `config` (None: there
    is none, e.g. for SE blocks)."""
    feats = backbone_features(config)
    return next((n for n in _ARCH_ORDER if ARCHS[n].head == head and backbone_features(ARCHS[n]) == feats), None)


def segmenter_for(config: HRNetConfig) -> str | None:
    """The segmentation variant with the backbone of `config` (None: there is none, e.g. SE blocks)."""
    return variant_for(config, "segmentation")


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
    """Nested `{"params": ..., "batch_stats": ...}` numpy variables from a reference state dict
    (a conv bias the layout does not store is 0)."""
    _check_keys(set(arrays), [leaf for leaf in table if leaf.transform != "absent"], path, hint)
    variables: dict = {}
    for leaf in table:
        if leaf.transform == "absent":
            _put(variables, leaf, np.zeros(leaf.shape, np.float32))
            continue
        x = np.asarray(arrays[leaf.key])
        if tuple(x.shape) != ref_shape(leaf):
            raise CheckpointError(
                f"{path}: key {leaf.key!r} has shape {tuple(x.shape)} but the model needs {ref_shape(leaf)} "
                f"(for {leaf.flax_key}){hint}"
            )
        _put(variables, leaf, np.ascontiguousarray(to_flax(x, leaf.transform)).astype(np.float32))
    return variables


def _put(variables: dict, leaf: Leaf, value: np.ndarray) -> None:
    node = variables.setdefault(leaf.collection, {})
    for part in leaf.path[:-1]:
        node = node.setdefault(part, {})
    node[leaf.path[-1]] = value


def load_checkpoint_file(
    path: str | os.PathLike,
    *,
    arch: str | None = None,
    num_classes: int | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    task: str | None = None,
):
    """`(model, variables)` from a local checkpoint file of any supported layout.

    `task` ("classification", "segmentation" or "pose"; default: the checkpoint's, or `arch`'s)
    chooses the model. A segmenter or pose network from a classification checkpoint
    (`task="segmentation"`/`"pose"`, or such an `arch`) takes its backbone and gets a new head for
    `num_classes` classes or joints (which must be given). A `num_classes` that differs from the
    checkpoint's re-initialises the output layer, with a warning. `model_kwargs` go to `create_model` (e.g. `align_corners=True`, `dtype`);
    our own files' recorded config settings apply unless overridden there.
    """
    path = str(path)
    if task is not None and task not in HEADS:
        raise ValueError(f"unknown task {task!r}; use one of {HEADS}")
    arrays, metadata, _ = read_any(path)
    layout = detect_layout(arrays, metadata, path)
    if layout != "flax":
        arrays = strip_wrappers(arrays)
    wanted = canonical_name(arch) if arch is not None else None
    if wanted is not None and task is not None and ARCHS[wanted].head != task:
        raise ValueError(f"arch {wanted} is a {ARCHS[wanted].head} model, not {task}")
    task = task or (ARCHS[wanted].head if wanted else None)
    model_kwargs = dict(model_kwargs or {})
    if layout == "flax":
        found, found_classes, saved = _flax_metadata(metadata, path)
        model_kwargs = {**saved, **model_kwargs}
    else:
        try:
            found = detect_arch(arrays, layout, path)
        except CheckpointError:
            if wanted is None:
                raise
            found = None  # validate against the requested arch: the error lists keys and shapes
        found_classes = _num_classes(arrays, layout, ARCHS[found or wanted].head)
    found_task = ARCHS[found].head if found is not None else None
    if task in HEAD_MODULES and found_task == "classification":
        return _dense_from_classifier(arrays, layout, path, found, found_classes, wanted, task, num_classes, model_kwargs)
    if task is not None and found_task is not None and task != found_task:
        raise CheckpointError(
            f"{path}: a {found_task} checkpoint ({found}, {found_classes} {_outputs(found_task)}) cannot be "
            f"loaded as a {task} model; load it as a {found_task} model (no task/arch, or task={found_task!r})"
        )
    arch = wanted or found
    hint = ""
    if found is not None and ARCHS[arch] != ARCHS[found]:
        hint = f" (the checkpoint looks like {found}; you asked for {arch})"
    table = _table(ARCHS[arch], found_classes, layout, path, arch)
    variables = to_variables(arrays, table, path, hint)
    if hint:
        raise CheckpointError(f"{path}: checkpoint is {found}, not {arch}")
    if num_classes is None:
        num_classes = found_classes
    head = ARCHS[arch].head
    if head in HEAD_MODULES and num_classes <= 0:
        raise CheckpointError(f"{path}: a {head} model needs num_classes > 0 (got {num_classes})")
    if num_classes != found_classes:
        if head in HEAD_MODULES:
            _reset_output(variables, arch, num_classes, path, found_classes)
        else:
            _reset_classifier(variables, ARCHS[arch].num_features, num_classes, path, found_classes)
    return _build(arch, num_classes, variables, model_kwargs)


def _table(config: HRNetConfig, num_classes: int, layout: str, path: str, arch: str) -> list[Leaf]:
    try:
        return key_table(config, num_classes, layout)
    except LayoutError as e:
        raise CheckpointError(f"{path}: a {layout} checkpoint cannot hold {arch}: {e}") from None


def _build(arch: str, num_classes: int, variables: dict, model_kwargs: Mapping[str, Any]):
    """`(model, variables)`: the model, and the numpy variables in its layout (scan, fold_bn)."""
    model = create_model(arch, num_classes=num_classes, **model_kwargs)
    import jax

    variables = model_variables(model, jax.tree_util.tree_map(jax.numpy.asarray, variables))
    if model.fold_bn:  # an inference model with BatchNorm folded into the convs
        from hrnet_flax.models.fold import fold_batchnorm

        variables = fold_batchnorm(variables, model.bn_epsilon)
    return model, variables


def _outputs(head: str) -> str:
    return "joints" if head == "pose" else "classes"


def _fresh_head(arch: str, num_classes: int, parts: tuple[str, ...]) -> dict:
    """`{collection: {part: ...}}` for the dense-head `parts`, initialised as a new model's
    (`init_variables`: He normal `seg_head` conv, normal(0, 0.01) `seg_classifier`, normal(0, 0.001)
    `pose_head`, zero biases, BatchNorm scale 1, shift 0, mean 0, variance 1)."""
    import jax

    from hrnet_flax.models.initialization import init_variables

    fresh = init_variables(create_model(arch, num_classes=num_classes), jax.random.key(0))
    return {
        collection: {
            p: jax.tree_util.tree_map(np.asarray, fresh[collection][p]) for p in parts if p in fresh[collection]
        }
        for collection in ("params", "batch_stats")
    }


def _dense_from_classifier(
    arrays: Mapping[str, np.ndarray],
    layout: str,
    path: str,
    found: str,
    found_classes: int,
    wanted: str | None,
    task: str,
    num_classes: int | None,
    model_kwargs: Mapping[str, Any],
):
    """A segmenter or pose network (`task`) with the backbone of classification checkpoint
    `arrays` (of `found`) and a new head. Classifier tensors the new model lacks are dropped: the
    classification head, and for a pose network the last module's fusions into branches 1-3."""
    arch = wanted or variant_for(ARCHS[found], task)
    if arch is None:
        raise CheckpointError(
            f"{path}: the checkpoint is {found}, whose backbone has no {task} variant "
            "(SE blocks exist only in the PaddleClas classifiers)"
        )
    if backbone_features(ARCHS[arch]) != backbone_features(ARCHS[found]):
        raise CheckpointError(f"{path}: the checkpoint's backbone is {found}'s, which {arch} does not have")
    if not num_classes:
        example = "17 for COCO keypoints" if task == "pose" else "19 for Cityscapes"
        raise CheckpointError(
            f"{path}: is a classification checkpoint ({found}); a {task} model from it gets a new head, "
            f"so give its {_outputs(task)[:-1]} count (num_classes=..., e.g. {example})"
        )
    table = _table(ARCHS[found], found_classes, layout, path, found)
    variables = to_variables(arrays, table, path)
    target = key_table(ARCHS[arch], num_classes, "flax")
    wanted_keys = {leaf.flax_key for leaf in target}
    used = [leaf for leaf in table if leaf.flax_key in wanted_keys]
    dropped = [leaf for leaf in table if leaf.flax_key not in wanted_keys]
    kept: dict = {}
    for leaf in used:
        node = variables[leaf.collection]
        for part in leaf.path:
            node = node[part]
        _put(kept, leaf, node)
    for collection, parts in _fresh_head(arch, num_classes, HEAD_MODULES[task]).items():
        kept.setdefault(collection, {}).update(parts)
    new = [leaf.flax_key for leaf in target if leaf.path[0] in HEAD_MODULES[task]]
    groups = sorted({_group(leaf, layout) for leaf in dropped})
    msg = (
        f"{path}: {arch} from the {found} classification checkpoint: {len(used)} backbone tensors loaded; "
        f"{len(new)} new, initialised ({', '.join(new)}); {len(dropped)} tensors the {task} model does not "
        f"have dropped ({', '.join(groups)})"
    )
    log.info("%s: dropped keys: %s", path, ", ".join(leaf.key for leaf in dropped))
    log.warning(msg)
    warnings.warn(msg, stacklevel=4)
    return _build(arch, num_classes, kept, model_kwargs)


def _group(leaf: Leaf, layout: str) -> str:
    """A short name for the part of the network `leaf` belongs to, for messages: its top module,
    or for a fuse layer the module's fusions into one branch (`stage4.2.fuse_layers.1`)."""
    if layout == "flax":
        return "/".join(leaf.path[:2]) if len(leaf.path) > 1 and leaf.path[1].startswith("fuse") else leaf.path[0]
    i = leaf.key.find(".fuse_layers.")
    return leaf.key[: leaf.key.index(".", i + len(".fuse_layers."))] if i >= 0 else leaf.key.split(".")[0]


def _reset_output(variables: dict, arch: str, num_classes: int, path: str, old: int) -> None:
    """A new output layer (`seg_classifier`, `pose_head`) for `num_classes` classes or joints."""
    head = ARCHS[arch].head
    module = OUTPUT_MODULE[head]
    variables["params"][module] = _fresh_head(arch, num_classes, (module,))["params"][module]
    what = _outputs(head)
    msg = f"{path}: checkpoint has {old} {what}; re-initialised {module} for {num_classes} {what}"
    log.warning(msg)
    warnings.warn(msg, stacklevel=4)


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
    """The class (joint) count of the variables' output layer (`classifier`, `seg_classifier` or
    `pose_head`; 0: none)."""
    params = variables["params"]
    for module in ("seg_classifier", "pose_head"):
        if module in params:
            return int(np.shape(params[module]["kernel"])[-1])
    cls = params.get("classifier")
    return int(np.shape(cls["kernel"])[1]) if cls is not None else 0


def from_variables(variables: Mapping, arch: str, layout: str = "timm") -> dict[str, np.ndarray]:
    """A reference state dict (numpy) from our variables; torch layouts get `num_batches_tracked`.

    A segmentation or pose arch in the `timm` layout gives the official segmentation or pose keys. A conv bias the
    layout lacks (`mmseg`'s `decode_head.convs.0.conv`) is folded into its BatchNorm's running mean.
    """
    config = ARCHS[canonical_name(arch)]
    try:
        table = key_table(config, variables_num_classes(variables), layout)
    except LayoutError as e:
        raise CheckpointError(f"cannot export {arch} to the {layout} layout: {e}") from None
    flat = _table_values(variables, table, arch)
    out = {
        leaf.key: np.ascontiguousarray(from_flax(flat[leaf.flax_key], leaf.transform))
        for leaf in table
        if leaf.transform != "absent"
    }
    for leaf in table:
        if leaf.transform == "absent":  # BN(conv + b) with mean m == BN(conv) with mean m - b
            mean = bn_mean_leaf(table, leaf)
            out[mean.key] = out[mean.key] - flat[leaf.flax_key].astype(out[mean.key].dtype)
    if not layout.startswith("paddle"):
        for key in [k for k in out if k.endswith(".running_var")]:
            out[key[: -len("running_var")] + "num_batches_tracked"] = np.zeros((), np.int64)
    return out


def export_timm(path: str | os.PathLike, variables: Mapping, *, arch: str) -> None:
    """Write a timm/official state dict `.safetensors` (timm: `load_state_dict(strict=True)`)."""
    write_safetensors(path, from_variables(variables, arch, "timm"), metadata={"format": "pt"})


def save_checkpoint(
    path: str | os.PathLike,
    variables: Mapping,
    *,
    arch: str,
    num_classes: int,
    config_overrides: Mapping[str, Any] | None = None,
    **metadata: Any,
) -> None:
    """Our self-describing checkpoint: `.safetensors` with '/'-joined variable paths as keys and
    metadata `format`, `format_version`, `arch`, `num_classes` (+ any extra, JSON-encoded).

    `config_overrides`: settings the model was created with that differ from `arch`'s
    (`upsample`, `align_corners`; see `split_config`), stored as `config_overrides` and applied
    again on loading."""
    arch = canonical_name(arch)
    overrides = dict(config_overrides or {})
    if set(overrides) - set(CONFIG_SETTINGS):
        raise ValueError(f"config_overrides may set {CONFIG_SETTINGS} only; got {sorted(overrides)}")
    if overrides:
        metadata["config_overrides"] = overrides
    if variables_num_classes(variables) != num_classes:
        found = variables_num_classes(variables)
        raise CheckpointError(f"num_classes={num_classes} but the variables' classifier has {found}")
    table = key_table(ARCHS[arch], num_classes, "flax")
    arrays = _table_values(variables, table, arch)
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    meta.update(format=FORMAT, format_version=FORMAT_VERSION, arch=arch, num_classes=str(num_classes))
    write_safetensors(path, arrays, meta)


def _flax_metadata(metadata: Mapping[str, str], path: str) -> tuple[str, int, dict[str, Any]]:
    """(arch, num_classes, config overrides) recorded in our own checkpoint."""
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path}: has Flax-style keys but no hrnet_flax metadata (format/arch/num_classes)")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: hrnet_flax format version {metadata.get('format_version')!r} is not supported")
    arch = metadata.get("arch", "")
    if arch not in ARCHS:
        close = difflib.get_close_matches(arch, ARCHS, n=3)
        raise CheckpointError(f"{path}: unknown arch {arch!r} in metadata (close: {close})")
    try:
        num_classes = int(metadata["num_classes"])
    except (KeyError, ValueError):
        raise CheckpointError(f"{path}: metadata num_classes missing or not an integer") from None
    try:
        overrides = json.loads(metadata.get("config_overrides", "{}"))
    except json.JSONDecodeError:
        overrides = None
    if not isinstance(overrides, dict) or set(overrides) - set(CONFIG_SETTINGS):
        raise CheckpointError(
            f"{path}: metadata config_overrides {metadata.get('config_overrides')!r} is not a JSON object "
            f"of {CONFIG_SETTINGS}"
        )
    return arch, num_classes, overrides
