"""PyTorch HRNetV2 segmenters and HRNet pose networks as the reference implementations build
them, for parity tests.

`OfficialSegHRNet` follows HRNet-Semantic-Segmentation's `seg_hrnet.py` `HighResolutionNet`: stem,
`layer1`, `transition{1,2,3}`, `stage{2,3,4}` of `HighResolutionModule`s whose coarse-to-fine fuse
layers are (1x1 conv without bias, BN) followed in the forward pass by a bilinear resize to the
finer branch's exact size (`align_corners` as configured), then the head: branches 1-3 resized
bilinearly to branch 0's size, concatenated, `last_layer` = (1x1 conv with bias, BN, ReLU, 1x1 conv
with bias). Its state dict has exactly the official keys.

`MMSegHRNet` is mmsegmentation's FCN-HRNet: the same backbone under `backbone.` (fuse layers
(conv, BN, Upsample(2^k, bilinear, align_corners=False)) then a resize to the exact size), and an
FCNHead: `decode_head.convs.0` (ConvModule: conv WITHOUT bias, `bn`, ReLU) and `decode_head.conv_seg`.

`OfficialPoseHRNet` follows deep-high-resolution-net's `pose_hrnet.py` `PoseHighResolutionNet`:
the same backbone with nearest-neighbour fuse layers (conv, BN, Upsample(2^k, nearest)), the last
module of stage 4 built with `multi_scale_output=False` (fuse layers into branch 0 only), and
`final_layer`, a 1x1 conv with bias on branch 0. `MMPoseHRNet` is mmpose's TopdownPoseEstimator:
that backbone under `backbone.` and a HeatmapHead without deconvolutions (`head.final_layer`).

All are built from an `HRNetConfig`, so the small v1/v2 and the wide variants all work.
`calibrate` makes random weights behave like trained ones (see there).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from hrnet_flax.models.config import EXPANSION, HRNetConfig


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, momentum=0.1)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, planes: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, 1, 1, bias=False)
        self.bn1 = _bn(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = _bn(planes)
        self.downsample = None
        if cin != planes:
            self.downsample = nn.Sequential(nn.Conv2d(cin, planes, 1, bias=False), _bn(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    def __init__(self, cin: int, planes: int):
        super().__init__()
        out = planes * 4
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = _bn(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = _bn(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = _bn(out)
        self.downsample = None
        if cin != out:
            self.downsample = nn.Sequential(nn.Conv2d(cin, out, 1, bias=False), _bn(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


def _blocks(block: str, cin: int, planes: int, count: int) -> nn.Sequential:
    layers = [BLOCKS[block](cin, planes)]
    layers += [BLOCKS[block](planes * EXPANSION[block], planes) for _ in range(count - 1)]
    return nn.Sequential(*layers)


class HighResolutionModule(nn.Module):
    """Branches, then fusion: j > i is (1x1 conv, BN[, Upsample]) and, for the segmentation code, a
    bilinear resize in `forward`; j < i a chain of stride-2 3x3 (conv, BN[, ReLU]). `fuse`:
    "official_seg" (bilinear resize to the exact size), "mmseg" (adds mmseg's scale-factor
    bilinear Upsample before it) or "pose" (a nearest Upsample(2^k), no resize). Without
    `multi_scale_output` only branch 0 is fused and returned."""

    def __init__(self, block: str, num_blocks, planes, align_corners: bool, fuse: str, multi_scale_output: bool = True):
        super().__init__()
        widths = [p * EXPANSION[block] for p in planes]
        self.align_corners = align_corners
        self.resize = fuse != "pose"
        self.branches = nn.ModuleList(_blocks(block, w, p, n) for w, p, n in zip(widths, planes, num_blocks))
        n = len(widths)
        self.fuse_layers = None
        if n == 1:
            return
        rows = []
        for i in range(n if multi_scale_output else 1):
            row = []
            for j in range(n):
                if j > i:
                    layers = [nn.Conv2d(widths[j], widths[i], 1, bias=False), _bn(widths[i])]
                    if fuse == "mmseg":
                        layers.append(nn.Upsample(scale_factor=2 ** (j - i), mode="bilinear", align_corners=False))
                    elif fuse == "pose":
                        layers.append(nn.Upsample(scale_factor=2 ** (j - i), mode="nearest"))
                    row.append(nn.Sequential(*layers))
                elif j == i:
                    row.append(None)
                else:
                    chain = []
                    for k in range(i - j):
                        last = k == i - j - 1
                        cout = widths[i] if last else widths[j]
                        layers = [nn.Conv2d(widths[j], cout, 3, 2, 1, bias=False), _bn(cout)]
                        chain.append(nn.Sequential(*layers) if last else nn.Sequential(*layers, nn.ReLU()))
                    row.append(nn.Sequential(*chain))
            rows.append(nn.ModuleList(row))
        self.fuse_layers = nn.ModuleList(rows)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        if self.fuse_layers is None:
            return xs
        out = []
        for i, row in enumerate(self.fuse_layers):
            y = xs[i]
            for j, layer in enumerate(row):
                if j > i and not self.resize:
                    y = y + layer(xs[j])
                elif j > i:
                    size = xs[i].shape[-2:]
                    y = y + F.interpolate(layer(xs[j]), size=size, mode="bilinear", align_corners=self.align_corners)
                elif j < i:
                    y = y + layer(xs[j])
            out.append(F.relu(y))
        return out


class HRNetBackbone(nn.Module):
    """The segmentation or pose backbone (official key names): returns the branches' outputs (the
    four, or for "pose" branch 0 alone). `fuse` as in `HighResolutionModule`."""

    def __init__(self, config: HRNetConfig, align_corners: bool = False, fuse: str = "official_seg"):
        super().__init__()
        stem = config.stem_width
        self.conv1 = nn.Conv2d(3, stem, 3, 2, 1, bias=False)
        self.bn1 = _bn(stem)
        self.conv2 = nn.Conv2d(stem, stem, 3, 2, 1, bias=False)
        self.bn2 = _bn(stem)
        s1 = config.stages[0]
        self.layer1 = _blocks(s1.block, stem, s1.num_channels[0], s1.num_blocks[0])
        previous = list(s1.out_channels)
        for s, stage in enumerate(config.stages[1:], start=2):
            transition = []
            for b, width in enumerate(stage.out_channels):
                if b >= len(previous):  # a new branch: a Sequential of (stride-2 conv, BN, ReLU)
                    conv = nn.Conv2d(previous[-1], width, 3, 2, 1, bias=False)
                    transition.append(nn.Sequential(nn.Sequential(conv, _bn(width), nn.ReLU())))
                elif previous[b] != width:
                    conv = nn.Conv2d(previous[b], width, 3, 1, 1, bias=False)
                    transition.append(nn.Sequential(conv, _bn(width), nn.ReLU()))
                else:
                    transition.append(None)
            setattr(self, f"transition{s - 1}", nn.ModuleList(transition))
            last = len(config.stages)
            modules = [
                HighResolutionModule(
                    stage.block, stage.num_blocks, stage.num_channels, align_corners, fuse,
                    multi_scale_output=not (fuse == "pose" and s == last and m == stage.num_modules - 1),
                )
                for m in range(stage.num_modules)
            ]
            setattr(self, f"stage{s}", nn.Sequential(*modules))
            previous = list(stage.out_channels)
        self.num_stages = len(config.stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        xs = [self.layer1(x)]
        for s in range(2, self.num_stages + 1):
            transition = getattr(self, f"transition{s - 1}")
            xs = [
                xs[b] if layer is None else layer(xs[b] if b < len(xs) else xs[-1])
                for b, layer in enumerate(transition)
            ]
            xs = getattr(self, f"stage{s}")(xs)
        return xs


def _concat(xs: list[torch.Tensor], align_corners: bool) -> torch.Tensor:
    size = xs[0].shape[-2:]
    ups = [xs[0]] + [F.interpolate(x, size=size, mode="bilinear", align_corners=align_corners) for x in xs[1:]]
    return torch.cat(ups, 1)


class OfficialSegHRNet(HRNetBackbone):
    """HRNet-Semantic-Segmentation's `HighResolutionNet`: logits (N, K, H/4, W/4)."""

    def __init__(self, config: HRNetConfig, num_classes: int, align_corners: bool = False):
        super().__init__(config, align_corners)
        self.align_corners = align_corners
        channels = sum(config.stages[-1].out_channels)
        self.last_layer = nn.Sequential(
            nn.Conv2d(channels, channels, 1),
            _bn(channels),
            nn.ReLU(),
            nn.Conv2d(channels, num_classes, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_layer(_concat(super().forward(x), self.align_corners))


class ConvModule(nn.Module):
    """mmcv's ConvModule for conv + norm + ReLU: the conv has no bias (`bias="auto"`)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn = _bn(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class FCNHead(nn.Module):
    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.convs = nn.Sequential(ConvModule(channels, channels))
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return self.conv_seg(self.convs(_concat(xs, False)))  # resize_concat, align_corners=False


class MMSegHRNet(nn.Module):
    """mmsegmentation's EncoderDecoder(HRNet, FCNHead): logits (N, K, H/4, W/4)."""

    def __init__(self, config: HRNetConfig, num_classes: int):
        super().__init__()
        self.backbone = HRNetBackbone(config, align_corners=False, fuse="mmseg")
        self.decode_head = FCNHead(sum(config.stages[-1].out_channels), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode_head(self.backbone(x))


class OfficialPoseHRNet(HRNetBackbone):
    """deep-high-resolution-net's `PoseHighResolutionNet`: heatmaps (N, K, H/4, W/4)."""

    def __init__(self, config: HRNetConfig, num_joints: int):
        super().__init__(config, fuse="pose")
        self.final_layer = nn.Conv2d(config.stages[-1].out_channels[0], num_joints, 1, 1, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_layer(super().forward(x)[0])


class HeatmapHead(nn.Module):
    """mmpose's HeatmapHead with no deconvolution layers: `final_layer` on the first feature map."""

    def __init__(self, channels: int, num_joints: int):
        super().__init__()
        self.final_layer = nn.Conv2d(channels, num_joints, 1)

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return self.final_layer(xs[0])


class MMPoseHRNet(nn.Module):
    """mmpose's TopdownPoseEstimator(HRNet, HeatmapHead): heatmaps (N, K, H/4, W/4)."""

    def __init__(self, config: HRNetConfig, num_joints: int):
        super().__init__()
        self.backbone = HRNetBackbone(config, fuse="pose")
        self.head = HeatmapHead(config.stages[-1].out_channels[0], num_joints)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def calibrate(model: nn.Module, shape: tuple[int, ...], batches: int = 4, seed: int = 0) -> nn.Module:
    """Random weights that behave like trained ones: BatchNorm affine parameters and conv biases
    randomised moderately (as `convert_support.randomize_torch_bn`), then the BatchNorm running
    statistics set to the real statistics of the activations: a few random batches of NCHW `shape`
    in train mode with cumulative averaging (momentum None). In eval mode every BatchNorm then
    normalises its input, so the logits are well scaled and depend on the input. Returns `model`
    in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.weight.copy_(torch.rand(mod.num_features, generator=gen) + 0.5)
                mod.bias.copy_(torch.randn(mod.num_features, generator=gen) * 0.2)
            elif isinstance(mod, nn.Conv2d) and mod.bias is not None:
                mod.bias.copy_(torch.randn(mod.bias.shape, generator=gen) * 0.1)
        for mod in model.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.reset_running_stats()
                mod.momentum = None
        model.train()
        for _ in range(batches):
            model(torch.randn(shape, generator=gen))
        for mod in model.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.momentum = 0.1
    return model.eval()


def logits(model: nn.Module, images, dtype=torch.float32):
    """NHWC logits (numpy) of NHWC `images` (numpy), computed in `dtype` (on a copy of `model`
    where that is not its dtype)."""
    if next(model.parameters()).dtype != dtype:
        model = copy.deepcopy(model).to(dtype)
    with torch.no_grad():
        x = torch.from_numpy(images.transpose(0, 3, 1, 2)).to(dtype)
        return model(x).permute(0, 2, 3, 1).numpy()
