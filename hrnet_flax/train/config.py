"""The training configuration: one dataclass, plus `key=value` overrides from the command line."""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import pathlib
import types
import typing
from typing import Any


@dataclasses.dataclass
class TrainConfig:
    """Everything a training run needs; `experiments/configs/*.py` return one from `get_config()`."""

    # Task: what is learned and measured (`hrnet_flax.tasks`: loss, evaluation sums, data).
    task: str = "classification"
    # Model: any `create_model` name; `model_overrides` go to `create_model` (e.g. narrower stages).
    model: str = "hrnet_w18_c"
    num_classes: int = 1000
    model_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    dtype: str = "bfloat16"  # compute dtype; parameters and BatchNorm statistics stay float32
    pretrained: str | None = None  # a `load_pretrained` name or file to start from (fine-tuning)
    # Trace each run of identical layers once (`HRNet(scan=True)`; on CPUs with `explicit_conv_grads`):
    # the W18 step compiles 3.5x faster and runs 2.8x faster on one CPU device. Checkpoints keep the
    # canonical layout. None: scanned on a one-device CPU mesh, plain elsewhere (on an H200 the
    # plain bf16 W18 step runs 1.17x the scanned one, compiling in about 100 s against 31 s; on
    # several CPU devices XLA:CPU mis-runs a scanned step loaded from the persistent compilation
    # cache, see `runtime.speed_options`).
    scan: bool | None = None

    # Data: "digits" (the embedded demo) or a path `hrnet_flax.data.pipeline` reads: a tfds data_dir
    # holding imagenet2012 (prepared from the tars in `manual_dir` if needed) or an image folder.
    dataset: str = ""
    manual_dir: str | None = None
    train_examples: int | None = None  # defines an epoch; None: counted from the dataset
    eval_preset: str = "paddle"  # `hrnet_flax.data.pipeline.eval_dataset` preset: resize 256, center crop 224
    image_size: int = 224
    eval_image_size: int = 224
    global_batch_size: int = 256  # over all devices of all processes
    eval_batch_size: int = 256  # global

    # Optimizer: SGD with momentum, or Adam; lr = base_lr * global_batch_size / base_batch_size.
    optimizer: str = "sgd"  # "sgd" or "adam" (betas 0.9/0.999, eps 1e-8, as PyTorch's)
    base_lr: float = 0.1
    base_batch_size: int = 256
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    weight_decay_mode: str = "l2"  # "l2": coupled, added to the gradient; "decoupled": p -= lr*wd*p
    weight_decay_on: str = "all"  # "all" parameters (PaddleClas) or "kernels" (conv/dense kernels only)
    label_smoothing: float = 0.0
    ema_decay: float | None = None  # e.g. 0.9998: keep an EMA of params and BatchNorm statistics

    # Schedule, in epochs (converted to steps with train_examples / global_batch_size).
    epochs: float = 120
    schedule: str = "piecewise"  # "piecewise", "cosine", "poly" or "constant"
    decay_epochs: tuple[float, ...] = (30, 60, 90)  # piecewise: multiply by decay_factor at each
    decay_factor: float = 0.1
    poly_power: float = 0.9  # poly: lr = (peak - min_lr) * (1 - t/T) ** poly_power + min_lr
    min_lr: float = 0.0
    warmup_epochs: float = 0.0  # linear warmup from 0 to the peak lr
    total_steps: int | None = None  # overrides epochs when set (tests, smoke runs)

    # Segmentation (task="segmentation") and pose (task="pose"); `image_size`/`eval_image_size` are
    # unused there.
    crop_size: tuple[int, ...] = (512, 1024)  # training crop (H, W); pose: the person crop, train and eval
    base_size: int | None = None  # long side of an image before random scaling; None: as stored
    scale_range: tuple[float, ...] = (0.5, 2.0)  # random scale (min, max)
    ignore_label: int = 255  # label pixels that count for nothing (also the crop padding)
    class_weights: tuple[float, ...] | None = None  # per-class cross-entropy weights
    ohem: bool = False  # online hard example mining (the official thresholds below)
    ohem_threshold: float = 0.9
    ohem_keep: int = 131072  # at least this many pixels per device batch are kept
    eval_scales: tuple[float, ...] = (1.0,)  # multi-scale testing (probabilities summed)
    eval_flip: bool = False  # add the horizontally flipped prediction (pose: the flip test)
    eval_window: tuple[int, ...] | None = None  # sliding-window size (H, W); None: whole image
    eval_stride: tuple[int, ...] | None = None  # sliding-window stride; None: 2/3 of the window

    # Pose (task="pose"): the official top-down recipe's targets and augmentation.
    pose_codec: str = "msra"  # heatmap encoding/decoding: "msra" (official) or "udp"
    pose_sigma: float = 2.0  # Gaussian sigma in heatmap pixels (official: 2 at 256x192, 3 at 384x288)
    pose_scale_factor: float = 0.35  # box scale x clip(N(0,1) * f + 1, 1 - f, 1 + f)
    pose_rotation_factor: float = 45.0  # rotation clip(N(0,1) * f, -2f, 2f) degrees ...
    pose_rotation_prob: float = 0.6  # ... with this probability
    pose_flip: bool = True  # random horizontal flips (joint pairs swapped)
    pose_half_body_prob: float = 0.3  # upper or lower body crops
    pose_shift_heatmap: bool = True  # flip test: flipped-back heatmaps moved 1 px right (MSRA, not UDP)
    pose_detections: str | None = None  # COCO val boxes from a detection results JSON; None: ground truth
    pck_threshold: float = 0.1  # PCK distance, a fraction of the box's longer side

    # Bookkeeping.
    seed: int = 0
    log_every_steps: int = 100
    eval_every_steps: int | None = None  # None: once per epoch
    checkpoint_every_steps: int = 1000
    keep_checkpoints: int = 3
    progress_bar: bool = True

    def steps_per_epoch(self) -> int:
        if self.train_examples is None:
            raise ValueError("config.train_examples is None: count it from the dataset first (the task's `resolve`)")
        return max(1, self.train_examples // self.global_batch_size)

    def num_steps(self) -> int:
        return self.total_steps if self.total_steps is not None else int(round(self.epochs * self.steps_per_epoch()))

    def peak_lr(self) -> float:
        return self.base_lr * self.global_batch_size / self.base_batch_size

    def validate(self) -> None:
        choices = {
            "dtype": ("float32", "bfloat16"),
            "optimizer": ("sgd", "adam"),
            "weight_decay_mode": ("l2", "decoupled"),
            "weight_decay_on": ("all", "kernels"),
            "schedule": ("piecewise", "cosine", "poly", "constant"),
        }
        from hrnet_flax.tasks import TASKS

        choices["task"] = tuple(TASKS)
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ValueError(f"config.{key}={getattr(self, key)!r}: must be one of {allowed}")
        if not self.dataset:
            raise ValueError(
                "config.dataset is empty: pass --config.dataset=PATH (a tfds data_dir with imagenet2012, "
                "or an image folder <class>/<image>), or 'digits' for the embedded demo"
            )
        if self.num_classes <= 0:
            raise ValueError(f"config.num_classes={self.num_classes}: set it to the number of classes of the dataset")
        if self.global_batch_size <= 0 or self.eval_batch_size <= 0:
            raise ValueError("config.global_batch_size and config.eval_batch_size must be positive")
        if self.image_size % 32 or self.eval_image_size % 32:
            raise ValueError(f"config.image_size/eval_image_size must be multiples of 32 (got {self.image_size}, {self.eval_image_size})")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"config.ema_decay={self.ema_decay} must be in (0, 1) or None")
        layout = {"scan", "explicit_conv_grads"} & set(self.model_overrides)
        if layout:
            raise ValueError(f"config.model_overrides sets {sorted(layout)}: use config.scan (the train state stays canonical)")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"config.label_smoothing={self.label_smoothing} must be in [0, 1)")
        if self.task == "segmentation":
            self._validate_segmentation()
        if self.task == "pose":
            self._validate_pose()

    def _validate_segmentation(self) -> None:
        for key in ("crop_size", "eval_window", "eval_stride"):
            size = getattr(self, key)
            if size is not None and (len(size) != 2 or min(size) <= 0):
                raise ValueError(f"config.{key}={size}: must be (H, W), both positive")
        for key in ("crop_size", "eval_window"):
            size = getattr(self, key)
            if size is not None and (size[0] % 32 or size[1] % 32):
                raise ValueError(f"config.{key}={size}: H and W must be multiples of 32")
        low, high = (self.scale_range + (None, None))[:2]
        if len(self.scale_range) != 2 or not 0 < low <= high:
            raise ValueError(f"config.scale_range={self.scale_range}: must be (min, max) with 0 < min <= max")
        if not self.eval_scales or min(self.eval_scales) <= 0:
            raise ValueError(f"config.eval_scales={self.eval_scales}: must be positive scales")
        if self.class_weights is not None and len(self.class_weights) != self.num_classes:
            raise ValueError(
                f"config.class_weights has {len(self.class_weights)} weights for {self.num_classes} classes"
            )
        if self.ignore_label < self.num_classes and self.ignore_label >= 0:
            raise ValueError(f"config.ignore_label={self.ignore_label} is a class index ({self.num_classes} classes)")


    def _validate_pose(self) -> None:
        size = self.crop_size
        if len(size) != 2 or min(size) <= 0 or size[0] % 32 or size[1] % 32:
            raise ValueError(f"config.crop_size={size}: must be the pose crop (H, W), both positive multiples of 32")
        if self.pose_codec not in ("msra", "udp"):
            raise ValueError(f"config.pose_codec={self.pose_codec!r}: must be 'msra' or 'udp'")
        if self.pose_sigma <= 0:
            raise ValueError(f"config.pose_sigma={self.pose_sigma} must be positive")
        for key in ("pose_rotation_prob", "pose_half_body_prob"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ValueError(f"config.{key}={getattr(self, key)} must be a probability in [0, 1]")
        if not 0.0 <= self.pose_scale_factor < 1.0 or self.pose_rotation_factor < 0:
            raise ValueError(
                f"config.pose_scale_factor={self.pose_scale_factor} must be in [0, 1) and "
                f"pose_rotation_factor={self.pose_rotation_factor} non-negative"
            )


def _parse_value(text: str, annotation: Any, key: str) -> Any:
    """`text` as a Python literal when it is one (numbers, tuples, None, dicts), else as a string,
    checked against the field's type annotation."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = text
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    allowed = typing.get_args(annotation) if union else (annotation,)
    allowed = tuple(typing.get_origin(t) or t for t in allowed)
    if bool in allowed and isinstance(value, str) and value.lower() in ("true", "false"):
        value = value.lower() == "true"
    if float in allowed and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if tuple in allowed and isinstance(value, (list, int, float)):
        value = tuple(value) if isinstance(value, list) else (value,)
    if value is None and type(None) in allowed:
        return None
    if isinstance(value, (int, float)) and str in allowed and not isinstance(value, bool) and float not in allowed:
        value = text  # a path or name that happens to look like a number
    if annotation is Any or isinstance(value, allowed):
        if not (isinstance(value, bool) and bool not in allowed and annotation is not Any):
            return value
    names = ", ".join(getattr(t, "__name__", str(t)) for t in allowed)
    raise ValueError(f"config.{key}: cannot use {text!r} for a value of type {names}")


def apply_overrides(config: TrainConfig, overrides: list[str]) -> TrainConfig:
    """A copy of `config` with `key=value` overrides (`lr`-style keys; `model_overrides.k=v` nests)."""
    config = dataclasses.replace(config, model_overrides=dict(config.model_overrides))
    hints = typing.get_type_hints(TrainConfig)
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip().removeprefix("--").removeprefix("config.")
        if not sep:
            raise ValueError(f"config override {item!r} must look like key=value")
        if key.startswith("model_overrides."):
            sub = key.split(".", 1)[1]
            config.model_overrides[sub] = _parse_value(text, Any, key)
            continue
        if key not in hints:
            raise ValueError(f"config override {item!r}: unknown key {key!r}; valid keys: {', '.join(sorted(hints))}")
        setattr(config, key, _parse_value(text, hints[key], key))
    config.validate()
    return config


def load_config(spec: str | pathlib.Path, overrides: list[str] | None = None) -> TrainConfig:
    """Run `get_config()` of a config file and apply `overrides`.

    `spec` is `path.py` or `path.py:ARG` (then `get_config(ARG)`, e.g. the variant name).
    """
    text = str(spec)
    path_text, _, arg = text.partition(":") if text.count(":") == 1 and not pathlib.Path(text).exists() else (text, "", "")
    path = pathlib.Path(path_text)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    module_spec = importlib.util.spec_from_file_location(f"hrnet_flax_config_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"config file {path} has no get_config() function")
    config = module.get_config(arg) if arg else module.get_config()
    if not isinstance(config, TrainConfig):
        raise ValueError(f"{path}: get_config() must return a TrainConfig, got {type(config).__name__}")
    return apply_overrides(config, overrides or [])


def demo_config(task: str = "classification") -> TrainConfig:
    """The `TrainConfig` of the embedded demo (`python -m hrnet_flax demo`, experiments/configs/demo.py);
    `task="segmentation"`: `segmentation_demo_config()`; `task="pose"`: `pose_demo_config()`.

    hrnet_w18_small, 10 classes, 32x32, float32 (bfloat16 is emulated, slow, on CPUs), global
    batch 64, 3 epochs (66 steps), SGD Nesterov, lr 0.02 with a short warmup then cosine, light
    L2: reaches >= 90% val top-1 (91-95% measured) in a few minutes on two CPU cores, compilation
    included.
    """
    if task == "segmentation":
        return segmentation_demo_config()
    if task == "pose":
        return pose_demo_config()
    if task != "classification":
        raise ValueError(f"no demo for task {task!r}; use classification, segmentation or pose")
    return TrainConfig(
        model="hrnet_w18_small",
        num_classes=10,
        dtype="float32",
        dataset="digits",
        image_size=32,
        eval_image_size=32,
        global_batch_size=64,
        eval_batch_size=128,
        base_lr=0.02,
        base_batch_size=64,
        momentum=0.9,
        nesterov=True,
        weight_decay=5e-5,
        weight_decay_mode="l2",
        epochs=3,
        schedule="cosine",
        warmup_epochs=0.3,
        log_every_steps=20,
        checkpoint_every_steps=100,
        keep_checkpoints=2,
    )


def segmentation_demo_config() -> TrainConfig:
    """The segmentation demo (`python -m hrnet_flax demo --task segmentation`,
    experiments/configs/demo_segmentation.py): hrnetv2_w18_small_seg on 64x64 canvases of scikit-learn
    digits (`hrnet_flax.data.canvases`: 11 classes, a digit's pixels carry its class, the rest is
    background; a pixel's own colour scores under 20% mIoU), float32, 300 steps of 32 canvases,
    Adam with lr 4e-3, a short warmup and a poly schedule: reaches >= 60% val mIoU (77.73%
    measured, 76-87 s for the whole command on two AVX-512 CPU cores, compilation included;
    82.22% without `runtime.FAST_CPU_FLAGS`, whose kernels round differently).
    """
    return TrainConfig(
        task="segmentation",
        model="hrnetv2_w18_small_seg",
        num_classes=11,
        dtype="float32",
        dataset="canvases",
        crop_size=(64, 64),
        scale_range=(1.0, 1.0),
        global_batch_size=32,
        eval_batch_size=64,
        optimizer="adam",
        base_lr=4e-3,
        base_batch_size=32,
        weight_decay=0.0,
        epochs=2,
        train_examples=4800,
        schedule="poly",
        warmup_epochs=0.05,
        log_every_steps=25,
        checkpoint_every_steps=1000,
        keep_checkpoints=2,
    )


def pose_demo_config() -> TrainConfig:
    """The pose demo (`python -m hrnet_flax demo --task pose`, experiments/configs/demo_pose.py):
    pose_hrnet_w18_small on 64x64 crops of stick figures (`hrnet_flax.data.figures`: 17 COCO joints;
    the train set's mean pose scores about 25% PCK@0.1), float32, 480 steps of 16 crops, Adam with
    lr 3e-3, a short warmup and a poly schedule, 16x16 heatmaps with sigma 1 heatmap pixel, flips,
    scale 0.75-1.25 and rotations of N(0, 40) degrees (clipped at 80, on 60% of the crops; no
    half-body crops), flip test: reaches >= 80%
    val PCK@0.1 (87.48% measured, 58 s for the whole command on two AVX-512 CPU cores with a warm
    compilation cache, 66 s with a cold one; 73-85 s while other jobs shared the cores).
    """
    return TrainConfig(
        task="pose",
        model="pose_hrnet_w18_small",
        num_classes=17,
        dtype="float32",
        dataset="figures",
        crop_size=(64, 64),
        global_batch_size=16,
        eval_batch_size=64,
        optimizer="adam",
        base_lr=3e-3,
        base_batch_size=16,
        weight_decay=0.0,
        total_steps=480,
        schedule="poly",
        warmup_epochs=0.1,
        pose_sigma=1.0,
        pose_scale_factor=0.25,
        pose_rotation_factor=40.0,
        pose_half_body_prob=0.0,
        eval_flip=True,
        log_every_steps=80,
        eval_every_steps=480,
        checkpoint_every_steps=480,
        keep_checkpoints=1,
    )
