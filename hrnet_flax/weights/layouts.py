"""Key tables: every Flax variable of a variant and its name and shape in each reference layout.

`modules(config, num_classes)` reads the model's ConvBN, Dense and plain Conv modules off its own
variable tree (`HRNet.init` traced for shapes only), so the network is described once, in
`hrnet_flax.models`. `key_table(config, num_classes, layout)` expands them into `Leaf`s:
(collection, flax path, reference key, transform, flax shape). Import and export both read
this one table.

Every Flax path is parsed once into a `Site` (which part of the network, its indices, the layer
inside a block); each layout is a function from a `Site` to its names. Layouts: `timm` (also the
official Microsoft repos: the classification keys, and the segmentation ones, whose backbone keys
are the same and whose head is `last_layer.{0,1,3}`), `paddle` (PaddleClas legendary models),
`paddle2` (PaddleClas 2.0 dygraph names: `_conv`, `_batch_norm`, `la1.bb_layer2_1`, `out`),
`mmpretrain` (backbone under `backbone.`, HRFuseScales neck, `head.fc`), `mmseg`
(mmsegmentation's FCN-HRNet: backbone under `backbone.`, `decode_head.convs.0` without a conv bias,
`decode_head.conv_seg`) and `mmpose` (mmpose's top-down heatmap HRNet: backbone under `backbone.`,
`head.final_layer`). The official pose code's keys are the `timm` layout's backbone and
`final_layer` (a plain conv).
"""

from __future__ import annotations

import dataclasses
import functools
import re

from hrnet_flax.models.config import HRNetConfig

LAYOUTS = ("timm", "paddle", "paddle2", "mmpretrain", "mmseg", "mmpose")
PLAIN_CONVS = ("classifier", "seg_classifier", "pose_head")  # parts without a BatchNorm


class LayoutError(ValueError):
    """A module that the requested layout cannot express."""


@dataclasses.dataclass(frozen=True)
class Module:
    path: tuple[str, ...]
    kind: str  # "convbn", "dense" or "conv" (a plain convolution, no BatchNorm: `seg_classifier`, `pose_head`)
    cin: int
    cout: int
    k: int = 1
    bias: bool = False  # conv bias (convbn, conv); dense always has one


@dataclasses.dataclass(frozen=True)
class Leaf:
    collection: str  # "params" or "batch_stats"
    path: tuple[str, ...]  # inside the collection
    key: str  # reference state-dict key ("" where the layout does not store the leaf)
    # "conv" (OIHW <-> HWIO), "linear_t" ([out,in] <-> [in,out]), "none", or "absent": a conv bias
    # the layout does not have (mmseg's `decode_head.convs.0.conv`): 0 on import; on export it is
    # folded into the running mean of the BatchNorm that follows (mean - b gives the same output).
    transform: str
    shape: tuple[int, ...]  # Flax shape

    @property
    def flax_key(self) -> str:
        return "/".join((self.collection, *self.path))


# ------------------------------------------------------------------ the model's modules


