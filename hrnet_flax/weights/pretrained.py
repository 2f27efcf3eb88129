"""Published HRNet weights as data, and `load_pretrained` (file, URL or registered name).

Every entry records where the weights live, the accuracy their authors report (ImageNet-1k val
top-1, or a segmentation data set's val mIoU), and the evaluation preprocessing that accuracy was
measured with. Importing this module is cheap (no jax); loading imports the converters lazily.

Naming: `<arch-like name>.<tag>`, timm style. PaddleClas files are `hrnet_w*_c.paddle_in1k`
(arch `hrnet_w*_c`, head convs without bias); PaddleClas SSLD files are
`hrnet_w{18,48}_c_ssld.paddle_in1k` with arch `hrnet_w{18,48}_ssld` (the same network as
`hrnet_w*_c`; the arch name says the weights are distilled and matches timm's port, which is
registered as `hrnet_w{18,48}_ssld.paddle_in1k` with timm's own evaluation settings).
`*.ms_in1k` are the official Microsoft weights as timm republished them (safetensors).

Segmentation (HRNetV2, `hrnetv2_w*_seg`): `*.official_<dataset>` are the official
HRNet-Semantic-Segmentation (HRNet-OCR branch) release files of plain HRNetV2-W48, `*.mmseg_<dataset>`
mmsegmentation's FCN-HRNet files. Both output stride-4 logits; the official code resizes them to the
label size bilinearly with the same `align_corners` flag as its model, which the entry records.

Pose (`pose_hrnet_w*`): `*.mmpose_coco_<H>x<W>` are mmpose's top-down heatmap HRNet COCO files
(`*.mmpose_udp_coco_*` with the UDP codec; `*.mmpose0_coco_*` an mmpose 0.x file). The official
deep-high-resolution-net weights sit behind Google Drive/OneDrive folders: download one and pass
its path (`load_pretrained("pose_hrnet_w32_256x192.pth")`), bare or `module.`-prefixed keys.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from typing import Any

from hrnet_flax.data.preprocess import PRESETS, EvalSpec
from hrnet_flax.models.config import HEADS
from hrnet_flax.weights.checkpoint_io import CheckpointError

PADDLE_BASE = "https://paddle-imagenet-models-name.bj.bcebos.com/dygraph/legendary_models/"
TIMM_BASE = "https://huggingface.co/timm/{name}/resolve/main/model.safetensors"
OFFICIAL_SEG_BASE = "https://github.com/hsfzxjy/models.storage/releases/download/HRNet-OCR/"
MMSEG_BASE = "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/"
MMPOSE_BASE = "https://download.openmmlab.com/mmpose/v1/body_2d_keypoint/topdown_heatmap/coco/"
MMPOSE0_BASE = "https://download.openmmlab.com/mmpose/top_down/hrnet/"
COCO_FLIP_PAIRS = ((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class SegmentationSpec:
    """How a segmentation checkpoint was trained and evaluated, as its authors report.

    `miou` (%) was measured on the val split at `eval_scales` (image scale factors; the predictions
    resized to the label size and combined over scales) with `eval_flip` (the flipped image's
    prediction added); `miou_ms_flip`, where reported, at `ms_scales` with flip. Images are RGB,
    normalised as (x - mean) / std with x in [0, `pixel_max`] (1: scaled to [0, 1]; 255: raw).
    """

    crop_size: tuple[int, int]  # training crop (H, W)
    test_size: tuple[int, int] | None  # evaluation image size (H, W); None: each image as stored
    miou: float
    eval_scales: tuple[float, ...] = (1.0,)
    eval_flip: bool = False
    miou_ms_flip: float | None = None
    ms_scales: tuple[float, ...] | None = None
    base_size: int | None = None  # the long side images are resized to before scaling (official)
    eval_window: tuple[int, int] | None = None  # sliding-window evaluation size (H, W); None: whole image
    ignore_label: int = 255
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    pixel_max: float = 1.0

    def normalization(self, pixel_max: float = 255.0) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std) for images with values in [0, `pixel_max`]."""
        factor = pixel_max / self.pixel_max
        return tuple(m * factor for m in self.mean), tuple(s * factor for s in self.std)


