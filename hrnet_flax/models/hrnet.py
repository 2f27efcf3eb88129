"""HRNet as Flax Linen modules (NHWC), built from an `HRNetConfig`.

Parameter names follow one rule so converters can map them mechanically: every
convolution lives in a `ConvBN` (children `conv` and `bn`), blocks are named
`layer1_{k}`, `stage{s}_{m}/branch{b}_{k}`, fuse layers `fuse{i}_{j}` (j > i) and
`fuse{i}_{j}_{k}` (j < i, the k-th stride-2 conv of the chain), transitions
`transition{t}_{b}`, the classification head `incre{i}`, `downsamp{i}`, `final`, `classifier`,
the segmentation head `seg_head` (ConvBN, conv with bias) and `seg_classifier` (a 1x1 conv), and
the pose head `pose_head` (a 1x1 conv with bias).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax
from jax.ad_checkpoint import checkpoint_name

from hrnet_flax.models import conv as conv_lib
from hrnet_flax.models.config import EXPANSION, HRNetConfig
from hrnet_flax.models.resize import resize_bilinear

Dtype = Any
ModuleDef = Any



def scaled_normal(std: Callable[[tuple[int, ...]], float]) -> Callable:
    """An initializer `normal * std(shape)`; `std` is kept so `init_variables` can batch it."""

    def init(key, shape, dtype=jnp.float32):
        return jax.random.normal(key, shape, dtype) * jnp.asarray(std(shape), dtype)

    init.std = std
    return init


# Convs: He normal over fan_out (timm/official); dense: the variance of PyTorch's Linear default.
CONV_INIT = scaled_normal(lambda shape: math.sqrt(2.0 / (shape[0] * shape[1] * shape[3])))
DENSE_INIT = scaled_normal(lambda shape: math.sqrt(1.0 / (3.0 * shape[0])))
# The segmentation classifier: normal(0, 0.01), as mmsegmentation's `conv_seg`.
SEG_CLASSIFIER_INIT = scaled_normal(lambda shape: 0.01)
# The pose head: normal(0, 0.001), as the official `final_layer` and mmpose's HeatmapHead.
POSE_HEAD_INIT = scaled_normal(lambda shape: 0.001)
SIZE_MULTIPLE = 32
CONV_OUTPUT = "conv_output"
# What a scanned layer keeps for the backward pass (see `repeated`).
SCAN_SAVES = jax.checkpoint_policies.save_only_these_names(CONV_OUTPUT)


class ConvBN(nn.Module):
    """Conv (symmetric padding, as PyTorch/Paddle) + BatchNorm + optional ReLU."""

    features: int
    kernel: int = 3
    stride: int = 1
    act: bool = True
    conv_bias: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5
    axis_name: str | None = None
    folded: bool = False  # BatchNorm folded into the conv (see `fold_batchnorm`): inference only
    explicit_conv_grads: bool = False  # `conv.conv2d`: gradients in the forms XLA:CPU runs fast
    plain_convs: bool = False  # every conv one `lax.conv_general_dilated` (see `HRNet.plain_convs`)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        pad = (self.kernel - 1) // 2
        x = nn.Conv(
            self.features,
            (self.kernel, self.kernel),
            (self.stride, self.stride),
            padding=((pad, pad), (pad, pad)),
            use_bias=self.conv_bias or self.folded,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=CONV_INIT,
            conv_general_dilated=(
                lax.conv_general_dilated
                if self.plain_convs
                else functools.partial(conv_lib.conv_general_dilated, explicit_grads=self.explicit_conv_grads)
            ),
            name="conv",
        )(x)
        x = checkpoint_name(x, CONV_OUTPUT)  # what a `repeated` layer keeps for the backward pass
        if self.folded:
            return nn.relu(x) if self.act else x
        x = nn.BatchNorm(
            use_running_average=not train,
            momentum=self.bn_momentum,
            epsilon=self.bn_epsilon,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            axis_name=self.axis_name,
            name="bn",
        )(x)
        return nn.relu(x) if self.act else x


def global_average_pool(x: jax.Array) -> jax.Array:
    """The mean over H and W, (N, H, W, C) -> (N, C), as a matrix-vector product.

    As a reduction, XLA:CPU's YNNPACK fusion (`FAST_CPU_FLAGS`) took in the 13 convolutions of the
    head feeding it and ran them on YNNPACK's slower kernels: W18 inference 3-8% and SE-W18 11% slower.
    """
    n, h, w, c = x.shape
    ones = jnp.ones((h * w,), x.dtype)  # exact in every dtype; the division happens in float32 or wider
    accumulate = jnp.promote_types(x.dtype, jnp.float32)
    total = lax.dot_general(x.reshape(n, h * w, c), ones, (((1,), (0,)), ((), ())), preferred_element_type=accumulate)
    return (total / (h * w)).astype(x.dtype)


class SqueezeExcite(nn.Module):
    """PaddleClas SE: global pool, Dense(C/16) + ReLU, Dense(C) + sigmoid, rescale."""

    reduction: int = 16
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        channels = x.shape[-1]
        dense = functools.partial(nn.Dense, dtype=self.dtype, param_dtype=self.param_dtype, kernel_init=DENSE_INIT)
        s = jnp.mean(x, axis=(1, 2), keepdims=True)
        s = nn.relu(dense(int(channels / self.reduction), name="squeeze")(s))
        s = nn.sigmoid(dense(channels, name="excite")(s))
        return x * s


class BasicBlock(nn.Module):
    planes: int
    stride: int = 1
    se: ModuleDef | None = None  # a SqueezeExcite factory, or None
    conv_bn: ModuleDef = ConvBN

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        shortcut = x
        y = self.conv_bn(self.planes, 3, self.stride, name="conv1")(x, train)
        y = self.conv_bn(self.planes, 3, act=False, name="conv2")(y, train)
        if self.se is not None:
            y = self.se(name="se")(y)
        if self.stride != 1 or x.shape[-1] != self.planes:
            shortcut = self.conv_bn(self.planes, 1, self.stride, act=False, name="downsample")(x, train)
        return nn.relu(y + shortcut)


class Bottleneck(nn.Module):
    planes: int
    stride: int = 1
    se: ModuleDef | None = None
    conv_bn: ModuleDef = ConvBN

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        out = self.planes * EXPANSION["bottleneck"]
        shortcut = x
        y = self.conv_bn(self.planes, 1, name="conv1")(x, train)
        y = self.conv_bn(self.planes, 3, self.stride, name="conv2")(y, train)
        y = self.conv_bn(out, 1, act=False, name="conv3")(y, train)
        if self.se is not None:
            y = self.se(name="se")(y)
        if self.stride != 1 or x.shape[-1] != out:
            shortcut = self.conv_bn(out, 1, self.stride, act=False, name="downsample")(x, train)
        return nn.relu(y + shortcut)


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


def upsample_nearest(x: jax.Array, factor: int) -> jax.Array:
    """Nearest-neighbour upsampling by an integer factor (a plain repeat)."""
    n, h, w, c = x.shape
    x = jnp.broadcast_to(x[:, :, None, :, None, :], (n, h, factor, w, factor, c))
    return x.reshape(n, h * factor, w * factor, c)


def upsample_to(x: jax.Array, like: jax.Array, mode: str, align_corners: bool) -> jax.Array:
    """`x` brought to the spatial size of `like`: "nearest" by the integer factor, or "bilinear"."""
    if mode == "nearest":
        return upsample_nearest(x, like.shape[1] // x.shape[1])
    return resize_bilinear(x, like.shape[1:3], align_corners)


class Repeat(nn.Module):
    """A scan body applying `layer(name="layer")` to the carry (`train` is static)."""

    layer: ModuleDef
    train: bool

    @nn.compact
    def __call__(self, carry: Any, _: None) -> tuple[Any, None]:
        out = self.layer(name="layer")(carry, self.train)
        return (tuple(out) if isinstance(carry, tuple) else out), None


def repeated(layer: ModuleDef, count: int, train: bool, name: str) -> Callable:
    """`count` copies of `layer` applied in sequence, traced once (parameters stacked on axis 0).

    For the backward pass each copy keeps only its convolutions' outputs and recomputes its
    BatchNorms and ReLUs from them: the scan then stacks one tensor per convolution instead of
    three or four. W18 224 px batch 16 on CPU: 42% less temporary memory (3055 -> 1776 MB), loss
    and gradients 7% faster (docs/performance.md).
    """
    body = nn.remat(Repeat, policy=SCAN_SAVES, prevent_cse=False)
    scan = nn.scan(body, variable_axes={"params": 0, "batch_stats": 0}, split_rngs={"params": True}, length=count)
    module = scan(layer, train, name=name)
    return lambda x: module(x, None)[0]


class HRModule(nn.Module):
    """One high-resolution module: parallel branches, then all-to-all fusion."""

    num_blocks: tuple[int, ...]
    planes: tuple[int, ...]
    block: str
    se: ModuleDef | None = None
    conv_bn: ModuleDef = ConvBN
    scan: bool = False  # each branch's blocks as one `repeated` (stacked parameters)
    upsample: str = "nearest"  # fuse upsampling, `HRNetConfig.upsample`
    align_corners: bool = False
    # False: fuse into the first (highest-resolution) branch only and return it alone, as the last
    # module of the pose network (the official `multi_scale_output=False`).
    multi_scale_output: bool = True

    @nn.compact
    def __call__(self, xs: list[jax.Array], train: bool) -> list[jax.Array]:
        block = BLOCKS[self.block]
        ys = []
        for b, x in enumerate(xs):
            layer = functools.partial(block, self.planes[b], se=self.se, conv_bn=self.conv_bn)
            if self.scan:  # every block of a branch keeps its width (transitions set it), so all alike
                x = repeated(layer, self.num_blocks[b], train, f"branch{b}")(x)
            else:
                for k in range(self.num_blocks[b]):
                    x = layer(name=f"branch{b}_{k}")(x, train)
            ys.append(x)
        if len(ys) == 1:
            return ys
        out = []
        for i in range(len(ys) if self.multi_scale_output else 1):
            total = ys[i]
            for j in range(len(ys)):
                if j > i:
                    y = self.conv_bn(ys[i].shape[-1], 1, act=False, name=f"fuse{i}_{j}")(ys[j], train)
                    total = total + upsample_to(y, ys[i], self.upsample, self.align_corners)
                elif j < i:
                    y = ys[j]
                    for k in range(i - j):
                        last = k == i - j - 1
                        features = ys[i].shape[-1] if last else ys[j].shape[-1]
                        y = self.conv_bn(features, 3, 2, act=not last, name=f"fuse{i}_{j}_{k}")(y, train)
                    total = total + y
            out.append(nn.relu(total))
        return out


def check_image_size(shape: tuple[int, ...], multiple: int = SIZE_MULTIPLE) -> None:
    """Raise a ValueError unless `shape` is NHWC with H and W positive multiples of `multiple`."""
    if len(shape) != 4:
        raise ValueError(f"HRNet expects images of shape (N, H, W, C) (NHWC); got shape {tuple(shape)}")
    h, w = shape[1], shape[2]
    if h % multiple or w % multiple or h == 0 or w == 0:
        raise ValueError(
            f"HRNet cannot take a {h}x{w} (HxW) input: height and width must be positive multiples of "
            f"{multiple} (the four branches run at strides 4/8/16/32 and their nearest-neighbour fusions "
            f"must line up); resize or pad to e.g. {max(multiple, -(-h // multiple) * multiple)}x"
            f"{max(multiple, -(-w // multiple) * multiple)}"
        )


def size_multiple(config: HRNetConfig) -> int:
    """What input sides must be multiples of: 32 with nearest-neighbour fusion (integer factors);
    any size with bilinear fusion, which resizes to each branch's exact size as the official
    segmentation code does (a branch is ceil(side / stride) wide)."""
    return SIZE_MULTIPLE if config.upsample == "nearest" else 1


class HRNet(nn.Module):
    """HRNet classifier, HRNetV2 segmenter or top-down pose network (`config.head`); with
    `features_only` (or `return_features`) a multi-resolution backbone.

    A classifier returns logits (N, num_classes); a segmenter returns per-pixel logits
    (N, H/4, W/4, num_classes), the official forward's output (upsample them with
    `hrnet_flax.tasks.segmentation.segment`); a pose network returns heatmaps (N, H/4, W/4,
    num_classes), one channel per joint. All float32 (float64 in a float64 model).

    Feature dict keys: `stem` (stride 4, 64 ch), `branch0..3` (strides 4/8/16/32, C/2C/4C/8C; a pose
    network has `branch0` only), `hrnetv2` (all branches bilinearly resized to stride 4 and
    concatenated, 15C ch); a classifier adds `incre0..3` (128/256/512/1024 ch) and `pre_logits`
    (pooled, 2048); the outputs are under `logits` (`heatmaps` for a pose network).
    """

    config: HRNetConfig
    num_classes: int = 1000
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5
    axis_name: str | None = None
    features_only: bool = False
    fold_bn: bool = False  # inference model whose BatchNorms are folded into the convs
    remat: bool = False  # recompute each stage-1 block and HR module in the backward pass (memory)
    # Trace identical blocks and modules once (`repeated`; parameters stacked, `stack_variables`):
    # XLA compiles the W18 forward 10x faster (the CLI uses it) and, with `explicit_conv_grads`,
    # the training step 3.5x faster (46 s); without them XLA:CPU runs the scanned backward pass slowly.
    scan: bool = False
    # Convolution gradients written out (`conv.conv2d`, same values); with `scan=True` the W18
    # training step on XLA:CPU runs 23 s -> 17.6 s and compiles in 46 s. The training loop turns
    # both on with `TrainConfig.scan=True` (opt-in).
    explicit_conv_grads: bool = False
    # Every convolution one `lax.conv_general_dilated`, also those smaller than their kernel that
    # `conv.conv2d` otherwise writes as a matrix product of shifted views (fast on XLA:CPU): the
    # exports (`hrnet_flax.export`) use it, so that each convolution is one Conv op of the target.
    plain_convs: bool = False

    @nn.compact
    def __call__(self, images: jax.Array, train: bool = False, *, return_features: bool = False):
        check_image_size(images.shape, size_multiple(self.config))
        if train and self.fold_bn:
            raise ValueError("a model with fold_bn=True has no BatchNorm to train; create it without fold_bn")
        cfg = self.config
        want_features = return_features or self.features_only
        conv_bn = functools.partial(
            ConvBN,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            bn_momentum=self.bn_momentum,
            bn_epsilon=self.bn_epsilon,
            axis_name=self.axis_name,
            folded=self.fold_bn,
            explicit_conv_grads=self.explicit_conv_grads,
            plain_convs=self.plain_convs,
        )
        wrap = functools.partial(nn.remat, static_argnums=(2,)) if self.remat else (lambda cls: cls)
        block1, hr_module = wrap(BLOCKS[cfg.stages[0].block]), wrap(HRModule)
        se = functools.partial(SqueezeExcite, dtype=self.dtype, param_dtype=self.param_dtype) if cfg.se else None

        x = jnp.asarray(images, self.dtype)
        x = conv_bn(cfg.stem_width, 3, 2, name="conv1")(x, train)
        stem = conv_bn(cfg.stem_width, 3, 2, name="conv2")(x, train)

        s1 = cfg.stages[0]
        layer = functools.partial(block1, s1.num_channels[0], se=se, conv_bn=conv_bn)
        x = layer(name="layer1_0")(stem, train)  # widens the stem: unlike the blocks after it
        if self.scan and s1.num_blocks[0] > 1:
            x = repeated(layer, s1.num_blocks[0] - 1, train, "layer1")(x)
        else:
            for k in range(1, s1.num_blocks[0]):
                x = layer(name=f"layer1_{k}")(x, train)
        xs = [x]
        for s, stage in enumerate(cfg.stages[1:], start=2):
            new = []
            for b, width in enumerate(stage.out_channels):
                if b == len(xs):  # the new, lower-resolution branch comes from the last one
                    new.append(conv_bn(width, 3, 2, name=f"transition{s - 1}_{b}")(xs[-1], train))
                elif xs[b].shape[-1] != width:  # an existing branch changes width
                    new.append(conv_bn(width, 3, 1, name=f"transition{s - 1}_{b}")(xs[b], train))
                else:
                    new.append(xs[b])
            xs = new
            layer = functools.partial(
                hr_module,
                stage.num_blocks,
                stage.num_channels,
                stage.block,
                se,
                conv_bn,
                self.scan,
                cfg.upsample,
                cfg.align_corners,
            )
            single = cfg.head == "pose" and s == len(cfg.stages)  # the pose network's last module
            alike = stage.num_modules - single
            if self.scan and alike > 1:
                xs = list(repeated(layer, alike, train, f"stage{s}")(tuple(xs)))
            else:
                for m in range(alike):
                    xs = layer(name=f"stage{s}_{m}")(xs, train)
            if single:
                xs = layer(multi_scale_output=False, name=f"stage{s}_{alike}")(xs, train)

        feats = {}
        if want_features:
            feats = {"stem": stem, **{f"branch{b}": y for b, y in enumerate(xs)}}
            if len(xs) > 1:
                feats["hrnetv2"] = self._concat(xs)
        if cfg.head == "pose":
            if self.features_only:
                return feats
            out = self._pose_head(xs[0])
            return {**feats, "heatmaps": out} if return_features else out
        if cfg.head == "segmentation":
            if self.features_only:
                return feats
            out = self._segmentation_head(feats["hrnetv2"] if want_features else self._concat(xs), conv_bn, train)
            return {**feats, "logits": out} if return_features else out

        incre = [
            Bottleneck(planes, se=se, conv_bn=conv_bn, name=f"incre{i}")(y, train)
            for i, (planes, y) in enumerate(zip(cfg.head_channels, xs))
        ]
        if want_features:
            feats.update({f"incre{i}": y for i, y in enumerate(incre)})
        if self.features_only:
            return feats

        y = incre[0]
        for i in range(1, len(incre)):
            down = conv_bn(incre[i].shape[-1], 3, 2, conv_bias=cfg.head_conv_bias, name=f"downsamp{i - 1}")
            y = incre[i] + down(y, train)
        y = conv_bn(cfg.num_features, 1, conv_bias=cfg.head_conv_bias, name="final")(y, train)
        pooled = global_average_pool(y)
        out = pooled
        if self.num_classes:
            dense = nn.Dense(
                self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype, kernel_init=DENSE_INIT, name="classifier"
            )
            out = dense(pooled)
        out = jnp.asarray(out, jnp.promote_types(self.dtype, jnp.float32))
        if return_features:
            return {**feats, "pre_logits": pooled, "logits": out}
        return out

    def _concat(self, xs: list[jax.Array]) -> jax.Array:
        """HRNetV2's representation: every branch resized to the first one's size, concatenated."""
        ups = [xs[0]] + [resize_bilinear(y, xs[0].shape[1:3], self.config.align_corners) for y in xs[1:]]
        return jnp.concatenate(ups, axis=-1)

    def _output_conv(self, x: jax.Array, init: Callable, name: str) -> jax.Array:
        """A 1x1 conv with bias to `num_classes` channels, float32 (or wider) out."""
        x = nn.Conv(
            self.num_classes,
            (1, 1),
            strides=(1, 1),
            padding=((0, 0), (0, 0)),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=init,
            name=name,
        )(x)
        return jnp.asarray(x, jnp.promote_types(self.dtype, jnp.float32))

    def _pose_head(self, x: jax.Array) -> jax.Array:
        """The official `final_layer`: a 1x1 conv with bias from the stride-4 branch to the joints."""
        if not self.num_classes:
            raise ValueError("a pose model needs num_classes (the joint count) > 0 (use features_only=True for features)")
        return self._output_conv(x, POSE_HEAD_INIT, "pose_head")

    def _segmentation_head(self, x: jax.Array, conv_bn: ModuleDef, train: bool) -> jax.Array:
        """The official `last_layer`: 1x1 ConvBN (conv with bias) + ReLU, then a 1x1 conv to the classes."""
        if not self.num_classes:
            raise ValueError("a segmentation model needs num_classes > 0 (use features_only=True for features)")
        x = conv_bn(x.shape[-1], 1, conv_bias=True, name="seg_head")(x, train)
        return self._output_conv(x, SEG_CLASSIFIER_INIT, "seg_classifier")
