"""The HRNet family as data: one `HRNetConfig` per variant."""

from __future__ import annotations

import dataclasses

EXPANSION = {"basic": 1, "bottleneck": 4}
HEADS = ("classification", "segmentation", "pose")
UPSAMPLING = ("nearest", "bilinear")
# ImageNet-1k classes, Cityscapes classes, COCO keypoints
DEFAULT_CLASSES = {"classification": 1000, "segmentation": 19, "pose": 17}


@dataclasses.dataclass(frozen=True)
class StageConfig:
    num_modules: int
    block: str  # "basic" or "bottleneck"
    num_blocks: tuple[int, ...]
    num_channels: tuple[int, ...]  # per branch, before block expansion

    @property
    def out_channels(self) -> tuple[int, ...]:
        return tuple(c * EXPANSION[self.block] for c in self.num_channels)


@dataclasses.dataclass(frozen=True)
class HRNetConfig:
    stages: tuple[StageConfig, ...]
    head_conv_bias: bool = True  # official/timm: True; PaddleClas, SSLD ports, mmpretrain: False
    se: bool = False  # PaddleClas SE blocks (reduction 16) in every block
    stem_width: int = 64
    head_channels: tuple[int, ...] = (32, 64, 128, 256)  # incre Bottleneck planes (x4 out)
    num_features: int = 2048
    # What the network predicts: "classification" (the incre/downsamp/final head, pooled logits),
    # "segmentation" (HRNetV2: all branches resized to stride 4, concatenated, 1x1 ConvBN + 1x1 conv)
    # or "pose" (the last module fuses into the stride-4 branch only, then a 1x1 conv to heatmaps).
    head: str = "classification"
    # How a fuse layer brings a coarser branch to a finer one: "nearest" (classification, pose) or
    # "bilinear" (the segmentation code). `align_corners` is PyTorch's flag for every bilinear resize
    # (fuse layers, the HRNetV2 concatenation, and prediction's upsampling of logits).
    upsample: str = "nearest"
    align_corners: bool = False

    def __post_init__(self):
        if self.head not in HEADS:
            raise ValueError(f"unknown head {self.head!r}; use one of {HEADS}")
        if self.upsample not in UPSAMPLING:
            raise ValueError(f"unknown upsample {self.upsample!r}; use one of {UPSAMPLING}")
        if len(self.stages) != 4 or len(self.stages[0].num_channels) != 1:
            raise ValueError("HRNetConfig needs four stages, the first with one branch")
        for s, stage in enumerate(self.stages, start=1):
            if stage.block not in EXPANSION:
                raise ValueError(f"stage {s}: unknown block {stage.block!r}; use one of {sorted(EXPANSION)}")
            if len(stage.num_blocks) != len(stage.num_channels) or len(stage.num_channels) != s:
                raise ValueError(f"stage {s} must have {s} branches in num_blocks and num_channels")
        for s in range(2, 4):
            before, after = self.stages[s - 1].out_channels, self.stages[s].out_channels
            if after[: len(before)] != before:
                raise ValueError(f"stage {s + 1} changes the width of an existing branch ({before} -> {after})")


def _stage(modules: int, blocks: int, channels: tuple[int, ...], block: str = "basic") -> StageConfig:
    return StageConfig(modules, block, (blocks,) * len(channels), channels)


def wide(width: int, **kwargs) -> HRNetConfig:
    """The W18 ... W64 layout: stage modules 1/1/4/3, four blocks per branch."""
    w = width
    return HRNetConfig(
        stages=(
            _stage(1, 4, (64,), "bottleneck"),
            _stage(1, 4, (w, 2 * w)),
            _stage(4, 4, (w, 2 * w, 4 * w)),
            _stage(3, 4, (w, 2 * w, 4 * w, 8 * w)),
        ),
        **kwargs,
    )


WIDTHS = (18, 30, 32, 40, 44, 48, 64)

CLASSIFIERS: dict[str, HRNetConfig] = {
    "hrnet_w18_small": HRNetConfig(
        stages=(
            _stage(1, 1, (32,), "bottleneck"),
            _stage(1, 2, (16, 32)),
            _stage(1, 2, (16, 32, 64)),
            _stage(1, 2, (16, 32, 64, 128)),
        )
    ),
    "hrnet_w18_small_v2": HRNetConfig(
        stages=(
            _stage(1, 2, (64,), "bottleneck"),
            _stage(1, 2, (18, 36)),
            _stage(3, 2, (18, 36, 72)),
            _stage(2, 2, (18, 36, 72, 144)),
        )
    ),
    **{f"hrnet_w{w}": wide(w) for w in WIDTHS},
    **{f"hrnet_w{w}_c": wide(w, head_conv_bias=False) for w in WIDTHS},
    **{f"se_hrnet_w{w}_c": wide(w, head_conv_bias=False, se=True) for w in WIDTHS},
    "hrnet_w18_ssld": wide(18, head_conv_bias=False),
    "hrnet_w48_ssld": wide(48, head_conv_bias=False),
}

SEGMENTATION_DEFAULTS = {"head": "segmentation", "upsample": "bilinear", "align_corners": False}


def segmentation_name(backbone: str) -> str:
    """`hrnet_w48` -> `hrnetv2_w48_seg`: the HRNetV2 segmentation model on a classifier's backbone."""
    return "hrnetv2" + backbone[len("hrnet") :] + "_seg"


# One per backbone: the official and timm classifiers' (the _c/SSLD names share the same backbones).
SEGMENTERS: dict[str, HRNetConfig] = {
    segmentation_name(n): dataclasses.replace(CLASSIFIERS[n], **SEGMENTATION_DEFAULTS)
    for n in ("hrnet_w18_small", "hrnet_w18_small_v2", *(f"hrnet_w{w}" for w in WIDTHS))
}


def pose_name(backbone: str) -> str:
    """`hrnet_w32` -> `pose_hrnet_w32`: the top-down heatmap model on a classifier's backbone."""
    return "pose_" + backbone


# One per backbone, as the segmenters (the official pose code's W32/W48, mmpose's, any width).
POSE_MODELS: dict[str, HRNetConfig] = {
    pose_name(n): dataclasses.replace(CLASSIFIERS[n], head="pose")
    for n in ("hrnet_w18_small", "hrnet_w18_small_v2", *(f"hrnet_w{w}" for w in WIDTHS))
}

ARCHS: dict[str, HRNetConfig] = {**CLASSIFIERS, **SEGMENTERS, **POSE_MODELS}

# What each name is, for `info` and the README.
FAMILY = {
    **{n: "official/timm (head convs with bias)" for n in ARCHS if n.startswith("hrnet_w") and n[-2:] != "_c"},
    **{f"hrnet_w{w}_c": "PaddleClas (head convs without bias)" for w in WIDTHS},
    **{f"se_hrnet_w{w}_c": "PaddleClas with SE blocks" for w in WIDTHS},
    "hrnet_w18_ssld": "PaddleClas SSLD layout (head convs without bias)",
    "hrnet_w48_ssld": "PaddleClas SSLD layout (head convs without bias)",
    **{n: "HRNetV2 segmentation (official/mmsegmentation)" for n in SEGMENTERS},
    **{n: "top-down pose heatmaps (official/mmpose)" for n in POSE_MODELS},
}