@dataclasses.dataclass(frozen=True)
class PoseSpec:
    """How a top-down pose checkpoint was trained and evaluated, as its authors report.

    `ap` (%) is COCO val2017 keypoint AP with a person detector's boxes (56 AP) and flip testing
    (the flipped image's heatmaps flipped back, `shift_heatmap`: moved 1 px right, averaged).
    Crops are `input_size` (H, W); heatmaps a quarter of it, encoded by `codec` ("msra" or "udp")
    with Gaussians of `sigma` heatmap pixels. Images are RGB, normalised as (x - mean) / std with x in
    [0, `pixel_max`].
    """

    input_size: tuple[int, int]
    codec: str
    sigma: float
    ap: float
    flip_test: bool = True
    shift_heatmap: bool = True
    flip_pairs: tuple[tuple[int, int], ...] = COCO_FLIP_PAIRS
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    pixel_max: float = 1.0

    @property
    def heatmap_size(self) -> tuple[int, int]:
        return (self.input_size[0] // 4, self.input_size[1] // 4)

    def normalization(self, pixel_max: float = 255.0) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std) for images with values in [0, `pixel_max`]."""
        factor = pixel_max / self.pixel_max
        return tuple(m * factor for m in self.mean), tuple(s * factor for s in self.std)


@dataclasses.dataclass(frozen=True)
class PretrainedWeight:
    """One published checkpoint.

    Classification (`task`): `top1`/`top5` are the reported ImageNet-1k val accuracies (%) under
    `eval`; `test_eval`/`test_top1` is a second reported setting (timm SSLD at 288).
    Segmentation: `segmentation` holds the reported mIoU and the training/evaluation settings,
    `model_kwargs` the `create_model` settings the weights need (e.g. `align_corners`). Pose:
    `pose` holds the reported AP, the crop size, the heatmap codec and the flip test;
    `num_classes` is the joint count.
    """

    name: str
    arch: str
    url: str
    top1: float | None
    top5: float | None
    eval: EvalSpec | None
    layout: str  # "paddle", "timm" (timm/official state dict), "mmseg" or "mmpose"
    source: str  # who published it
    test_eval: EvalSpec | None = None
    test_top1: float | None = None
    task: str = "classification"
    dataset: str = "imagenet-1k"
    num_classes: int = 1000
    segmentation: SegmentationSpec | None = None
    pose: PoseSpec | None = None
    model_kwargs: tuple[tuple[str, Any], ...] = ()  # (field, value) pairs; see `overrides`

    @property
    def overrides(self) -> dict[str, Any]:
        """The `create_model` settings the weights were trained with (`model_kwargs` as a dict)."""
        return dict(self.model_kwargs)

    @property
    def filename(self) -> str:
        """File name in the download cache (unique per registered name)."""
        ext = self.url.rsplit(".", 1)[-1]
        return f"{self.name}.{ext}"


_PADDLE_TOP = {  # width: (top1, top5) from PaddleClas
    18: (76.92, 93.39),
    30: (78.04, 94.02),
    32: (78.28, 94.24),
    40: (78.77, 94.47),
    44: (79.00, 94.51),
    48: (78.95, 94.42),
    64: (79.30, 94.61),
}
_MS_TOP1 = {  # timm's measurement of the official Microsoft weights
    "hrnet_w18_small": 72.34,
    "hrnet_w18_small_v2": 75.09,
    "hrnet_w18": 76.77,
    "hrnet_w30": 78.20,
    "hrnet_w32": 78.45,
    "hrnet_w40": 78.93,
    "hrnet_w44": 78.89,
    "hrnet_w48": 79.33,
    "hrnet_w64": 79.46,
}


def _paddle(name: str, arch: str, file: str, top1: float, top5: float) -> PretrainedWeight:
    return PretrainedWeight(name, arch, PADDLE_BASE + file, top1, top5, PRESETS["paddle"], "paddle", "PaddleClas")


def _timm(name: str, top1: float, source: str, **kwargs: Any) -> PretrainedWeight:
    eval_kwargs = {k: kwargs.pop(k) for k in ("crop_pct", "interpolation") if k in kwargs}
    ev = dataclasses.replace(PRESETS["timm"], **eval_kwargs)
    arch = name.split(".", 1)[0]
    return PretrainedWeight(name, arch, TIMM_BASE.format(name=name), top1, None, ev, "timm", source, **kwargs)


_MS_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)  # Cityscapes multi-scale testing (official, mmseg)
_MS_SCALES_2 = (*_MS_SCALES, 2.0)  # the other data sets (official)


def _official_seg(dataset: str, file: str, num_classes: int, align_corners: bool, **spec: Any) -> PretrainedWeight:
    """An official HRNet-Semantic-Segmentation HRNetV2-W48 release file (`model.`-prefixed keys)."""
    return PretrainedWeight(
        f"hrnetv2_w48_seg.official_{dataset.replace('-', '_')}",
        "hrnetv2_w48_seg",
        OFFICIAL_SEG_BASE + file,
        None,
        None,
        None,
        "timm",
        "HRNet-Semantic-Segmentation (official, HRNet-OCR branch)",
        task="segmentation",
        dataset=dataset,
        num_classes=num_classes,
        segmentation=SegmentationSpec(**spec),
        model_kwargs=(("align_corners", align_corners),),
    )


def _mmseg(arch: str, config: str, file: str, miou: float, miou_ms_flip: float) -> PretrainedWeight:
    """An mmsegmentation FCN-HRNet Cityscapes file (512x1024 crops, 80k iterations)."""
    return PretrainedWeight(
        f"{arch}.mmseg_cityscapes",
        arch,
        f"{MMSEG_BASE}{config}/{file}",
        None,
        None,
        None,
        "mmseg",
        "mmsegmentation",
        task="segmentation",
        dataset="cityscapes",
        num_classes=19,
        segmentation=SegmentationSpec(
            crop_size=(512, 1024),
            test_size=(1024, 2048),
            miou=miou,
            miou_ms_flip=miou_ms_flip,
            ms_scales=_MS_SCALES,
            mean=(123.675, 116.28, 103.53),
            std=(58.395, 57.12, 57.375),
            pixel_max=255.0,
        ),
        model_kwargs=(("align_corners", False),),
    )


def _segmentation() -> list[PretrainedWeight]:
    return [
        _official_seg("cityscapes", "hrnet_cs_8090_torch11.pth", 19, False,
                      crop_size=(512, 1024), test_size=(1024, 2048), miou=80.9),
        _official_seg("lip", "hrnet_lip_5583_torch04.pth", 20, False,
                      crop_size=(473, 473), test_size=(473, 473), miou=55.83, eval_flip=True),
        _official_seg("pascal-context", "hrnet_pascal_ctx_5410_torch11.pth", 59, False,
                      crop_size=(520, 520), test_size=None, base_size=520, eval_window=(520, 520),
                      miou=54.1, eval_scales=_MS_SCALES_2, eval_flip=True, ignore_label=-1),
        _official_seg("coco-stuff", "hrnet_cocostuff_3617_torch04.pth", 171, True,
                      crop_size=(520, 520), test_size=None, base_size=520, eval_window=(520, 520),
                      miou=36.17, miou_ms_flip=37.9, ms_scales=_MS_SCALES_2),
        _official_seg("ade20k", "hrnet_ade20k_4312_torch04.pth", 150, True,
                      crop_size=(520, 520), test_size=None, base_size=520, eval_window=(520, 520),
                      miou=43.12, miou_ms_flip=44.2, ms_scales=_MS_SCALES_2),
        _mmseg("hrnetv2_w48_seg", "fcn_hr48_512x1024_80k_cityscapes",
               "fcn_hr48_512x1024_80k_cityscapes_20200601_202606-58ea95d6.pth", 79.93, 80.72),
        _mmseg("hrnetv2_w18_seg", "fcn_hr18_512x1024_80k_cityscapes",
               "fcn_hr18_512x1024_80k_cityscapes_20200601_223255-4e7b345e.pth", 78.65, 80.35),
        # mmseg's "HRNetV2p-W18-Small" (fcn_hr18s) is the official W18-Small-v2 structure
        _mmseg("hrnetv2_w18_small_v2_seg", "fcn_hr18s_512x1024_80k_cityscapes",
               "fcn_hr18s_512x1024_80k_cityscapes_20200601_202700-1462b75d.pth", 75.31, 77.48),
    ]


def _mmpose(arch: str, tag: str, url: str, layout_note: str, **spec: Any) -> PretrainedWeight:
    """An mmpose top-down heatmap HRNet COCO file (`backbone.` + `head.final_layer`, or 0.x's
    `keypoint_head.final_layer`), with mmpose's input normalisation of 0-255 RGB."""
    return PretrainedWeight(
        f"{arch}.{tag}",
        arch,
        url,
        None,
        None,
        None,
        "mmpose",
        layout_note,
        task="pose",
        dataset="coco",
        num_classes=17,
        pose=PoseSpec(mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375), pixel_max=255.0, **spec),
    )


