"""Key tables: every Flax variable of a variant and its name and shape in each reference layout.

`modules(config, num_classes)` enumerates the model's ConvBN and Dense modules from the
config alone, following the naming rule of `hrnet_flax.model`. `key_table(config,
num_classes, layout)` expands them into `Leaf`s: (collection, flax path, reference key,
transform, flax shape). Import and export both read this one table.

Layouts: `timm` (also the official Microsoft repo), `paddle` (PaddleClas legendary
models), `paddle2` (PaddleClas 2.0 dygraph names: `_conv`, `_batch_norm`, `la1.bb_layer2_1`,
`out`), `mmpretrain` (backbone under `backbone.`, HRFuseScales neck, `head.fc`).
"""

from __future__ import annotations

import dataclasses
import re

from hrnet_flax.config import EXPANSION, HRNetConfig

LAYOUTS = ("timm", "paddle", "paddle2", "mmpretrain")


@dataclasses.dataclass(frozen=True)
class Module:
    path: tuple[str, ...]
    kind: str  # "convbn" or "dense"
    cin: int
    cout: int
    k: int = 1
    bias: bool = False  # conv bias (convbn); dense always has one


@dataclasses.dataclass(frozen=True)
class Leaf:
    collection: str  # "params" or "batch_stats"
    path: tuple[str, ...]  # inside the collection
    key: str  # reference state-dict key
    transform: str  # "conv" (OIHW <-> HWIO), "linear_t" ([out,in] <-> [in,out]) or "none"
    shape: tuple[int, ...]  # Flax shape

    @property
    def flax_key(self) -> str:
        return "/".join((self.collection, *self.path))


# ------------------------------------------------------------------ the model's modules


def _block(prefix: tuple[str, ...], block: str, cin: int, planes: int, se: bool) -> list[Module]:
    out = planes * EXPANSION[block]
    if block == "bottleneck":
        mods = [
            Module((*prefix, "conv1"), "convbn", cin, planes, 1),
            Module((*prefix, "conv2"), "convbn", planes, planes, 3),
            Module((*prefix, "conv3"), "convbn", planes, out, 1),
        ]
    else:
        mods = [
            Module((*prefix, "conv1"), "convbn", cin, planes, 3),
            Module((*prefix, "conv2"), "convbn", planes, planes, 3),
        ]
    if se:
        mid = int(out / 16)
        mods += [
            Module((*prefix, "se", "squeeze"), "dense", out, mid),
            Module((*prefix, "se", "excite"), "dense", mid, out),
        ]
    if cin != out:
        mods.append(Module((*prefix, "downsample"), "convbn", cin, out, 1))
    return mods


def modules(config: HRNetConfig, num_classes: int) -> list[Module]:
    """All ConvBN and Dense modules of the variant, in model order."""
    c = config
    mods = [
        Module(("conv1",), "convbn", 3, c.stem_width, 3),
        Module(("conv2",), "convbn", c.stem_width, c.stem_width, 3),
    ]
    s1 = c.stages[0]
    cin = c.stem_width
    for k in range(s1.num_blocks[0]):
        mods += _block((f"layer1_{k}",), s1.block, cin, s1.num_channels[0], c.se)
        cin = s1.out_channels[0]
    xs = [cin]
    for s, stage in enumerate(c.stages[1:], start=2):
        new = []
        for b, width in enumerate(stage.out_channels):
            if b == len(xs):
                mods.append(Module((f"transition{s - 1}_{b}",), "convbn", xs[-1], width, 3))
            elif xs[b] != width:
                mods.append(Module((f"transition{s - 1}_{b}",), "convbn", xs[b], width, 3))
            new.append(width)
        xs = new
        for m in range(stage.num_modules):
            for b in range(len(xs)):
                for k in range(stage.num_blocks[b]):
                    mods += _block((f"stage{s}_{m}", f"branch{b}_{k}"), stage.block, xs[b], stage.num_channels[b], c.se)
                    xs[b] = stage.out_channels[b]
            mods += _fuse(f"stage{s}_{m}", xs)
    for i, (planes, cin) in enumerate(zip(c.head_channels, xs)):
        mods += _block((f"incre{i}",), "bottleneck", cin, planes, c.se)
    head = [p * EXPANSION["bottleneck"] for p in c.head_channels]
    for i in range(1, len(head)):
        mods.append(Module((f"downsamp{i - 1}",), "convbn", head[i - 1], head[i], 3, c.head_conv_bias))
    mods.append(Module(("final",), "convbn", head[-1], c.num_features, 1, c.head_conv_bias))
    if num_classes:
        mods.append(Module(("classifier",), "dense", c.num_features, num_classes))
    return mods