@functools.lru_cache(maxsize=64)
def modules(config: HRNetConfig, num_classes: int) -> tuple[Module, ...]:
    """All ConvBN, Dense and plain Conv modules of the variant from its variable tree, in the order
    the forward pass calls them (so errors name the earliest layer that does not fit)."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from hrnet_flax.models.hrnet import HRNet

    model = HRNet(config, num_classes=num_classes)
    image = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    called: dict[tuple[str, ...], int] = {}

    def record(next_fun, args, kwargs, context):  # the order in which the forward pass calls modules
        called.setdefault(tuple(context.module.path), len(called))
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        params = jax.eval_shape(model.init, jax.random.key(0), image)["params"]
    found: list[Module] = []

    def walk(node: dict, path: tuple[str, ...]) -> None:
        if "conv" in node and "bn" in node:
            kh, _, cin, cout = node["conv"]["kernel"].shape
            found.append(Module(path, "convbn", cin, cout, kh, "bias" in node["conv"]))
        elif "kernel" in node and len(node["kernel"].shape) == 2:
            found.append(Module(path, "dense", *node["kernel"].shape))
        elif "kernel" in node and len(node["kernel"].shape) == 4:
            kh, _, cin, cout = node["kernel"].shape
            found.append(Module(path, "conv", cin, cout, kh, "bias" in node))
        else:
            for name, child in node.items():
                walk(child, (*path, name))

    walk(params, ())
    return tuple(sorted(found, key=lambda m: called[m.path]))


# ------------------------------------------------------------------ where a module sits


@dataclasses.dataclass(frozen=True)
class Site:
    """A module's place: `part` and its indices, and `rest`, the layer inside a block.

    part / index: `stem` (n,) for conv1/conv2 (n = 1, 2); `layer1` (k,); `transition` (t, b);
    `branch` (s, m, b, k); `fuse` (s, m, i, j, k) with k = -1 for an upsampling fuse (j > i);
    `incre` (i,); `downsamp` (i,); `final` (); `classifier` (); the segmentation head's
    `seg_head` () (ConvBN, conv with bias) and `seg_classifier` () (a plain 1x1 conv); the pose
    head's `pose_head` () (a plain 1x1 conv with bias).
    """

    part: str
    index: tuple[int, ...]
    rest: tuple[str, ...] = ()


_PATTERNS = (
    ("stem", r"conv([12])"),
    ("layer1", r"layer1_(\d+)"),
    ("transition", r"transition(\d+)_(\d+)"),
    ("incre", r"incre(\d+)"),
    ("downsamp", r"downsamp(\d+)"),
    ("final", r"final"),
    ("classifier", r"classifier"),
    ("seg_head", r"seg_head"),
    ("seg_classifier", r"seg_classifier"),
    ("pose_head", r"pose_head"),
)


def site(path: tuple[str, ...]) -> Site:
    """The `Site` of the module at Flax `path` (the naming rule of `hrnet_flax.models.hrnet`)."""
    head, rest = path[0], tuple(path[1:])
    if m := re.fullmatch(r"stage(\d+)_(\d+)", head):
        s, mod = int(m[1]), int(m[2])
        if bm := re.fullmatch(r"branch(\d+)_(\d+)", rest[0]):
            return Site("branch", (s, mod, int(bm[1]), int(bm[2])), rest[1:])
        if fm := re.fullmatch(r"fuse(\d+)_(\d+)(?:_(\d+))?", rest[0]):
            return Site("fuse", (s, mod, int(fm[1]), int(fm[2]), -1 if fm[3] is None else int(fm[3])))
    for part, pattern in _PATTERNS:
        if m := re.fullmatch(pattern, head):
            return Site(part, tuple(int(g) for g in m.groups()), rest)
    raise LayoutError(f"no HRNet module at {'/'.join(path)}")


def fuse_index(i: int, j: int, k: int | None, branches: int) -> int:
    """Position of fuse conv (i, j, k) in PaddleClas's flat `residual_func_list`."""
    idx = 0
    for ii in range(branches):
        for jj in range(branches):
            for kk in [None] if jj > ii else range(ii - jj):
                if (ii, jj, kk) == (i, j, k):
                    return idx
                idx += 1
    raise LayoutError(f"no fuse layer ({i}, {j}, {k}) among {branches} branches")


# ------------------------------------------------------------------ reference names per layout

# Each layout names a part's prefix from the part's indices (`Site.index`); inside a block
# (`BLOCK_PARTS`) the layer's own name follows the prefix.
BLOCK_PARTS = ("layer1", "branch", "incre")

TIMM = {
    "stem": lambda n: f"conv{n}",
    "layer1": lambda k: f"layer1.{k}",
    # a new branch (b == t) is a Sequential of convs
    "transition": lambda t, b: f"transition{t}.{b}.0" if b >= t else f"transition{t}.{b}",
    "branch": lambda s, m, b, k: f"stage{s}.{m}.branches.{b}.{k}",
    "fuse": lambda s, m, i, j, k: f"stage{s}.{m}.fuse_layers.{i}.{j}" + (f".{k}" if k >= 0 else ""),
    "incre": lambda i: f"incre_modules.{i}.0",
    "downsamp": lambda i: f"downsamp_modules.{i}",
    "final": lambda: "final_layer",
    "classifier": lambda: "classifier",
    # the official segmentation `last_layer`: [0] conv with bias, [1] BN, [2] ReLU, [3] classifier conv
    "seg_head": lambda: "last_layer",
    "seg_classifier": lambda: "last_layer.3",
    # the official pose network's `final_layer`: one 1x1 conv with bias (the classifier's
    # `final_layer` is a ConvBN, `final_layer.0/.1`: the two never meet in one model)
    "pose_head": lambda: "final_layer",
}
BACKBONE_PARTS = ("stem", "layer1", "transition", "branch", "fuse")
_MM_BACKBONE = {part: (lambda name: lambda *ix: f"backbone.{name(*ix)}")(TIMM[part]) for part in BACKBONE_PARTS}
MMPRETRAIN = {  # the timm backbone under `backbone.`, the head in an HRFuseScales neck
    **_MM_BACKBONE,
    "incre": lambda i: f"neck.0.increase_layers.{i}.0",
    "downsamp": lambda i: f"neck.0.downsample_layers.{i}",
    "final": lambda: "neck.0.final_layer",
    "classifier": lambda: "head.fc",
}
MMSEG = {  # the timm backbone under `backbone.`, an FCNHead (one ConvModule, `conv_seg`)
    **_MM_BACKBONE,
    "seg_head": lambda: "decode_head.convs.0",
    "seg_classifier": lambda: "decode_head.conv_seg",
}
MMPOSE = {  # the timm backbone under `backbone.`, a HeatmapHead without deconvolutions
    **_MM_BACKBONE,
    "pose_head": lambda: "head.final_layer",
}
# (layout, part) pairs whose ConvBN conv has a bias in our model but none in the layout: mmcv's
# ConvModule drops the bias of a conv followed by a norm layer (`bias="auto"`).
NO_CONV_BIAS = {("mmseg", "seg_head")}


