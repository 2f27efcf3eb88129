"""The HRNet family as data: one `HRNetConfig` per variant."""

from __future__ import annotations

import dataclasses

EXPANSION = {"basic": 1, "bottleneck": 4}


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

    def __post_init__(self):
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

ARCHS: dict[str, HRNetConfig] = {
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

# What each name is, for `info` and the README.
FAMILY = {
    **{n: "official/timm (head convs with bias)" for n in ARCHS if n.startswith("hrnet_w") and n[-2:] != "_c"},
    **{f"hrnet_w{w}_c": "PaddleClas (head convs without bias)" for w in WIDTHS},
    **{f"se_hrnet_w{w}_c": "PaddleClas with SE blocks" for w in WIDTHS},
    "hrnet_w18_ssld": "PaddleClas SSLD layout (head convs without bias)",
    "hrnet_w48_ssld": "PaddleClas SSLD layout (head convs without bias)",
}