def _fuse(stage: str, chs: list[int]) -> list[Module]:
    mods = []
    if len(chs) == 1:
        return mods
    for i in range(len(chs)):
        for j in range(len(chs)):
            if j > i:
                mods.append(Module((stage, f"fuse{i}_{j}"), "convbn", chs[j], chs[i], 1))
            for k in range(i - j):
                cout = chs[i] if k == i - j - 1 else chs[j]
                mods.append(Module((stage, f"fuse{i}_{j}_{k}"), "convbn", chs[j], cout, 3))
    return mods


# ------------------------------------------------------------------ reference names


def _torch_block(prefix: str, rest: tuple[str, ...]) -> tuple[str, str]:
    name = rest[0]
    if name == "downsample":
        return f"{prefix}.downsample.0", f"{prefix}.downsample.1"
    if name == "se":
        raise LayoutError("SE blocks exist only in the PaddleClas layout (timm/official/mmpretrain have none)")
    n = name[len("conv") :]
    return f"{prefix}.conv{n}", f"{prefix}.bn{n}"


class LayoutError(ValueError):
    """A module that the requested layout cannot express."""


def _timm_names(path: tuple[str, ...], config: HRNetConfig) -> tuple[str, str]:
    """(conv or dense prefix, bn prefix) of a module in the timm/official state dict."""
    head, rest = path[0], path[1:]
    if head in ("conv1", "conv2"):
        return head, f"bn{head[-1]}"
    if m := re.fullmatch(r"layer1_(\d+)", head):
        return _torch_block(f"layer1.{m[1]}", rest)
    if m := re.fullmatch(r"transition(\d+)_(\d+)", head):
        t, b = int(m[1]), int(m[2])
        p = f"transition{t}.{b}.0" if b >= t else f"transition{t}.{b}"  # a new branch is a Sequential of convs
        return f"{p}.0", f"{p}.1"
    if m := re.fullmatch(r"stage(\d+)_(\d+)", head):
        s, mod = m[1], m[2]
        if bm := re.fullmatch(r"branch(\d+)_(\d+)", rest[0]):
            return _torch_block(f"stage{s}.{mod}.branches.{bm[1]}.{bm[2]}", rest[1:])
        fm = re.fullmatch(r"fuse(\d+)_(\d+)(?:_(\d+))?", rest[0])
        p = f"stage{s}.{mod}.fuse_layers.{fm[1]}.{fm[2]}" + (f".{fm[3]}" if fm[3] is not None else "")
        return f"{p}.0", f"{p}.1"
    if m := re.fullmatch(r"incre(\d+)", head):
        return _torch_block(f"incre_modules.{m[1]}.0", rest)
    if m := re.fullmatch(r"downsamp(\d+)", head):
        return f"downsamp_modules.{m[1]}.0", f"downsamp_modules.{m[1]}.1"
    if head == "final":
        return "final_layer.0", "final_layer.1"
    if head == "classifier":
        return "classifier", ""
    raise LayoutError(f"no timm name for {'/'.join(path)}")