def _paddle_transition(t: int, b: int) -> str:
    if t == 1:
        return f"conv_tr1_{b + 1}"
    if b == t:
        return f"conv_tr{t}"
    raise LayoutError(f"PaddleClas has no transition that changes the width of branch {b} (transition{t}_{b})")


PADDLE = {
    "stem": lambda n: f"conv_layer1_{n}",
    "layer1": lambda k: f"layer1.{k}",
    "transition": _paddle_transition,
    "branch": lambda s, m, b, k: f"st{s}.stage_func_list.{m}.basic_block_list.{b}.{k}",
    "fuse": lambda s, m, i, j, k: f"st{s}.stage_func_list.{m}.fuse_func.residual_func_list."
    f"{fuse_index(i, j, None if k < 0 else k, s)}",
    "incre": lambda i: f"last_cls.func_list.{i}",
    "downsamp": lambda i: f"cls_head_conv_list.{i}",
    "final": lambda: "conv_last",
    "classifier": lambda: "fc",
}
PADDLE2 = {  # PaddleClas 2.0 (pre-legendary) dygraph names, numbered from 1
    "stem": lambda n: f"conv_layer1_{n}",
    "layer1": lambda k: f"la1.bb_layer2_{k + 1}",
    "transition": lambda t, b: f"tr{t}.transition_tr{t}_layer_{b + 1}",
    "branch": lambda s, m, b, k: f"st{s}.stage_st{s}_{m + 1}.branches_func.bb_st{s}_{m + 1}_branch_layer_{b + 1}_{k + 1}",
    "fuse": lambda s, m, i, j, k: f"st{s}.stage_st{s}_{m + 1}.fuse_func.residual_st{s}_{m + 1}_layer_"
    + "_".join(str(x + 1) for x in (i, j, k) if x >= 0),
    "incre": lambda i: f"last_cls.conv_cls_head_conv_{i + 1}",
    "downsamp": lambda i: f"cls_head_add{i + 1}",
    "final": lambda: "conv_last",
    "classifier": lambda: "out",
}


def _prefix(layout: str, prefixes: dict, at: Site) -> str:
    if at.part not in prefixes:
        raise LayoutError(f"the {layout} layout has no {at.part!r} module (its models have no such part)")
    return prefixes[at.part](*at.index)


def _torch_names(layout: str, prefixes: dict, conv_modules: tuple[str, ...], at: Site) -> tuple[str, str]:
    """(conv or dense prefix, bn prefix) in a PyTorch state dict (timm/official, mmpretrain, mmseg).
    A ConvBN is a Sequential (`.0`, `.1`), or in the parts `conv_modules` an mmcv ConvModule
    (`.conv`, `.bn`); the stem's are `conv{n}`/`bn{n}` side by side."""
    p = _prefix(layout, prefixes, at)
    if at.part in PLAIN_CONVS:
        return p, ""
    if at.part == "stem":
        n = at.index[0]
        return p, p[: -len(f"conv{n}")] + f"bn{n}"
    if at.part not in BLOCK_PARTS:
        return (f"{p}.conv", f"{p}.bn") if at.part in conv_modules else (f"{p}.0", f"{p}.1")
    name = at.rest[0]
    if name == "downsample":
        return f"{p}.downsample.0", f"{p}.downsample.1"
    if name == "se":
        raise LayoutError("SE blocks exist only in the PaddleClas layout (timm/official/mmpretrain have none)")
    n = name[len("conv") :]
    return f"{p}.conv{n}", f"{p}.bn{n}"