def _pose() -> list[PretrainedWeight]:
    v1 = "mmpose"
    return [
        _mmpose("pose_hrnet_w32", "mmpose_coco_256x192",
                MMPOSE_BASE + "td-hm_hrnet-w32_8xb64-210e_coco-256x192-81c58e40_20220909.pth", v1,
                input_size=(256, 192), codec="msra", sigma=2.0, ap=74.9),
        _mmpose("pose_hrnet_w48", "mmpose_coco_256x192",
                MMPOSE_BASE + "td-hm_hrnet-w48_8xb32-210e_coco-256x192-0e67c616_20220913.pth", v1,
                input_size=(256, 192), codec="msra", sigma=2.0, ap=75.6),
        _mmpose("pose_hrnet_w48", "mmpose_coco_384x288",
                MMPOSE_BASE + "td-hm_hrnet-w48_8xb32-210e_coco-384x288-c161b7de_20220915.pth", v1,
                input_size=(384, 288), codec="msra", sigma=3.0, ap=76.7),
        _mmpose("pose_hrnet_w32", "mmpose_udp_coco_256x192",
                MMPOSE_BASE + "td-hm_hrnet-w32_udp-8xb64-210e_coco-256x192-73ede547_20220914.pth", v1,
                input_size=(256, 192), codec="udp", sigma=2.0, ap=76.2, shift_heatmap=False),
        _mmpose("pose_hrnet_w32", "mmpose0_coco_256x192",
                MMPOSE0_BASE + "hrnet_w32_coco_256x192-c78dce93_20200708.pth", "mmpose 0.x",
                input_size=(256, 192), codec="msra", sigma=2.0, ap=74.6),
    ]