def _mmpretrain_names(path: tuple[str, ...], config: HRNetConfig) -> tuple[str, str]:
    head, rest = path[0], path[1:]
    if m := re.fullmatch(r"incre(\d+)", head):
        return _torch_block(f"neck.0.increase_layers.{m[1]}.0", rest)
    if m := re.fullmatch(r"downsamp(\d+)", head):
        return f"neck.0.downsample_layers.{m[1]}.conv", f"neck.0.downsample_layers.{m[1]}.bn"
    if head == "final":
        return "neck.0.final_layer.conv", "neck.0.final_layer.bn"
    if head == "classifier":
        return "head.fc", ""
    conv, bn = _timm_names(path, config)
    return f"backbone.{conv}", f"backbone.{bn}"


def _paddle_block(prefix: str, rest: tuple[str, ...]) -> str:
    name = rest[0]
    if name == "se":
        return f"{prefix}.se.fc_{'squeeze' if rest[1] == 'squeeze' else 'excitation'}"
    return f"{prefix}.{'conv_down' if name == 'downsample' else name}"


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


def _paddle_names(path: tuple[str, ...], config: HRNetConfig) -> tuple[str, str]:
    head, rest = path[0], path[1:]
    if head in ("conv1", "conv2"):
        p = f"conv_layer1_{head[-1]}"
    elif m := re.fullmatch(r"layer1_(\d+)", head):
        p = _paddle_block(f"layer1.{m[1]}", rest)
    elif m := re.fullmatch(r"transition(\d+)_(\d+)", head):
        t, b = int(m[1]), int(m[2])
        if t == 1:
            p = f"conv_tr1_{b + 1}"
        elif b == t:
            p = f"conv_tr{t}"
        else:
            raise LayoutError(f"PaddleClas has no transition that changes the width of branch {b} ({'/'.join(path)})")
    elif m := re.fullmatch(r"stage(\d+)_(\d+)", head):
        s, mod = int(m[1]), m[2]
        base = f"st{s}.stage_func_list.{mod}"
        if bm := re.fullmatch(r"branch(\d+)_(\d+)", rest[0]):
            p = _paddle_block(f"{base}.basic_block_list.{bm[1]}.{bm[2]}", rest[1:])
        else:
            fm = re.fullmatch(r"fuse(\d+)_(\d+)(?:_(\d+))?", rest[0])
            idx = fuse_index(int(fm[1]), int(fm[2]), None if fm[3] is None else int(fm[3]), s)
            p = f"{base}.fuse_func.residual_func_list.{idx}"
    elif m := re.fullmatch(r"incre(\d+)", head):
        p = _paddle_block(f"last_cls.func_list.{m[1]}", rest)
    elif m := re.fullmatch(r"downsamp(\d+)", head):
        p = f"cls_head_conv_list.{m[1]}"
    elif head == "final":
        p = "conv_last"
    elif head == "classifier":
        return "fc", ""
    else:
        raise LayoutError(f"no PaddleClas name for {'/'.join(path)}")
    if path[-1] in ("squeeze", "excite"):
        return p, ""
    return f"{p}.conv", f"{p}.bn"


def _paddle2_block(prefix: str, rest: tuple[str, ...]) -> str:
    name = rest[0]
    if name == "se":
        return f"{prefix}.se.{'squeeze' if rest[1] == 'squeeze' else 'excitation'}"
    return f"{prefix}.{'conv_down' if name == 'downsample' else name}"