def _paddle_names(layout: str, prefixes: dict, se: tuple[str, str], conv: str, bn: str, at: Site) -> tuple[str, str]:
    """(conv or dense prefix, bn prefix) in a PaddleClas state dict."""
    p = _prefix(layout, prefixes, at)
    if at.part in BLOCK_PARTS:
        name = at.rest[0]
        if name == "se":  # a dense layer
            return f"{p}.se.{se[0] if at.rest[1] == 'squeeze' else se[1]}", ""
        p = f"{p}.{'conv_down' if name == 'downsample' else name}"
    if at.part == "classifier":
        return p, ""
    return f"{p}.{conv}", f"{p}.{bn}"


_NAMERS = {
    "timm": functools.partial(_torch_names, "timm", TIMM, ()),
    "paddle": functools.partial(_paddle_names, "paddle", PADDLE, ("fc_squeeze", "fc_excitation"), "conv", "bn"),
    "paddle2": functools.partial(_paddle_names, "paddle2", PADDLE2, ("squeeze", "excitation"), "_conv", "_batch_norm"),
    "mmpretrain": functools.partial(_torch_names, "mmpretrain", MMPRETRAIN, ("downsamp", "final")),
    "mmseg": functools.partial(_torch_names, "mmseg", MMSEG, ("seg_head",)),
    "mmpose": functools.partial(_torch_names, "mmpose", MMPOSE, ()),
}


def reference_names(path: tuple[str, ...], layout: str) -> tuple[str, str]:
    """(conv or dense prefix, BatchNorm prefix) of the module at Flax `path` in `layout`."""
    return _NAMERS[layout](site(path))


TORCH_BN = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}
PADDLE_BN = {"scale": "weight", "bias": "bias", "mean": "_mean", "var": "_variance"}


def key_table(config: HRNetConfig, num_classes: int, layout: str) -> list[Leaf]:
    """Every Flax leaf of the variant with its key in `layout` (`flax`: the '/'-joined path)."""
    if layout != "flax" and layout not in _NAMERS:
        raise ValueError(f"unknown layout {layout!r}; use one of {LAYOUTS + ('flax',)}")
    bn_names = PADDLE_BN if layout.startswith("paddle") else TORCH_BN
    leaves = []
    for mod in modules(config, num_classes):
        conv, bn = reference_names(mod.path, layout) if layout != "flax" else ("", "")
        if mod.kind == "dense":
            linear = "linear_t" if layout in ("timm", "mmpretrain") else "none"
            leaves += [
                Leaf("params", (*mod.path, "kernel"), f"{conv}.weight", linear, (mod.cin, mod.cout)),
                Leaf("params", (*mod.path, "bias"), f"{conv}.bias", "none", (mod.cout,)),
            ]
            continue
        conv_t = "conv" if layout != "flax" else "none"
        kernel = (mod.k, mod.k, mod.cin, mod.cout)
        if mod.kind == "conv":
            leaves.append(Leaf("params", (*mod.path, "kernel"), f"{conv}.weight", conv_t, kernel))
            if mod.bias:
                leaves.append(Leaf("params", (*mod.path, "bias"), f"{conv}.bias", "none", (mod.cout,)))
            continue
        leaves.append(Leaf("params", (*mod.path, "conv", "kernel"), f"{conv}.weight", conv_t, kernel))
        if mod.bias and (layout, site(mod.path).part) in NO_CONV_BIAS:
            leaves.append(Leaf("params", (*mod.path, "conv", "bias"), "", "absent", (mod.cout,)))
        elif mod.bias:
            leaves.append(Leaf("params", (*mod.path, "conv", "bias"), f"{conv}.bias", "none", (mod.cout,)))
        for ours, theirs in bn_names.items():
            collection = "params" if ours in ("scale", "bias") else "batch_stats"
            leaves.append(Leaf(collection, (*mod.path, "bn", ours), f"{bn}.{theirs}", "none", (mod.cout,)))
    if layout == "flax":
        leaves = [dataclasses.replace(leaf, key=leaf.flax_key) for leaf in leaves]
    return leaves


def bn_mean_leaf(table: list[Leaf], bias: Leaf) -> Leaf:
    """The running-mean leaf of the BatchNorm after the conv whose bias is `bias` (same ConvBN)."""
    path = (*bias.path[:-2], "bn", "mean")
    return next(leaf for leaf in table if leaf.collection == "batch_stats" and leaf.path == path)