def _build() -> dict[str, PretrainedWeight]:
    weights = [
        *(
            _paddle(f"hrnet_w{w}_c.paddle_in1k", f"hrnet_w{w}_c", f"HRNet_W{w}_C_pretrained.pdparams", *top)
            for w, top in _PADDLE_TOP.items()
        ),
        _paddle("hrnet_w18_c_ssld.paddle_in1k", "hrnet_w18_ssld", "HRNet_W18_C_ssld_pretrained.pdparams", 81.16, 95.80),
        _paddle("hrnet_w48_c_ssld.paddle_in1k", "hrnet_w48_ssld", "HRNet_W48_C_ssld_pretrained.pdparams", 83.63, 96.82),
        _paddle(
            "se_hrnet_w64_c_ssld.paddle_in1k", "se_hrnet_w64_c", "SE_HRNet_W64_C_ssld_pretrained.pdparams", 84.75, 97.26
        ),
        *(_timm(f"{arch}.ms_in1k", top1, "Microsoft (official), via timm") for arch, top1 in _MS_TOP1.items()),
        _timm("hrnet_w18.ms_aug_in1k", 78.11, "Microsoft (official, augmented), via timm", crop_pct=0.95),
        _timm("hrnet_w18_small.gluon_in1k", 73.93, "GluonCV, via timm", interpolation="bicubic"),
        _timm("hrnet_w18_small_v2.gluon_in1k", 78.20, "GluonCV, via timm", interpolation="bicubic"),
        *(
            _timm(
                f"hrnet_w{w}_ssld.paddle_in1k",
                top1,
                "PaddleClas SSLD, via timm",
                crop_pct=0.95,
                test_eval=EvalSpec(size=288, crop_pct=1.0),
                test_top1=test_top1,
            )
            for w, top1, test_top1 in ((18, 81.11, 82.05), (48, 83.66, 84.48))
        ),
        *_segmentation(),
        *_pose(),
    ]
    return {w.name: w for w in weights}


PRETRAINED: dict[str, PretrainedWeight] = _build()


def list_pretrained(pattern: str = "*", task: str | None = "classification") -> list[str]:
    """Registered weight names, optionally filtered by an fnmatch pattern, of one `task`
    ("classification", the default, "segmentation" or "pose"; None: all)."""
    import fnmatch

    if task is not None and task not in HEADS:
        raise ValueError(f"unknown task {task!r}; use one of {HEADS} or None (all)")
    return sorted(
        n for n, w in PRETRAINED.items() if fnmatch.fnmatch(n, pattern.lower()) and task in (None, w.task)
    )


def get_pretrained(name: str) -> PretrainedWeight:
    """The registry entry for `name`; an unknown name raises `CheckpointError` listing close ones.

    A bare arch name (e.g. `hrnet_w18`) picks its first registered weight.
    """
    key = name.strip().lower()
    if key in PRETRAINED:
        return PRETRAINED[key]
    prefixed = [n for n in sorted(PRETRAINED) if n.split(".", 1)[0] == key]
    if prefixed:
        return PRETRAINED[prefixed[0]]
    close = difflib.get_close_matches(key, PRETRAINED, n=6, cutoff=0.5)
    hint = f"; close names: {', '.join(close)}" if close else ""
    raise CheckpointError(
        f"unknown pretrained weight {name!r}{hint} (all: {', '.join(list_pretrained(task=None))})"
    )