def _paddle2_names(path: tuple[str, ...], config: HRNetConfig) -> tuple[str, str]:
    """PaddleClas 2.0 (pre-legendary) dygraph names: `la1.bb_layer2_1`, `_conv`, `_batch_norm`, `out`."""
    head, rest = path[0], path[1:]
    if head in ("conv1", "conv2"):
        p = f"conv_layer1_{head[-1]}"
    elif m := re.fullmatch(r"layer1_(\d+)", head):
        p = _paddle2_block(f"la1.bb_layer2_{int(m[1]) + 1}", rest)
    elif m := re.fullmatch(r"transition(\d+)_(\d+)", head):
        p = f"tr{m[1]}.transition_tr{m[1]}_layer_{int(m[2]) + 1}"
    elif m := re.fullmatch(r"stage(\d+)_(\d+)", head):
        s, mod = m[1], int(m[2]) + 1
        base = f"st{s}.stage_st{s}_{mod}"
        if bm := re.fullmatch(r"branch(\d+)_(\d+)", rest[0]):
            b, k = int(bm[1]) + 1, int(bm[2]) + 1
            p = _paddle2_block(f"{base}.branches_func.bb_st{s}_{mod}_branch_layer_{b}_{k}", rest[1:])
        else:
            fm = re.fullmatch(r"fuse(\d+)_(\d+)(?:_(\d+))?", rest[0])
            ids = "_".join(str(int(x) + 1) for x in fm.groups() if x is not None)
            p = f"{base}.fuse_func.residual_st{s}_{mod}_layer_{ids}"
    elif m := re.fullmatch(r"incre(\d+)", head):
        p = _paddle2_block(f"last_cls.conv_cls_head_conv_{int(m[1]) + 1}", rest)
    elif m := re.fullmatch(r"downsamp(\d+)", head):
        p = f"cls_head_add{int(m[1]) + 1}"
    elif head == "final":
        p = "conv_last"
    elif head == "classifier":
        return "out", ""
    else:
        raise LayoutError(f"no PaddleClas 2.0 name for {'/'.join(path)}")
    if path[-1] in ("squeeze", "excite"):
        return p, ""
    return f"{p}._conv", f"{p}._batch_norm"


_NAMERS = {"timm": _timm_names, "paddle": _paddle_names, "paddle2": _paddle2_names, "mmpretrain": _mmpretrain_names}


def reference_names(path: tuple[str, ...], layout: str, config: HRNetConfig) -> tuple[str, str]:
    """(conv or dense prefix, BatchNorm prefix) of the module at Flax `path` in `layout`."""
    return _NAMERS[layout](path, config)
TORCH_BN = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}
PADDLE_BN = {"scale": "weight", "bias": "bias", "mean": "_mean", "var": "_variance"}


def key_table(config: HRNetConfig, num_classes: int, layout: str) -> list[Leaf]:
    """Every Flax leaf of the variant with its key in `layout` (`flax`: the '/'-joined path)."""
    if layout != "flax" and layout not in _NAMERS:
        raise ValueError(f"unknown layout {layout!r}; use one of {LAYOUTS + ('flax',)}")
    bn_names = PADDLE_BN if layout.startswith("paddle") else TORCH_BN
    leaves = []
    for mod in modules(config, num_classes):
        conv, bn = _NAMERS[layout](mod.path, config) if layout != "flax" else ("", "")
        if mod.kind == "dense":
            linear = "linear_t" if layout in ("timm", "mmpretrain") else "none"
            leaves += [
                Leaf("params", (*mod.path, "kernel"), f"{conv}.weight", linear, (mod.cin, mod.cout)),
                Leaf("params", (*mod.path, "bias"), f"{conv}.bias", "none", (mod.cout,)),
            ]
            continue
        conv_t = "conv" if layout != "flax" else "none"
        kernel = (mod.k, mod.k, mod.cin, mod.cout)
        leaves.append(Leaf("params", (*mod.path, "conv", "kernel"), f"{conv}.weight", conv_t, kernel))
        if mod.bias:
            leaves.append(Leaf("params", (*mod.path, "conv", "bias"), f"{conv}.bias", "none", (mod.cout,)))
        for ours, theirs in bn_names.items():
            collection = "params" if ours in ("scale", "bias") else "batch_stats"
            leaves.append(Leaf(collection, (*mod.path, "bn", ours), f"{bn}.{theirs}", "none", (mod.cout,)))
    if layout == "flax":
        leaves = [dataclasses.replace(leaf, key=leaf.flax_key) for leaf in leaves]
    return leaves