def load_pretrained(
    source: str,
    *,
    arch: str | None = None,
    num_classes: int | None = None,
    task: str | None = None,
    **model_kwargs: Any,
):
    """Load weights into a Flax HRNet: returns `(model, variables)`.

    `source` is a local file (PaddleClas `.pdparams`, current or 2.0 names; timm/official,
    mmpretrain, official segmentation or mmsegmentation `.safetensors`/`.pth`/`.pt`/`.bin`; our
    own `save_checkpoint` file), an http(s) URL (downloaded into `download.cache_dir()`), or a
    registered name (see `list_pretrained`; a bare arch such as `hrnet_w18` takes its first
    registered weight). Format and arch are detected from the keys and shapes; a given `arch`
    must match.

    With `num_classes` different from the checkpoint's, the classifier is re-initialised
    (a warning names both counts); `num_classes=0` drops a classifier's. `task="segmentation"`
    (or a segmentation `arch`, e.g. `hrnetv2_w48_seg`) with a classification checkpoint gives
    the HRNetV2 segmenter on its backbone with a new head for `num_classes` classes (required);
    `task="pose"` (or a pose `arch`, e.g. `pose_hrnet_w32`) the pose network with a new head for
    `num_classes` joints.
    `model_kwargs` go to `create_model` (e.g. `dtype`, `axis_name`, or a config field such as
    `align_corners=True`); a registered segmentation weight's own settings apply unless given.
    """
    from hrnet_flax.weights.convert import load_checkpoint_file
    from hrnet_flax.weights.download import download

    path, weight = source, None
    if isinstance(source, str) and source.startswith(("http://", "https://")):
        path = download(source)
    elif isinstance(source, str) and not _looks_like_path(source):
        weight = get_pretrained(source)
        path = download(weight.url, filename=weight.filename)
        model_kwargs = {**weight.overrides, **model_kwargs}
    model, variables = load_checkpoint_file(
        path,
        arch=arch or (weight.arch if weight and task in (None, weight.task) else None),
        num_classes=num_classes,
        model_kwargs=model_kwargs,
        task=task,
    )
    if weight is not None and num_classes is None and model.num_classes != weight.num_classes:
        raise CheckpointError(
            f"{path}: the file has {model.num_classes} classes, but {weight.name} is registered with "
            f"{weight.num_classes} ({weight.dataset})"
        )
    return model, variables


def _looks_like_path(source: str) -> bool:
    return os.path.exists(source) or os.sep in source or source.endswith(
        (".pdparams", ".safetensors", ".pth", ".pt", ".bin", ".msgpack")
    )


def default_spec(source: str) -> Any:
    """The evaluation preprocessing of a weight source: a registered weight's own; for a file or
    URL the `paddle` preset for `.pdparams`, else `timm`."""
    if os.path.exists(source) or "://" in source:
        return "paddle" if source.endswith(".pdparams") else "timm"
    try:
        return get_pretrained(source)
    except CheckpointError:  # not a registered name: the loader will say so
        return "timm"


def convert(
    src: str, dst: str | os.PathLike, *, arch: str | None = None, num_classes: int | None = None, to: str = "flax"
) -> str:
    """Load `src` (file, URL or registered name) and write it to `dst` as `to` (flax, or timm: the
    timm/official state dict, for a segmenter the official segmentation keys); returns the arch
    written. Our format records settings such as `align_corners`; a state dict cannot."""
    from hrnet_flax.models.config import ARCHS
    from hrnet_flax.models.registry import canonical_name
    from hrnet_flax.weights.convert import CONFIG_SETTINGS, export_timm, save_checkpoint, split_config

    if to not in ("flax", "timm"):
        raise ValueError(f"unknown output format {to!r}; use flax or timm")
    model, variables = load_pretrained(src, arch=arch, num_classes=num_classes)
    if arch is not None:
        name = canonical_name(arch)
    elif str(src).lower() in PRETRAINED:
        name = get_pretrained(str(src)).arch
    else:
        name = split_config(model.config)[0]
    config, base = model.config, ARCHS[name]
    overrides = {k: getattr(config, k) for k in CONFIG_SETTINGS if getattr(config, k) != getattr(base, k)}
    if to == "timm":
        export_timm(dst, variables, arch=name)
    else:
        save_checkpoint(
            dst, variables, arch=name, num_classes=model.num_classes, config_overrides=overrides, source=str(src)
        )
    return name
